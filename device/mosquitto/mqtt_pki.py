"""Make the broker's TLS material and password file for a small fleet (Python `cryptography` only).

    python device/mosquitto/mqtt_pki.py certs out/ --server-name mqtt.example.org --client cam1 --client cam2
    python device/mosquitto/mqtt_pki.py passwd out/passwd cam1 cam2 fleet    # prompts for each password

Writes ca.pem/ca.key (keep ca.key offline), server.pem/server.key for Mosquitto, and
<client>.pem/<client>.key per device (CN = device id, used as the MQTT user name with
`use_identity_as_username true`). The password file uses Mosquitto 2's PBKDF2-SHA512
format, the same as `mosquitto_passwd` writes.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import getpass
import hashlib
import ipaddress
import os
import secrets
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

PBKDF2_ITERATIONS = 101  # mosquitto_passwd's default for the $7$ (PBKDF2-SHA512) format


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    data = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _cert(subject: str, key, issuer_name: x509.Name | None, issuer_key, days: int, ca: bool = False,
          server_names: list[str] | None = None, client: bool = False) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    now = dt.datetime.now(dt.timezone.utc)
    builder = (x509.CertificateBuilder().subject_name(name).issuer_name(issuer_name or name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server_names:
        alt: list[x509.GeneralName] = []
        for n in server_names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(n)))
            except ValueError:
                alt.append(x509.DNSName(n))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    if client:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_certs(out: str | os.PathLike[str], clients: list[str], server_names: list[str] | None = None,
               days: int = 825) -> dict[str, Path]:
    """CA, server and per-client certificates (EC P-256) under `out`; returns the paths by name."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    server_names = server_names or ["localhost", "127.0.0.1"]
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _cert("edgetl fleet CA", ca_key, None, ca_key, days * 2, ca=True)
    paths = {"ca": out / "ca.pem", "ca_key": out / "ca.key"}
    paths["ca"].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    _write_key(ca_key, paths["ca_key"])
    for name, kwargs in [("server", {"server_names": server_names})] + [(c, {"client": True}) for c in clients]:
        key = ec.generate_private_key(ec.SECP256R1())
        cert = _cert(server_names[0] if name == "server" else name, key, ca.subject, ca_key, days, **kwargs)
        paths[name] = out / f"{name}.pem"
        paths[f"{name}_key"] = out / f"{name}.key"
        paths[name].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, paths[f"{name}_key"])
    return paths


def password_line(user: str, password: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    """One `user:$7$iterations$salt$hash` line of a Mosquitto 2 password file."""
    if ":" in user or not user:
        raise ValueError(f"user name {user!r} must be non-empty and contain no ':'")
    salt = secrets.token_bytes(12)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations, 64)
    return f"{user}:$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def write_password_file(path: str | os.PathLike[str], users: dict[str, str]) -> Path:
    path = Path(path)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write("".join(password_line(u, p) + "\n" for u, p in users.items()))
    return path


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("certs", help="CA, server and client certificates")
    c.add_argument("out", type=Path)
    c.add_argument("--server-name", action="append", help="broker DNS name or IP (repeat)")
    c.add_argument("--client", action="append", default=[], help="device id (repeat)")
    w = sub.add_parser("passwd", help="password file (prompts for each user's password)")
    w.add_argument("path", type=Path)
    w.add_argument("users", nargs="+")
    args = p.parse_args()
    if args.cmd == "certs":
        for name, path in make_certs(args.out, args.client, args.server_name).items():
            print(f"{name}: {path}")
    else:
        users = {u: getpass.getpass(f"password for {u}: ") for u in args.users}
        print(write_password_file(args.path, users))


if __name__ == "__main__":
    main()
