"""Signed bundles: a good one opens; every kind of tampering is rejected with a clear error."""

from __future__ import annotations

import gzip
import io
import json
import tarfile
from pathlib import Path

import pytest

from edgetl.bundle import generate_keys, pack_bundle, refresh_manifest, sign_bundle, write_manifest
from edgetl.errors import EdgetlError
from edgetl_device.bundle import extract_bundle, key_id, load_public_key, open_bundle
from edgetl_device.errors import DeviceError


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    good = generate_keys(d / "publisher")
    other = generate_keys(d / "stranger")
    return {"priv": good[0], "pub": good[1], "other_priv": other[0], "other_pub": other[1]}


def make_bundle(root: Path, keys, sign: bool = True, **extra) -> Path:
    root.mkdir(parents=True)
    # open_bundle checks bytes, not model semantics, so any bytes stand in for the model here.
    (root / "model.tflite").write_bytes(b"TFL3" + bytes(range(256)) * 8)
    (root / "labels.txt").write_text("ants\nbees\n")
    manifest = {"model_version": "1.0.0", "classes": ["ants", "bees"],
                "outputs": [{"name": "probabilities", "index": 1}, {"name": "embedding", "index": 0}], **extra}
    write_manifest(root, manifest)
    if sign:
        sign_bundle(root, keys["priv"])
    return root


def test_signed_bundle_opens_and_describes_itself(tmp_path, keys):
    b = open_bundle(make_bundle(tmp_path / "b", keys), [keys["pub"]])
    assert b.labels == ["ants", "bees"]
    assert b.model_path.name == "model.tflite" and b.edgetpu_model_path is None
    assert b.output_index("probabilities") == 1 and b.output_index("embedding") == 0
    assert b.signed_by is not None and b.model_version == "1.0.0"
    # a directory of trusted keys works too
    assert open_bundle(tmp_path / "b", keys["pub"].parent).signed_by == b.signed_by


def test_modified_file_is_rejected(tmp_path, keys):
    root = make_bundle(tmp_path / "b", keys)
    data = bytearray((root / "model.tflite").read_bytes())
    data[100] ^= 0xFF
    (root / "model.tflite").write_bytes(bytes(data))
    with pytest.raises(DeviceError, match="model.tflite was modified"):
        open_bundle(root, [keys["pub"]])


def test_missing_listed_file_is_rejected(tmp_path, keys):
    root = make_bundle(tmp_path / "b", keys)
    (root / "labels.txt").unlink()
    with pytest.raises(DeviceError, match="labels.txt is missing"):
        open_bundle(root, [keys["pub"]])


def test_missing_signature_is_rejected(tmp_path, keys):
    root = make_bundle(tmp_path / "b", keys, sign=False)
    with pytest.raises(DeviceError, match="not signed"):
        open_bundle(root, [keys["pub"]])
    # explicit development opt-out still checks hashes
    assert open_bundle(root, None, allow_unsigned=True).signed_by is None


def test_garbage_signature_is_rejected(tmp_path, keys):
    root = make_bundle(tmp_path / "b", keys)
    (root / "manifest.sig").write_text("not json at all")
    with pytest.raises(DeviceError, match="bad signature file"):
        open_bundle(root, [keys["pub"]])


def test_flipped_signature_bit_is_rejected(tmp_path, keys):
    import base64

    root = make_bundle(tmp_path / "b", keys)
    doc = json.loads((root / "manifest.sig").read_text())
    sig = bytearray(base64.b64decode(doc["signature"]))
    sig[5] ^= 1
    doc["signature"] = base64.b64encode(bytes(sig)).decode()
    (root / "manifest.sig").write_text(json.dumps(doc))
    with pytest.raises(DeviceError, match="signature does not match"):
        open_bundle(root, [keys["pub"]])


