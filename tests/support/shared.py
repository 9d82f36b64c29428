"""Where the shared third-party data lives ($EDGETL_SHARED_DATA, default ../shared/data)."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parents[2]


def shared_data_dir() -> Path:
    return Path(os.environ.get("EDGETL_SHARED_DATA", PROJECT_ROOT.parent / "shared" / "data")).resolve()


def shared_data_or_none(*parts: str) -> Path | None:
    path = shared_data_dir().joinpath(*parts)
    return path if path.exists() else None
