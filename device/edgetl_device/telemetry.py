"""Host health for telemetry: CPU %, SoC temperature, disk free, uptime. Linux /proc and /sys only.

Every reader returns None when the value is not readable here (containers, non-Linux),
so telemetry degrades to missing fields instead of failing.
"""

from __future__ import annotations

import glob
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) jiffies from the aggregate line of /proc/stat."""
    try:
        fields = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    except (OSError, IndexError):
        return None
    values = [int(v) for v in fields]
    idle = values[3] + (values[4] if len(values) > 4 else 0)  # idle + iowait
    total = sum(values[:8])  # guest time is already counted in user/nice
    return total - idle, total


class CpuMeter:
    """CPU % since the previous call (the first call measures since construction)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._last = _cpu_times()

    def percent(self) -> float | None:
        with self._lock:
            now = _cpu_times()
            last, self._last = self._last, now
        if now is None or last is None or now[1] <= last[1]:
            return None
        return round(100.0 * (now[0] - last[0]) / (now[1] - last[1]), 1)


def temperature_c(pattern: str = "/sys/class/thermal/thermal_zone*/temp") -> float | None:
    """Highest thermal-zone temperature in °C (the SoC on a Pi), None when unreadable."""
    readings = []
    for path in glob.glob(pattern):
        try:
            readings.append(int(Path(path).read_text().strip()) / 1000.0)
        except (OSError, ValueError):
            continue
    return round(max(readings), 1) if readings else None


def disk_free_mb(path: str | os.PathLike[str] = ".") -> float | None:
    try:
        return round(shutil.disk_usage(path).free / 2**20, 1)
    except OSError:
        return None


class HostTelemetry:
    """Snapshot of host health fields for the telemetry message."""

    def __init__(self, disk_path: str | os.PathLike[str] = ".") -> None:
        self.disk_path = disk_path
        self.started = time.monotonic()
        self.cpu = CpuMeter()

    def snapshot(self) -> dict[str, Any]:
        return {
            "cpu_percent": self.cpu.percent(),
            "temperature_c": temperature_c(),
            "disk_free_mb": disk_free_mb(self.disk_path),
            "uptime_s": round(time.monotonic() - self.started, 1),
        }
