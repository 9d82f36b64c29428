"""Live fleet state from the broker, and its rich table.

`FleetState.apply` is a pure state update per message, so the table logic is testable without
a broker. A device is *silent* when it sent nothing for 3 telemetry intervals (its interval is
learnt from the gaps between its telemetry messages); a *seq gap* is an event sequence number
never received (events lost between device and fleet), filled in if it arrives late.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rich.table import Table
from rich.text import Text

log = logging.getLogger(__name__)

SILENT_INTERVALS = 3
MAX_TRACKED_MISSING = 10_000  # bound memory for a device whose seq jumped wildly
MAX_TRACKED_IDS = 50_000


@dataclass
class DeviceState:
    device_id: str
    state: str = "unknown"
    state_time: float | None = None
    last_seen: float | None = None
    model_version: str | None = None
    telemetry: dict[str, Any] = field(default_factory=dict)
    last_telemetry: float | None = None
    interval: float | None = None
    events: int = 0
    by_type: dict[str, int] = field(default_factory=dict)
    unknown_events: int = 0
    max_seq: int = 0
    missing: set[int] = field(default_factory=set)
    duplicates: int = 0
    seen_ids: set[str] = field(default_factory=set)

    def silent(self, now: float, default_interval: float) -> bool:
        if self.last_seen is None or self.state in ("offline", "stopped"):
            return False
        interval = self.interval or default_interval
        return now - self.last_seen > SILENT_INTERVALS * interval

    @property
    def gaps(self) -> int:
        return len(self.missing)


class FleetState:
    """Thread-safe map device id -> DeviceState, fed with (device, kind, payload) messages."""

    def __init__(self, default_interval: float = 10.0) -> None:
        self.default_interval = default_interval
        self.devices: dict[str, DeviceState] = {}
        self.messages = 0
        self.events = 0
        self._lock = threading.Lock()

    def apply(self, device_id: str, kind: str, payload: dict[str, Any], now: float | None = None) -> None:
        now = time.time() if now is None else now
        with self._lock:
            self.messages += 1
            d = self.devices.get(device_id)
            if d is None:
                d = self.devices[device_id] = DeviceState(device_id)
            if kind == "status":
                d.state = str(payload.get("state", "unknown"))
                d.state_time = _float(payload.get("time")) or now
                d.model_version = payload.get("model_version") or d.model_version
                if d.state == "online":
                    d.last_seen = now
                return
            d.last_seen = now
            if d.state in ("unknown", "offline"):
                d.state = "online"  # it talks, so it is connected (a late retained status may follow)
            if kind == "telemetry":
                if d.last_telemetry is not None and now > d.last_telemetry:
                    gap = now - d.last_telemetry
                    d.interval = gap if d.interval is None else 0.8 * d.interval + 0.2 * gap
                d.last_telemetry = now
                d.telemetry = payload
                d.model_version = payload.get("model_version") or d.model_version
            elif kind == "events":
                self._event(d, payload)

    def _event(self, d: DeviceState, payload: dict[str, Any]) -> None:
        event_id = payload.get("event_id")
        if event_id in d.seen_ids:
            d.duplicates += 1
            return
        if event_id:
            if len(d.seen_ids) >= MAX_TRACKED_IDS:
                d.seen_ids.clear()  # duplicates come soon after the original; old ids are not needed
            d.seen_ids.add(event_id)
        self.events += 1
        d.events += 1
        kind = str(payload.get("type", "?"))
        d.by_type[kind] = d.by_type.get(kind, 0) + 1
        d.unknown_events += bool(payload.get("unknown"))
        seq = payload.get("seq")
        if not isinstance(seq, int):
            return
        if seq > d.max_seq:
            if d.max_seq and seq > d.max_seq + 1 and len(d.missing) < MAX_TRACKED_MISSING:
                d.missing.update(range(d.max_seq + 1, min(seq, d.max_seq + 1 + MAX_TRACKED_MISSING)))
            d.max_seq = seq
        else:
            d.missing.discard(seq)  # a late (replayed) event fills its gap

    def snapshot(self) -> list[DeviceState]:
        with self._lock:
            return sorted(self.devices.values(), key=lambda d: d.device_id)

    def totals(self, now: float | None = None) -> dict[str, int]:
        now = time.time() if now is None else now
        devices = self.snapshot()
        return {
            "devices": len(devices),
            "online": sum(d.state == "online" for d in devices),
            "silent": sum(d.silent(now, self.default_interval) for d in devices),
            "gaps": sum(d.gaps for d in devices),
            "events": self.events,
        }


def render_table(state: FleetState, now: float | None = None, limit: int | None = None) -> Table:
    """One row per device; silent devices and seq gaps are shown in red."""
    now = time.time() if now is None else now
    totals = state.totals(now)
    table = Table(
        title=(f"edgetl fleet — {totals['devices']} devices, {totals['online']} online, "
               f"{totals['silent']} silent, {totals['events']} events, {totals['gaps']} lost"),
        caption=datetime.fromtimestamp(now).strftime("%Y-%m-%d %H:%M:%S"),
    )
    for name, justify in (("device", "left"), ("state", "left"), ("last seen", "right"), ("fps", "right"),
                          ("infer ms p50/p95", "right"), ("model", "left"), ("disk free MB", "right"),
                          ("outbox", "right"), ("events", "right"), ("unknown", "right"), ("seq gaps", "right")):
        table.add_column(name, justify=justify)
    rows = state.snapshot()
    # problems first, so they are on screen when the fleet is bigger than the terminal
    rows.sort(key=lambda d: (not (d.silent(now, state.default_interval) or d.gaps), d.device_id))
    for d in rows[:limit]:
        t = d.telemetry
        silent = d.silent(now, state.default_interval)
        state_style = {"online": "green", "offline": "red", "stopped": "yellow"}.get(d.state, "dim")
        table.add_row(
            Text(d.device_id, style="bold red" if silent else ""),
            Text("SILENT" if silent else d.state, style="bold red" if silent else state_style),
            _age(now, d.last_seen),
            _fmt(t.get("fps"), "{:.1f}"),
            f"{_fmt(t.get('inference_ms_p50'), '{:.0f}')}/{_fmt(t.get('inference_ms_p95'), '{:.0f}')}",
            Text(str(d.model_version or "-")),  # a device's string, not rich markup ("v[int8]", "[/]")
            _fmt(t.get("disk_free_mb"), "{:.0f}"),
            Text(_outbox(t), style="yellow" if t.get("outbox_dropped") else ""),
            str(d.events),
            str(d.unknown_events),
            Text(str(d.gaps), style="bold red" if d.gaps else ""),
        )
    if limit is not None and len(rows) > limit:
        table.add_row(f"... {len(rows) - limit} more", *[""] * 10)
    return table


def _outbox(t: dict[str, Any]) -> str:
    depth = t.get("outbox_depth")
    if depth is None:
        return "-"
    dropped = t.get("outbox_dropped") or 0
    return f"{depth} ({dropped} dropped)" if dropped else str(depth)


def _age(now: float, then: float | None) -> str:
    if then is None:
        return "never"
    s = max(0.0, now - then)
    if s < 60:
        return f"{s:.0f}s ago"
    if s < 3600:
        return f"{s / 60:.0f}m ago"
    return f"{s / 3600:.1f}h ago"


def _fmt(value: Any, spec: str) -> str:
    try:
        return spec.format(float(value))
    except (TypeError, ValueError):
        return "-"


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def listen(broker: Any, state: FleetState) -> Any:
    """Connect to the broker and feed every device message into `state` (returns the running client)."""
    import json

    from edgetl.fleet import mqtt as fleet_mqtt
    from edgetl.fleet.topics import parse_topic, subscriptions

    def on_message(_c: Any, _u: Any, msg: Any) -> None:
        topic = parse_topic(msg.topic, broker.prefix)
        if topic is None or topic.kind in ("cmd", "cmd_result"):
            return
        try:
            payload = json.loads(msg.payload)
        except (UnicodeDecodeError, json.JSONDecodeError):
            return
        if isinstance(payload, dict):
            try:
                state.apply(topic.device_id, topic.kind, payload)
            except Exception:  # raised out of a paho callback it would end the network thread: monitor frozen
                log.warning("ignoring malformed %s from %s", topic.kind, topic.device_id, exc_info=True)

    return fleet_mqtt.connect(broker, subscribe=subscriptions(broker.prefix), on_message=on_message)
