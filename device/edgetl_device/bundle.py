"""Open, verify and safely extract signed model bundles (the unit deployed to a device).

A bundle is a directory (or a .tar.gz of one) holding `model.tflite` (+ optional
`model_edgetpu.tflite`), `labels.txt`, optional `openset.npz`, `manifest.json` and
`manifest.sig`. The manifest lists the sha256 of every other file; `manifest.sig` is an
Ed25519 signature over the exact bytes of `manifest.json`. So checking the signature
first and the hashes second proves every file came from the holder of the private key.

No TensorFlow here: this runs on the Raspberry Pi.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import shutil
import stat
import tarfile
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edgetl_device.errors import DeviceError

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
SUPPORTED_SCHEMA_VERSIONS = frozenset({1})
MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
MODEL = "model.tflite"
EDGETPU_MODEL = "model_edgetpu.tflite"
LABELS = "labels.txt"
OPENSET = "openset.npz"
# Guards against archive bombs: a MobileNet bundle is a few MB.
MAX_ARCHIVE_MEMBERS = 256
MAX_EXTRACTED_BYTES = 2 * 1024**3
# pax / GNU long-name headers are read whole into memory by tarfile, before any signature can be checked
MAX_HEADER_EXTENSION_BYTES = 1024**2

KeyLike = str | os.PathLike[str] | bytes | Ed25519PublicKey


@dataclass(frozen=True)
class Bundle:
    """A verified bundle on disk."""

    root: Path
    manifest: dict[str, Any]
    model_path: Path
    edgetpu_model_path: Path | None
    labels: list[str]
    openset_path: Path | None = None
    signed_by: str | None = None  # key id of the verifying key; None when opened unsigned
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_version(self) -> str:
        return str(self.manifest.get("model_version", "unknown"))

    @property
    def unknown(self) -> dict[str, Any] | None:
        """The unknown-object detector parameters (from `edgetl openset fit`), if any."""
        return self.manifest.get("unknown")

    def output_index(self, name: str) -> int:
        """TFLite output index of `probabilities` or `embedding` (order is not guaranteed)."""
        for out in self.manifest.get("outputs", []):
            if out.get("name") == name:
                return int(out["index"])
        raise DeviceError(f"bundle {self.root} has no output named {name!r} in its manifest")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def key_id(public_key: Ed25519PublicKey) -> str:
    """Short fingerprint: first 16 hex chars of sha256 over the raw 32-byte key."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_public_key(key: KeyLike) -> Ed25519PublicKey:
    """An Ed25519 public key from a PEM/OpenSSH file, PEM bytes, or a key object."""
    if isinstance(key, Ed25519PublicKey):
        return key
    if isinstance(key, bytes):
        data, where = key, "given bytes"
    else:
        path = Path(key)
        if not path.is_file():
            raise DeviceError(f"public key file not found: {path} (give the .pub written by `edgetl keys generate`)")
        data, where = path.read_bytes(), str(path)
    try:
        if data.lstrip().startswith(b"ssh-ed25519"):
            loaded = serialization.load_ssh_public_key(data.strip())
        else:
            loaded = serialization.load_pem_public_key(data)
    except ValueError as exc:
        if b"PRIVATE KEY" in data:
            raise DeviceError(f"{where} is a private key; devices must only get the public .pub file") from exc
        raise DeviceError(f"{where} is not a PEM public key ({exc}); use a .pub from `edgetl keys generate`") from exc
    if not isinstance(loaded, Ed25519PublicKey):
        raise DeviceError(f"{where} is a {type(loaded).__name__}, bundles are signed with Ed25519 keys")
    return loaded


def load_trusted_keys(keys: KeyLike | Iterable[KeyLike] | None) -> dict[str, Ed25519PublicKey]:
    """Trusted keys by key id; a directory contributes every `*.pub` inside it."""
    if keys is None:
        return {}
    if isinstance(keys, (str, os.PathLike, bytes, Ed25519PublicKey)):
        keys = [keys]
    out: dict[str, Ed25519PublicKey] = {}
    for k in keys:
        if isinstance(k, (str, os.PathLike)) and Path(k).is_dir():
            found = sorted(Path(k).glob("*.pub"))
            if not found:
                raise DeviceError(f"no *.pub keys in trusted key directory {k}")
            for p in found:
                pk = load_public_key(p)
                out[key_id(pk)] = pk
        else:
            pk = load_public_key(k)
            out[key_id(pk)] = pk
    return out