def test_manifest_edited_after_signing_is_rejected(tmp_path, keys):
    root = make_bundle(tmp_path / "b", keys)
    m = json.loads((root / "manifest.json").read_text())
    m["unknown"] = {"threshold": 0.0}  # e.g. someone disabling the unknown detector
    (root / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(DeviceError, match="signature does not match"):
        open_bundle(root, [keys["pub"]])


def test_untrusted_key_is_rejected(tmp_path, keys):
    root = make_bundle(tmp_path / "b", keys)
    sign_bundle(root, keys["other_priv"])
    with pytest.raises(DeviceError, match="not trusted"):
        open_bundle(root, [keys["pub"]])
    with pytest.raises(DeviceError, match="no trusted keys"):
        open_bundle(root, [])


def test_unknown_schema_version_is_rejected_even_when_signed(tmp_path, keys):
    import base64

    from edgetl.bundle import load_private_key

    # a bundle from a future edgetl: our own signer refuses, so sign the bytes directly
    root = make_bundle(tmp_path / "b", keys, sign=False, schema_version=99)
    key = load_private_key(keys["priv"])
    sig = base64.b64encode(key.sign((root / "manifest.json").read_bytes())).decode()
    (root / "manifest.sig").write_text(json.dumps({"algorithm": "ed25519", "signature": sig}))
    with pytest.raises(DeviceError, match="schema_version 99 is not supported"):
        open_bundle(root, [keys["pub"]])


def test_private_key_is_not_accepted_as_trusted_key(keys):
    with pytest.raises(DeviceError, match="private key"):
        load_public_key(keys["priv"])


def test_refresh_manifest_adds_files_and_drops_stale_signature(tmp_path, keys):
    root = make_bundle(tmp_path / "b", keys)
    (root / "openset.npz").write_bytes(b"scorer params")
    refresh_manifest(root, unknown={"scorer": "knn", "threshold": 0.5})
    assert not (root / "manifest.sig").exists()
    sign_bundle(root, keys["priv"])
    b = open_bundle(root, [keys["pub"]])
    assert b.openset_path is not None and b.unknown == {"scorer": "knn", "threshold": 0.5}


def test_sign_refuses_files_changed_since_manifest(tmp_path, keys):
    root = make_bundle(tmp_path / "b", keys, sign=False)
    (root / "labels.txt").write_text("ants\nwasps\n")
    with pytest.raises(EdgetlError, match="labels.txt"):
        sign_bundle(root, keys["priv"])


def test_pack_then_extract_round_trip(tmp_path, keys):
    archive = pack_bundle(make_bundle(tmp_path / "b", keys), tmp_path / "b.tar.gz")
    b = extract_bundle(archive, tmp_path / "dest", [keys["pub"]])
    assert b.root == (tmp_path / "dest").resolve() and b.labels == ["ants", "bees"]
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".partial")] == []


def _archive_with(tmp_path: Path, keys, add) -> Path:
    """A real signed bundle archive plus whatever `add(tar)` puts in."""
    src = make_bundle(tmp_path / "src", keys)
    out = tmp_path / "evil.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for p in sorted(src.iterdir()):
            tar.add(p, arcname=p.name)
        add(tar)
    return out


def _file(name: str, data: bytes = b"pwned") -> tuple[tarfile.TarInfo, io.BytesIO]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, io.BytesIO(data)


def _link(name: str, target: str, kind: bytes) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


