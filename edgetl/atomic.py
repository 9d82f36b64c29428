"""Writes that a full disk or a killed process cannot leave half done.

Everything is written under a temporary name in the destination's own folder (same file system), then
renamed into place with os.replace, which needs no space and is atomic: the destination holds either the
previous complete result or the new complete one. On failure the temporary file/folder is removed and the
OSError names the destination (a failed write() alone carries no file name).
"""

from __future__ import annotations

import errno
import os
import secrets
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from edgetl.errors import EdgetlError

# "no space": a full disk, a quota, or a file-size limit (EFBIG) all mean the output cannot be written whole
NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
PARTIAL = ".partial"  # marks temporary names (hidden, beside the destination)


class DiskFullError(EdgetlError):
    """Writing an output ran out of space; the message says where."""


def is_no_space(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in NO_SPACE


def disk_full_message(where: object, exc: OSError) -> str:
    return (f"no space left on the disk writing {where} ({exc.strerror or exc}); free some space (or write "
            "elsewhere) and run the command again")


def in_the_way(folder: Path) -> tuple[Path, str] | None:
    """What stops `folder` (and its missing parents) from being made: the first of them, from `folder` up, that
    exists but is no folder, with "a file" or "a broken link"; None when nothing does. Checked before a command
    does any work, so the answer is a clear error rather than an errno at the end."""
    for p in (folder, *folder.parents):
        if p.is_dir():
            return None
        if p.exists() or p.is_symlink():
            return p, "a file" if p.exists() else "a broken link"
    return None


def temp_name(path: Path) -> Path:
    """A hidden name beside `path` that keeps its suffix (Keras and matplotlib pick the format from it)."""
    return path.with_name(f".{path.stem}.{secrets.token_hex(4)}{PARTIAL}{path.suffix}")


@contextmanager
def naming(path: str | os.PathLike[str]) -> Iterator[None]:
    """Name `path` in an OSError raised inside (a failed write() alone does not say which file it was
    writing); out of space, raise DiskFullError instead."""
    try:
        yield
    except OSError as exc:
        if is_no_space(exc):
            raise DiskFullError(disk_full_message(path, exc)) from exc
        if exc.filename is None:
            exc.filename = str(path)
        raise


@contextmanager
def replacing(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path to write; on success it replaces `path`, on failure it is removed."""
    path = Path(path)
    tmp = temp_name(path)
    try:
        with naming(path):
            yield tmp
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: str | os.PathLike[str], data: bytes) -> Path:
    with replacing(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text(path: str | os.PathLike[str], text: str, encoding: str = "utf-8") -> Path:
    with replacing(path) as tmp:
        tmp.write_text(text, encoding=encoding)
    return Path(path)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def stage_dir(beside: Path, name: str) -> Path:
    """A new empty hidden folder in `beside` (created if missing), with the usual permissions."""
    beside.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{name}.", suffix=PARTIAL, dir=beside))
    os.chmod(stage, 0o777 & ~_umask())  # mkdtemp makes it 0700
    return stage


@contextmanager
def replacing_dir(out: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty folder beside `out` to fill; on success it takes `out`'s place (the previous `out`,
    if any, is deleted only then), on failure it is removed and `out` is left as it was."""
    out = Path(out)
    stage = stage_dir(out.parent, out.name)
    try:
        with naming(out):
            yield stage
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    old = None
    if out.exists() or out.is_symlink():
        old = stage_dir(out.parent, out.name + ".old")
        os.replace(out, old)  # a folder onto an empty folder: one rename
    os.replace(stage, out)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