def parse_signature(data: bytes, where: Path) -> tuple[str | None, bytes]:
    """(key id, 64-byte signature) from a manifest.sig (JSON with base64)."""
    try:
        doc = json.loads(data)
        if doc.get("algorithm") != "ed25519":
            raise ValueError(f"algorithm {doc.get('algorithm')!r} is not ed25519")
        sig = base64.b64decode(doc["signature"], validate=True)
        if len(sig) != 64:
            raise ValueError(f"signature is {len(sig)} bytes, Ed25519 signatures are 64")
        return doc.get("key_id"), sig
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise DeviceError(f"bad signature file {where}: {exc}; re-sign with `edgetl bundle sign`") from exc


def verify_signature(root: Path, manifest_bytes: bytes, trusted: dict[str, Ed25519PublicKey]) -> str:
    """The key id that signed manifest.json; DeviceError when unsigned, bad, or untrusted."""
    sig_path = root / SIGNATURE
    if not sig_path.is_file():
        raise DeviceError(
            f"bundle {root} is not signed (no {SIGNATURE}); sign it with `edgetl bundle sign DIR --key KEY`"
        )
    claimed, sig = parse_signature(sig_path.read_bytes(), sig_path)
    # Try the claimed key first, but never trust the claim: a signature only counts if it verifies.
    order = sorted(trusted, key=lambda kid: kid != claimed)
    for kid in order:
        try:
            trusted[kid].verify(sig, manifest_bytes)
            return kid
        except InvalidSignature:
            continue
    if claimed is not None and claimed not in trusted:
        raise DeviceError(
            f"bundle {root} is signed by key {claimed}, which is not trusted here "
            f"(trusted: {', '.join(sorted(trusted)) or 'none'}); install the publisher's .pub"
        )
    raise DeviceError(
        f"bundle {root}: signature does not match manifest.json (manifest modified after signing, "
        "or signed with another key); re-export or re-sign the bundle"
    )


def _safe_relpath(name: str, root: Path) -> PurePosixPath:
    p = PurePosixPath(name)
    if p.is_absolute() or ".." in p.parts or not p.parts or "\\" in name:
        raise DeviceError(f"bundle {root}: manifest lists unsafe path {name!r}; rebuild the bundle")
    return p


