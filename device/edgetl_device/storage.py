"""Clip retention (by age, then by total size, oldest first) and the low-disk guard."""

from __future__ import annotations

import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MB = 1024 * 1024


@dataclass(frozen=True)
class ClipFiles:
    stem: str
    paths: tuple[Path, ...]
    mtime: float
    size: int


def list_clips(clips_dir: Path) -> list[ClipFiles]:
    """Completed clips (video + sidecar + snapshot grouped by name), oldest first. Temp files are skipped."""
    groups: dict[str, list[Path]] = {}
    if not clips_dir.is_dir():
        return []
    for p in clips_dir.iterdir():
        if p.is_file() and not p.name.startswith("."):
            groups.setdefault(p.name.split(".", 1)[0], []).append(p)
    clips = []
    for stem, paths in groups.items():
        stats = [p.stat() for p in paths]
        clips.append(ClipFiles(stem, tuple(paths), max(s.st_mtime for s in stats), sum(s.st_size for s in stats)))
    return sorted(clips, key=lambda c: (c.mtime, c.stem))


def plan_retention(clips: list[ClipFiles], now: float, max_age_s: float, max_total_bytes: float,
                   need_free_bytes: float = 0) -> list[ClipFiles]:
    """Which clips to delete: all older than max_age_s, then oldest until the total fits and
    `need_free_bytes` have been released. Pure: decides, does not delete."""
    doomed = [c for c in clips if now - c.mtime > max_age_s]
    kept = [c for c in clips if c not in doomed]
    total = sum(c.size for c in kept)
    freed = sum(c.size for c in doomed)
    while kept and (total > max_total_bytes or freed < need_free_bytes):
        c = kept.pop(0)
        doomed.append(c)
        total -= c.size
        freed += c.size
    return doomed


def delete_clips(clips: list[ClipFiles]) -> list[ClipFiles]:
    """Delete the clips' files; returns the clips fully deleted."""
    deleted = []
    for c in clips:
        try:
            for p in sorted(c.paths, key=lambda p: p.suffix == ".json"):  # sidecar last: never orphan a video
                p.unlink(missing_ok=True)
        except OSError as exc:  # read-only remount, immutable file: must not stop the frame loop
            log.error("retention: cannot delete clip %s: %s", c.stem, exc)
            continue
        deleted.append(c)
        log.info("retention: deleted clip %s (%.1f MB)", c.stem, c.size / MB)
    return deleted


def expire_files(folder: Path, now: float, max_age_s: float) -> int:
    """Delete the files in `folder` (not temp `.` files) older than max_age_s; returns how many went."""
    removed = 0
    for p in folder.iterdir() if folder.is_dir() else ():
        try:
            if p.is_file() and not p.name.startswith(".") and now - p.stat().st_mtime > max_age_s:
                p.unlink()
                removed += 1
        except OSError as exc:  # like clips: a file that cannot go must not stop the device
            log.error("retention: cannot delete %s: %s", p, exc)
    if removed:
        log.info("retention: deleted %d file(s) older than %.0f days in %s", removed, max_age_s / 86400, folder)
    return removed


def free_bytes(path: Path) -> int:
    path = Path(path)
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


class Storage:
    """Runs retention and watches free space; `recording_allowed` goes False when the disk is low."""

    def __init__(self, clips_dir: Path, max_age_days: float, max_total_mb: float, min_free_mb: float,
                 aged_dirs: tuple[Path, ...] = ()) -> None:
        self.clips_dir = Path(clips_dir)
        self.aged_dirs = tuple(Path(d) for d in aged_dirs)  # other media (snapshots) that age out like clips
        self.max_age_s = max_age_days * 86400
        self.max_total_bytes = max_total_mb * MB
        self.min_free_bytes = min_free_mb * MB
        self.recording_allowed = True
        self.disk_free = free_bytes(self.clips_dir)
        self.deleted = 0

    def check(self, now: float | None = None) -> bool:
        """Apply retention; if the disk is still low, delete oldest clips to make room, else stop recording.
        Returns True when the low-disk state changed (so the caller can report it)."""
        now = time.time() if now is None else now
        clips = list_clips(self.clips_dir)
        self.disk_free = free_bytes(self.clips_dir)
        shortfall = max(0.0, self.min_free_bytes - self.disk_free)
        doomed = plan_retention(clips, now, self.max_age_s, self.max_total_bytes, shortfall)
        expired = sum(expire_files(d, now, self.max_age_s) for d in self.aged_dirs)
        if doomed:
            self.deleted += len(delete_clips(doomed))
        if doomed or expired:
            self.disk_free = free_bytes(self.clips_dir)
        allowed = self.disk_free >= self.min_free_bytes
        changed = allowed != self.recording_allowed
        self.recording_allowed = allowed
        if changed:
            if allowed:
                log.info("disk space back (%.0f MB free): recording resumed", self.disk_free / MB)
            else:
                log.error("low disk: %.0f MB free < storage.min_free_mb %.0f MB: recording stopped; free space "
                          "or lower storage.max_total_mb", self.disk_free / MB, self.min_free_bytes / MB)
        return changed

    def total_bytes(self) -> int:
        return sum(c.size for c in list_clips(self.clips_dir))