def _device(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
    return info


EVIL = {
    "dotdot": (lambda t: t.addfile(*_file("../escaped.txt")), "'\\.\\.'"),
    "nested_dotdot": (lambda t: t.addfile(*_file("sub/../../escaped.txt")), "'\\.\\.'"),
    "absolute": (lambda t: t.addfile(*_file("/tmp/edgetl-escaped.txt")), "absolute path"),
    "symlink": (lambda t: t.addfile(_link("evil_link", "/etc/passwd", tarfile.SYMTYPE)), "is a link"),
    "hardlink": (lambda t: t.addfile(_link("evil_hard", "/etc/passwd", tarfile.LNKTYPE)), "is a link"),
    "device": (lambda t: t.addfile(_device("null")), "special file"),
}


@pytest.mark.parametrize("case", sorted(EVIL))
def test_malicious_archive_members_are_rejected_and_nothing_is_written(tmp_path, keys, case):
    add, message = EVIL[case]
    archive = _archive_with(tmp_path, keys, add)
    dest = tmp_path / "deploy" / "bundle"
    with pytest.raises(DeviceError, match=message):
        extract_bundle(archive, dest, [keys["pub"]])
    assert not dest.exists()
    assert list((tmp_path / "deploy").iterdir()) == []  # staging cleaned up
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/edgetl-escaped.txt").exists()


def test_tampered_archive_is_rejected_and_dest_untouched(tmp_path, keys):
    src = make_bundle(tmp_path / "src", keys)
    (src / "labels.txt").write_text("ants\nwasps\n")  # tampered after signing
    out = tmp_path / "t.tar.gz"
    with tarfile.open(out, "w:gz") as tar:
        for p in sorted(src.iterdir()):
            tar.add(p, arcname=p.name)
    with pytest.raises(DeviceError, match="labels.txt was modified"):
        extract_bundle(out, tmp_path / "dest", [keys["pub"]])
    assert not (tmp_path / "dest").exists()


def test_extract_refuses_non_empty_destination(tmp_path, keys):
    archive = pack_bundle(make_bundle(tmp_path / "b", keys), tmp_path / "b.tar.gz")
    (tmp_path / "dest").mkdir()
    (tmp_path / "dest" / "keep.txt").write_text("user data")
    with pytest.raises(DeviceError, match="not empty"):
        extract_bundle(archive, tmp_path / "dest", [keys["pub"]])
    assert (tmp_path / "dest" / "keep.txt").read_text() == "user data"


def test_corrupt_archive_is_rejected(tmp_path, keys):
    archive = pack_bundle(make_bundle(tmp_path / "b", keys), tmp_path / "b.tar.gz")
    archive.write_bytes(archive.read_bytes()[: 200])
    with pytest.raises(DeviceError, match="corrupt|not a readable"):
        extract_bundle(archive, tmp_path / "dest", [keys["pub"]])
    assert not (tmp_path / "dest").exists()


@pytest.mark.parametrize("damage", ["cut_to_100_bytes", "gzip_flag_byte_flipped"])
def test_badly_damaged_archive_is_a_clear_error_not_a_raw_eoferror(tmp_path, keys, damage):
    # an interrupted download of a few bytes, or a damaged gzip header, must read as a bad archive
    archive = pack_bundle(make_bundle(tmp_path / "b", keys), tmp_path / "b.tar.gz")
    data = bytearray(archive.read_bytes())
    if damage == "cut_to_100_bytes":
        data = data[:100]
    else:
        data[3] ^= 0xFF  # FLG: announces header fields that are not there
    archive.write_bytes(bytes(data))
    dest = tmp_path / "deploy" / "bundle"
    with pytest.raises(DeviceError, match="corrupt|not a readable"):
        extract_bundle(archive, dest, [keys["pub"]])
    assert list((tmp_path / "deploy").iterdir()) == []


def _dir(name: str) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode = tarfile.DIRTYPE, 0o755
    return info


@pytest.mark.parametrize("add", [
    lambda t: t.addfile(*_file("model.tflite", b"evil")),  # a later member overwriting a verified one
    lambda t: t.addfile(*_file("./model.tflite", b"evil")),
    lambda t: t.addfile(_dir("labels.txt")),  # a folder where a file already is
    lambda t: t.addfile(*_file("labels.txt/x")),  # a file inside something that is a file
    lambda t: t.addfile(*_file("labels.txt/sub/x")),
], ids=["same_name", "dot_slash_name", "dir_over_file", "file_under_file", "deep_file_under_file"])
def test_members_clashing_with_earlier_members_are_rejected_cleanly(tmp_path, keys, add):
    archive = _archive_with(tmp_path, keys, add)
    dest = tmp_path / "deploy" / "bundle"
    with pytest.raises(DeviceError, match="appears twice|clashes"):
        extract_bundle(archive, dest, [keys["pub"]])
    assert list((tmp_path / "deploy").iterdir()) == []


def test_fifo_member_is_rejected(tmp_path, keys):
    fifo = tarfile.TarInfo("pipe")
    fifo.type = tarfile.FIFOTYPE
    archive = _archive_with(tmp_path, keys, lambda t: t.addfile(fifo))
    with pytest.raises(DeviceError, match="special file"):
        extract_bundle(archive, tmp_path / "deploy" / "bundle", [keys["pub"]])
    assert list((tmp_path / "deploy").iterdir()) == []


def test_manifest_listing_a_path_outside_the_bundle_is_rejected(tmp_path, keys):
    import base64

    from edgetl.bundle import load_private_key

    root = make_bundle(tmp_path / "b", keys, sign=False)
    (tmp_path / "outside.txt").write_text("secret")
    m = json.loads((root / "manifest.json").read_text())
    m["files"]["../outside.txt"] = {"sha256": "0" * 64}
    (root / "manifest.json").write_text(json.dumps(m))
    key = load_private_key(keys["priv"])
    sig = base64.b64encode(key.sign((root / "manifest.json").read_bytes())).decode()
    (root / "manifest.sig").write_text(json.dumps({"algorithm": "ed25519", "signature": sig}))
    with pytest.raises(DeviceError, match="unsafe path"):
        open_bundle(root, [keys["pub"]])


def test_oversized_member_is_refused_from_its_header_before_its_data_is_read(tmp_path, keys):
    # A decompression bomb announces its size in the header: refuse there, not after decompressing it all.
    # Here the header claims 3 GiB and only 4 kB follow, so reading on would end in "truncated" instead.
    info = tarfile.TarInfo("model.tflite")
    info.size = 3 * 1024**3
    archive = tmp_path / "bomb.tar.gz"
    archive.write_bytes(gzip.compress(info.tobuf(format=tarfile.GNU_FORMAT) + b"\0" * 4096))
    with pytest.raises(DeviceError, match="unpacks to more than"):
        extract_bundle(archive, tmp_path / "deploy" / "bundle", [keys["pub"]])
    assert list((tmp_path / "deploy").iterdir()) == []


def test_archive_with_too_many_members_is_refused(tmp_path, keys):
    archive = tmp_path / "many.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for i in range(300):
            tar.addfile(*_file(f"f{i:03d}.txt", b"x"))
    with pytest.raises(DeviceError, match="more than 256 members"):
        extract_bundle(archive, tmp_path / "deploy" / "bundle", [keys["pub"]])
    assert list((tmp_path / "deploy").iterdir()) == []


def test_inspect_reads_only_a_top_level_manifest(tmp_path, keys):
    from edgetl.bundle import inspect_bundle

    archive = pack_bundle(make_bundle(tmp_path / "b", keys), tmp_path / "b.tar.gz")
    assert inspect_bundle(archive)["signed"] is True
    # the archive names its signing key as the folder does (`bundle inspect` printed "key None")
    expected = key_id(load_public_key(keys["pub"]))
    assert inspect_bundle(archive)["key_id"] == inspect_bundle(tmp_path / "b")["key_id"] == expected
    outside = tmp_path / "outside.tar.gz"
    with tarfile.open(outside, "w:gz") as tar:
        tar.addfile(*_file("../manifest.json", json.dumps({"model_version": "evil"}).encode()))
    with pytest.raises(EdgetlError, match="no top-level manifest.json"):
        inspect_bundle(outside)
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[:100])
    with pytest.raises(EdgetlError, match="cannot read"):
        inspect_bundle(cut)


def test_keys_generate_overwrite_leaves_the_private_key_owner_only(tmp_path):
    old = tmp_path / "k.key"
    old.write_text("old key")
    old.chmod(0o644)  # e.g. copied in with a permissive umask
    with pytest.raises(EdgetlError, match="refusing to overwrite"):
        generate_keys(tmp_path / "k")
    priv, _ = generate_keys(tmp_path / "k", overwrite=True)
    assert priv.stat().st_mode & 0o777 == 0o600