def verify_files(root: Path, manifest: dict[str, Any]) -> None:
    """Every listed file exists, is a regular file, and has the listed sha256."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        raise DeviceError(f"bundle {root}: manifest has no `files` hashes; re-export the bundle")
    for name, entry in files.items():
        rel = _safe_relpath(name, root)
        path = root.joinpath(*rel.parts)
        if path.is_symlink() or not path.is_file():
            raise DeviceError(f"bundle {root}: {name} is missing or not a regular file; re-copy the whole bundle")
        want = entry.get("sha256") if isinstance(entry, dict) else entry
        got = sha256_file(path)
        if got != want:
            raise DeviceError(
                f"bundle {root}: {name} was modified (sha256 {got[:12]}… != manifest {str(want)[:12]}…); "
                "re-copy the bundle from the publisher"
            )
    listed = set(files) | {MANIFEST, SIGNATURE}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_symlink():
            raise DeviceError(f"bundle {root}: {rel} is a symbolic link; bundles hold regular files only")
        if path.is_file() and rel not in listed:
            log.warning("bundle %s: %s is not listed in the manifest and is ignored", root, rel)


def read_manifest(root: Path) -> tuple[bytes, dict[str, Any]]:
    path = root / MANIFEST
    if not path.is_file():
        raise DeviceError(f"{root} is not a bundle: no {MANIFEST} (export one with `edgetl export`)")
    data = path.read_bytes()
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise DeviceError(f"bundle {root}: {MANIFEST} is not valid JSON ({exc}); re-export the bundle") from exc
    if not isinstance(manifest, dict):
        raise DeviceError(f"bundle {root}: {MANIFEST} must be a JSON object")
    return data, manifest


def check_schema(root: Path, manifest: dict[str, Any]) -> None:
    version = manifest.get("schema_version")
    if version not in SUPPORTED_SCHEMA_VERSIONS:
        raise DeviceError(
            f"bundle {root}: manifest schema_version {version!r} is not supported by this runtime "
            f"(supports {sorted(SUPPORTED_SCHEMA_VERSIONS)}); update edgetl-device or re-export with a "
            "matching edgetl"
        )


def open_bundle(path: str | os.PathLike[str], trusted_keys: KeyLike | Sequence[KeyLike] | None,
                allow_unsigned: bool = False) -> Bundle:
    """Verify a bundle directory (signature, schema, hashes, labels) and describe it.

    trusted_keys: public keys (paths, a directory of *.pub, PEM bytes or key objects).
    allow_unsigned: development only; hashes are still checked but anyone could have
    written the manifest.
    """
    root = Path(path)
    if root.is_file() and root.name.endswith((".tar.gz", ".tgz")):
        raise DeviceError(f"{root} is an archive; unpack it with extract_bundle(archive, dest, trusted_keys)")
    if not root.is_dir():
        raise DeviceError(f"bundle directory not found: {root}")
    manifest_bytes, manifest = read_manifest(root)
    trusted = load_trusted_keys(trusted_keys)
    signed_by: str | None = None
    if trusted or not allow_unsigned:
        if not trusted:
            raise DeviceError("no trusted keys given: pass the publisher's .pub (or a folder of them)")
        if (root / SIGNATURE).exists() or not allow_unsigned:
            signed_by = verify_signature(root, manifest_bytes, trusted)
    if signed_by is None:
        log.warning("bundle %s opened WITHOUT signature verification (allow_unsigned)", root)
    check_schema(root, manifest)
    verify_files(root, manifest)
    files = manifest["files"]
    unknown = manifest.get("unknown")
    named = unknown.get("file") if isinstance(unknown, dict) else None
    if named and named not in files:  # loaded by the open-set scorer: it must be hashed like every other file
        raise DeviceError(f"bundle {root}: manifest 'unknown' uses {named!r}, which `files` does not list; "
                          "re-export the bundle")
    if MODEL not in files:
        raise DeviceError(f"bundle {root}: manifest does not list {MODEL}; re-export the bundle")
    if LABELS not in files:
        raise DeviceError(f"bundle {root}: manifest does not list {LABELS}; re-export the bundle")
    labels = [ln.strip() for ln in (root / LABELS).read_text(encoding="utf-8").splitlines() if ln.strip()]
    classes = manifest.get("classes")
    if classes is not None and list(classes) != labels:
        raise DeviceError(f"bundle {root}: labels.txt does not match manifest classes; re-export the bundle")
    return Bundle(
        root=root.resolve(),
        manifest=manifest,
        model_path=(root / MODEL).resolve(),
        edgetpu_model_path=(root / EDGETPU_MODEL).resolve() if EDGETPU_MODEL in files else None,
        labels=labels,
        openset_path=(root / OPENSET).resolve() if OPENSET in files else None,
        signed_by=signed_by,
    )


class _GuardedTarInfo(tarfile.TarInfo):
    """Refuses a header extension (pax, GNU long name/link) too big to be real before tarfile buffers it."""

    def _proc_member(self, tarfile_: tarfile.TarFile) -> tarfile.TarInfo:
        extension = (tarfile.XHDTYPE, tarfile.XGLTYPE, tarfile.SOLARIS_XHDTYPE, tarfile.GNUTYPE_LONGNAME,
                     tarfile.GNUTYPE_LONGLINK)
        if self.type in extension and self.size > MAX_HEADER_EXTENSION_BYTES:
            raise DeviceError(f"{tarfile_.name}: a {self.size}-byte tar header extension (over "
                              f"{MAX_HEADER_EXTENSION_BYTES}); not a bundle, refusing")
        return super()._proc_member(tarfile_)


def _check_member(member: tarfile.TarInfo, archive: Path) -> PurePosixPath | None:
    """The member's safe relative path, None for the archive's `.` entry; DeviceError otherwise."""
    name = member.name
    p = PurePosixPath(name)
    if p.is_absolute() or name.startswith(("/", "\\")) or "\\" in name or ":" in (p.parts[0] if p.parts else ""):
        raise DeviceError(f"{archive}: member {name!r} has an absolute path; refusing to extract")
    if ".." in p.parts:
        raise DeviceError(f"{archive}: member {name!r} climbs out with '..'; refusing to extract")
    if member.issym() or member.islnk():
        raise DeviceError(f"{archive}: member {name!r} is a link; bundles hold regular files only")
    if not (member.isfile() or member.isdir()):
        raise DeviceError(f"{archive}: member {name!r} is a device/fifo/special file; refusing to extract")
    parts = [q for q in p.parts if q != "."]
    return PurePosixPath(*parts) if parts else None


def _mkdir(path: Path, member: tarfile.TarInfo, archive: Path) -> None:
    """mkdir -p for a member, refusing clearly when an earlier member left a file in the way."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:  # e.g. `labels.txt` then `labels.txt/x`: no raw OSError
        raise DeviceError(f"{archive}: member {member.name!r} clashes with an earlier member; refusing") from exc


