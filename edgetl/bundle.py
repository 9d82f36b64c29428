"""Host side of model bundles: keys, manifest hashes, Ed25519 signing, packing, inspection.

The device side (verification, safe extraction) is `edgetl_device.bundle`; this module
reuses its constants and hashing so both ends agree byte for byte.
"""

from __future__ import annotations

import base64
import io
import json
import logging
import os
import tarfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edgetl.atomic import replacing, write_text
from edgetl.errors import EdgetlError
from edgetl_device import bundle as device_bundle
from edgetl_device.bundle import MANIFEST, SCHEMA_VERSION, SIGNATURE, key_id, sha256_file
from edgetl_device.errors import DeviceError

log = logging.getLogger(__name__)


def utc_now() -> str:
    return datetime.now(timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- keys
def generate_keys(out: str | os.PathLike[str], overwrite: bool = False) -> tuple[Path, Path]:
    """Write an Ed25519 key pair: OUT.key (private, PKCS8 PEM, mode 600) and OUT.pub (PEM)."""
    out = Path(out)
    base = out.with_suffix("") if out.suffix in (".key", ".pub") else out
    priv_path, pub_path = base.with_name(base.name + ".key"), base.with_name(base.name + ".pub")
    for p in (priv_path, pub_path):
        if p.exists() and not overwrite:
            raise EdgetlError(f"{p} already exists; refusing to overwrite a key (choose another name)")
    base.parent.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    priv = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM,
                                        serialization.PublicFormat.SubjectPublicKeyInfo)
    # Both halves are written whole under temporary names before either is renamed into place: a full disk
    # leaves the previous pair, never half a key or a new private key beside the old public one.
    with replacing(priv_path) as tmp_priv:
        fd = os.open(tmp_priv, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # 0600 from its first byte
        with os.fdopen(fd, "wb") as f:
            os.fchmod(fd, 0o600)  # exactly 0600 whatever the umask
            f.write(priv)
        with replacing(pub_path) as tmp_pub:
            tmp_pub.write_bytes(pub)
    log.info("key %s: private %s, public %s", key_id(key.public_key()), priv_path, pub_path)
    return priv_path, pub_path


def load_private_key(path: str | os.PathLike[str]) -> Ed25519PrivateKey:
    path = Path(path)
    if not path.is_file():
        raise EdgetlError(f"private key not found: {path} (make one with `edgetl keys generate NAME`)")
    data = path.read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as exc:
        raise EdgetlError(f"{path} is not an unencrypted PEM private key ({exc})") from exc
    if not isinstance(key, Ed25519PrivateKey):
        raise EdgetlError(f"{path} is a {type(key).__name__}; bundles are signed with Ed25519 keys")
    return key


# ---------------------------------------------------------------- manifest
def bundle_files(bundle_dir: Path) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file except the manifest and its signature."""
    files: dict[str, dict[str, Any]] = {}
    for path in sorted(bundle_dir.rglob("*")):
        rel = path.relative_to(bundle_dir).as_posix()
        if path.is_symlink():
            raise EdgetlError(f"{path} is a symbolic link; a bundle must hold regular files only")
        if path.is_file() and rel not in (MANIFEST, SIGNATURE):
            files[rel] = {"sha256": sha256_file(path), "size": path.stat().st_size}
    return files


def read_manifest(bundle_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(bundle_dir) / MANIFEST
    if not path.is_file():
        raise EdgetlError(f"{bundle_dir} is not a bundle: no {MANIFEST} (run `edgetl export` first)")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise EdgetlError(f"{path} is not valid JSON ({exc})") from exc


def write_manifest(bundle_dir: str | os.PathLike[str], manifest: dict[str, Any]) -> dict[str, Any]:
    """Hash every file into `manifest["files"]`, write manifest.json, drop a stale signature."""
    bundle_dir = Path(bundle_dir)
    manifest = dict(manifest)
    manifest.setdefault("schema_version", SCHEMA_VERSION)
    manifest.setdefault("created", utc_now())
    manifest["files"] = bundle_files(bundle_dir)
    # all or nothing: a full disk leaves the previous manifest (and its signature) in place
    write_text(bundle_dir / MANIFEST, json.dumps(manifest, indent=2, sort_keys=False) + "\n")
    sig = bundle_dir / SIGNATURE
    if sig.exists():
        sig.unlink()
        log.info("removed stale %s in %s; sign the bundle again", SIGNATURE, bundle_dir)
    return manifest


def refresh_manifest(bundle_dir: str | os.PathLike[str], **updates: Any) -> dict[str, Any]:
    """Apply top-level `updates` to an existing manifest, re-hash all files, drop the old signature.

    For areas that add files to an exported bundle (e.g. `openset.npz` + `unknown=...`).
    A value of None removes the key.
    """
    manifest = read_manifest(bundle_dir)
    for k, v in updates.items():
        if v is None:
            manifest.pop(k, None)
        else:
            manifest[k] = v
    return write_manifest(bundle_dir, manifest)


def stale_files(bundle_dir: Path, manifest: dict[str, Any]) -> list[str]:
    """Names whose content differs from the manifest (added, removed or changed)."""
    now = bundle_files(bundle_dir)
    listed = manifest.get("files", {})
    names = set(now) | set(listed)
    return sorted(n for n in names if (now.get(n) or {}).get("sha256") != (listed.get(n) or {}).get("sha256"))


# ---------------------------------------------------------------- sign / verify
def sign_bundle(bundle_dir: str | os.PathLike[str], private_key: str | os.PathLike[str] | Ed25519PrivateKey,
                refresh: bool = False) -> Path:
    """Write manifest.sig over manifest.json. Refuses when files no longer match the manifest
    (unless refresh=True, which re-hashes first) so a signature never blesses unexpected edits."""
    bundle_dir = Path(bundle_dir)
    key = private_key if isinstance(private_key, Ed25519PrivateKey) else load_private_key(private_key)
    manifest = read_manifest(bundle_dir)
    if manifest.get("schema_version") not in device_bundle.SUPPORTED_SCHEMA_VERSIONS:
        raise EdgetlError(f"{bundle_dir}: unknown manifest schema_version {manifest.get('schema_version')!r}")
    if refresh:
        write_manifest(bundle_dir, manifest)
    else:
        stale = stale_files(bundle_dir, manifest)
        if stale:
            raise EdgetlError(
                f"{bundle_dir}: files changed since the manifest was written ({', '.join(stale)}); "
                "check them, then sign with --refresh to re-hash"
            )
    data = (bundle_dir / MANIFEST).read_bytes()
    doc = {"algorithm": "ed25519", "key_id": key_id(key.public_key()),
           "signature": base64.b64encode(key.sign(data)).decode("ascii"), "signed": utc_now()}
    sig_path = bundle_dir / SIGNATURE
    write_text(sig_path, json.dumps(doc, indent=2) + "\n")
    log.info("signed %s with key %s", bundle_dir, doc["key_id"])
    return sig_path


def verify(path: str | os.PathLike[str], trusted_keys: Any, extract_to: str | os.PathLike[str] | None = None,
           allow_unsigned: bool = False) -> device_bundle.Bundle:
    """Verify a bundle directory or .tar.gz with the device's own code (archives unpack to a temp dir)."""
    import tempfile

    path = Path(path)
    try:
        if path.is_file():
            if extract_to is not None:
                return device_bundle.extract_bundle(path, extract_to, trusted_keys, allow_unsigned)
            with tempfile.TemporaryDirectory(prefix="edgetl-verify-") as tmp:
                b = device_bundle.extract_bundle(path, Path(tmp) / "bundle", trusted_keys, allow_unsigned)
                return device_bundle.Bundle(root=path, manifest=b.manifest, model_path=b.model_path,
                                            edgetpu_model_path=b.edgetpu_model_path, labels=b.labels,
                                            openset_path=b.openset_path, signed_by=b.signed_by)
        return device_bundle.open_bundle(path, trusted_keys, allow_unsigned)
    except DeviceError as exc:
        raise EdgetlError(str(exc)) from exc


# ---------------------------------------------------------------- pack / inspect
def pack_bundle(bundle_dir: str | os.PathLike[str], out: str | os.PathLike[str]) -> Path:
    """A reproducible .tar.gz of the bundle (files at top level, sorted, fixed mtime/owner)."""
    bundle_dir, out = Path(bundle_dir), Path(out)
    if out.is_dir():
        raise EdgetlError(f"--out {out} is a folder; give the archive's file name, e.g. "
                          f"{out / (bundle_dir.resolve().name + '.tar.gz')}")
    if bundle_dir.resolve() in out.resolve().parents:  # a later `sign --refresh` would hash the archive in
        raise EdgetlError(f"--out {out} is inside the bundle {bundle_dir}; write the archive next to it")
    manifest = read_manifest(bundle_dir)
    stale = stale_files(bundle_dir, manifest)
    if stale:
        raise EdgetlError(f"{bundle_dir}: files differ from the manifest ({', '.join(stale)}); "
                          "run `edgetl bundle sign --refresh` first")
    if not (bundle_dir / SIGNATURE).is_file():
        log.warning("packing an UNSIGNED bundle %s; devices will reject it", bundle_dir)
    names = sorted(manifest["files"]) + [MANIFEST] + ([SIGNATURE] if (bundle_dir / SIGNATURE).is_file() else [])
    out.parent.mkdir(parents=True, exist_ok=True)
    # a temporary name, renamed when complete: a full disk leaves the previous archive (and no .partial)
    with replacing(out) as tmp, tarfile.open(tmp, "w:gz", format=tarfile.PAX_FORMAT) as tar:
        for name in names:
            data = (bundle_dir / name).read_bytes()
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            tar.addfile(info, io.BytesIO(data))
    return out


def inspect_bundle(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The manifest (directory or archive) plus signature/staleness facts; verifies nothing cryptographic."""
    path = Path(path)
    if path.is_file():
        try:
            with tarfile.open(path, "r:*") as tar:
                # removeprefix, not lstrip: lstrip("./") would read "../manifest.json" as the manifest
                names = {m.name.removeprefix("./"): m for m in tar.getmembers()}
                member = names.get(MANIFEST)
                if member is None or not member.isfile():
                    raise EdgetlError(f"{path} has no top-level {MANIFEST}; not a bundle")
                manifest = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                sig_member = names.get(SIGNATURE)
                signed = sig_member is not None
                key = None
                if signed:
                    try:
                        key = json.loads(tar.extractfile(sig_member).read()).get("key_id")  # type: ignore[union-attr]
                    except (ValueError, AttributeError):
                        key = "unreadable"
        except (tarfile.TarError, OSError, ValueError, EOFError) as exc:  # EOFError: a gzip cut short
            raise EdgetlError(f"cannot read {path}: {exc}") from exc
        return {"manifest": manifest, "signed": signed, "key_id": key, "stale_files": []}
    manifest = read_manifest(path)
    sig = path / SIGNATURE
    key = None
    if sig.is_file():
        try:
            key = json.loads(sig.read_text()).get("key_id")
        except ValueError:
            key = "unreadable"
    return {"manifest": manifest, "signed": sig.is_file(), "key_id": key, "stale_files": stale_files(path, manifest)}
