"""Event payloads: the schema shared by the runtime, the outbox, MQTT and the fleet.

An object's life is reported as `start`, zero or more `update`, then `end`,
all carrying the same `object_id`. `event_id` is unique per message (the
consumer de-duplicates on it); `seq` is assigned by the reporter when the event
is stored (it increases by one per device and survives restarts).
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

SCHEMA_VERSION = 1
EventType = Literal["start", "update", "end"]


def new_event(
    device_id: str,
    type: EventType,
    object_id: str,
    label: str,
    score: float,
    unknown_score: float | None = None,
    unknown: bool = False,
    start_time: float | None = None,
    end_time: float | None = None,
    clip_path: str | None = None,
    snapshot_path: str | None = None,
    model_version: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Build one event payload (JSON-serialisable)."""
    now = time.time()
    event = {
        "schema": SCHEMA_VERSION,
        "event_id": uuid.uuid4().hex,
        "device_id": device_id,
        "type": type,
        "object_id": object_id,
        "time": now,
        "start_time": start_time if start_time is not None else now,
        "end_time": end_time,
        "label": label,
        "score": float(score),
        "unknown_score": None if unknown_score is None else float(unknown_score),
        "unknown": bool(unknown),
        "clip_path": clip_path,
        "snapshot_path": snapshot_path,
        "model_version": model_version,
    }
    event.update(extra)
    return event