def _bundle_root(staging: Path) -> Path:
    """Archives may hold the files at top level or inside one folder."""
    if (staging / MANIFEST).is_file():
        return staging
    entries = list(staging.iterdir())
    if len(entries) == 1 and entries[0].is_dir() and (entries[0] / MANIFEST).is_file():
        return entries[0]
    raise DeviceError(f"archive has no {MANIFEST} at its top level (or in a single top folder); not a bundle")


def extract_bundle(archive: str | os.PathLike[str], dest: str | os.PathLike[str],
                   trusted_keys: KeyLike | Sequence[KeyLike] | None, allow_unsigned: bool = False) -> Bundle:
    """Safely unpack a bundle .tar.gz into `dest` (must not exist or be empty), then open_bundle it.

    Unpacks into a private staging folder next to `dest`, writing each regular file
    ourselves (no tarfile.extractall), verifies, and only then renames it to `dest`. On any
    failure the staging folder is removed and `dest` is untouched.
    """
    archive, dest = Path(archive), Path(dest)
    if not archive.is_file():
        raise DeviceError(f"bundle archive not found: {archive}")
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise DeviceError(f"destination {dest} already exists and is not empty; choose a new folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", suffix=".partial", dir=dest.parent))
    try:
        try:
            tar = tarfile.open(archive, "r:*", tarinfo=_GuardedTarInfo)
        except (tarfile.TarError, OSError, EOFError) as exc:  # EOFError: gzip cut short in its header
            raise DeviceError(f"{archive} is not a readable tar archive ({exc}); re-download it") from exc
        with tar:
            total = 0
            members: list[tarfile.TarInfo] = []
            declared = 0
            try:
                # Header by header, with the limits checked as each arrives: a decompression bomb is refused
                # after at most MAX_EXTRACTED_BYTES of decompression, not after all of it (getmembers).
                for member in tar:
                    members.append(member)
                    declared += member.size if member.isfile() else 0
                    if len(members) > MAX_ARCHIVE_MEMBERS:
                        raise DeviceError(f"{archive} has more than {MAX_ARCHIVE_MEMBERS} members; a bundle has "
                                          "a handful. Refusing.")
                    if declared > MAX_EXTRACTED_BYTES:
                        raise DeviceError(f"{archive} unpacks to more than {MAX_EXTRACTED_BYTES} bytes; refusing")
            except (tarfile.TarError, OSError, EOFError) as exc:
                raise DeviceError(f"{archive} is truncated or corrupt ({exc}); re-download it") from exc
            checked = [(m, _check_member(m, archive)) for m in members]  # vet everything before writing
            for member, rel in checked:
                if rel is None:
                    continue
                target = staging.joinpath(*rel.parts)
                if not target.resolve().is_relative_to(staging.resolve()):
                    raise DeviceError(f"{archive}: member {member.name!r} escapes the target; refusing")
                if member.isdir():
                    _mkdir(target, member, archive)
                    continue
                total += member.size
                if total > MAX_EXTRACTED_BYTES:
                    raise DeviceError(f"{archive} unpacks to more than {MAX_EXTRACTED_BYTES} bytes; refusing")
                _mkdir(target.parent, member, archive)
                if target.exists():
                    raise DeviceError(f"{archive}: member {member.name!r} appears twice; refusing")
                src = tar.extractfile(member)
                if src is None:
                    raise DeviceError(f"{archive}: cannot read member {member.name!r}")
                with src, open(target, "xb") as out:
                    shutil.copyfileobj(src, out)
                os.chmod(target, stat.S_IRUSR | stat.S_IWUSR | stat.S_IRGRP | stat.S_IROTH)
        root = _bundle_root(staging)
        open_bundle(root, trusted_keys, allow_unsigned=allow_unsigned)
        if dest.exists():
            dest.rmdir()
        os.replace(root, dest)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return open_bundle(dest, trusted_keys, allow_unsigned=allow_unsigned)
