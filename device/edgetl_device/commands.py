"""Remote commands: validate, run on the device (a CommandTarget), answer on `cmd_result`.

Each command arrives on `<prefix>/<device_id>/cmd/<name>` as a JSON object
`{"schema": 1, "request_id": "...", ...args}`. `dispatch` never raises: unknown names,
bad JSON, wrong types, out-of-range values and failures of the target all become
`{"ok": false, "error": "..."}` on `cmd_result`, and the runtime carries on.
"""

from __future__ import annotations

import json
import logging
import math
import re
import threading
import time
import uuid
import weakref
from pathlib import Path
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError, model_validator

from edgetl_device.errors import DeviceError
from edgetl_device.events import SCHEMA_VERSION
from edgetl_device.reporting import Reporter

log = logging.getLogger(__name__)

MAX_PAYLOAD_BYTES = 1_500_000  # an OTA chunk (1 MiB, base64) plus the envelope
_NAME_RE = re.compile(r"^[a-z_]{1,32}$")
# JSON numbers (ints too); "0.5" as a string, true and NaN/Infinity are refused with one clear message each
Number = Annotated[float, Field(strict=True, allow_inf_nan=False)]


class CommandTarget(Protocol):
    """What the runtime offers to remote commands."""

    def set_threshold(self, value: float) -> None: ...
    def take_snapshot(self) -> str: ...
    def start_manual_recording(self, duration: float | None) -> str: ...
    def stop_manual_recording(self) -> None: ...
    def reload_config(self) -> None: ...
    def swap_model(self, bundle_dir: Path) -> None: ...
    def status(self) -> dict: ...


class Command(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: Literal[1] = Field(SCHEMA_VERSION, alias="schema", description="Payload schema version.")
    request_id: StrictStr = Field(default_factory=lambda: uuid.uuid4().hex, min_length=1, max_length=128,
                                  pattern=r"^[A-Za-z0-9_.:\-]+$", description="Echoed in cmd_result.")


class Ping(Command):
    pass


class SetThreshold(Command):
    value: Number = Field(
        ge=-1e6, le=1e6,
        description="Unknown-score threshold; its scale depends on the scorer (energy, Mahalanobis and the "
        "combined score can be negative).",
    )

    @model_validator(mode="after")
    def _finite(self) -> SetThreshold:
        if not math.isfinite(self.value):
            raise ValueError("value must be a finite number")
        return self


class Snapshot(Command):
    pass


class Record(Command):
    action: Literal["start", "stop"]
    duration: Number | None = Field(None, gt=0, le=3600, description="Seconds; absent: until `stop`.")


class ReloadConfig(Command):
    pass


class Chunk(BaseModel):
    """One piece of a bundle archive sent over MQTT (see edgetl_device.ota.chunk_commands)."""

    model_config = ConfigDict(extra="forbid")
    transfer_id: StrictStr = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_\-]+$")
    index: StrictInt = Field(ge=0, lt=100_000)
    count: StrictInt = Field(ge=1, le=100_000)
    data: StrictStr = Field(min_length=1, max_length=1_400_000, description="base64 of the bytes")

    @model_validator(mode="after")
    def _index_in_range(self) -> Chunk:
        if self.index >= self.count:
            raise ValueError(f"chunk index {self.index} must be below count {self.count}")
        return self


class UpdateModel(Command):
    url: StrictStr | None = Field(None, min_length=1, max_length=2048, description="file://, http(s):// URL.")
    path: StrictStr | None = Field(None, min_length=1, max_length=4096, description="Bundle dir or .tar.gz.")
    chunk: Chunk | None = None
    sha256: StrictStr | None = Field(None, pattern=r"^[0-9a-fA-F]{64}$", description="Of the archive.")

    @model_validator(mode="after")
    def _one_source(self) -> UpdateModel:
        given = [n for n in ("url", "path", "chunk") if getattr(self, n) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of url, path or chunk")
        if self.chunk is not None and self.sha256 is None:
            raise ValueError("chunked transfers need the archive's sha256")
        return self


COMMANDS: dict[str, type[Command]] = {
    "ping": Ping, "set_threshold": SetThreshold, "snapshot": Snapshot, "record": Record,
    "reload_config": ReloadConfig, "update_model": UpdateModel,
}

_updaters: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
_updaters_lock = threading.Lock()


def updater_for(target: Any) -> Any:
    """The target's ModelUpdater: `target.updater` if it has one, else one built from a runtime's
    `config.trusted_keys`, `config.ota` limits and `data_dir` (bundles under `<data_dir>/bundles`), kept per
    target; its limits follow `config.ota` (a reloaded config) at every call."""
    explicit = getattr(target, "updater", None)
    if explicit is not None:
        return explicit
    from edgetl_device.ota import ModelUpdater

    with _updaters_lock:
        config, data_dir = getattr(target, "config", None), getattr(target, "data_dir", None)
        ota = getattr(config, "ota", None)
        limits = {} if ota is None else {"download_timeout": ota.download_timeout,
                                         "max_transfers": ota.max_transfers}
        try:
            if target in _updaters:
                updater = _updaters[target]
                for name, value in limits.items():
                    setattr(updater, name, value)
                return updater
        except TypeError:  # not weak-referenceable
            pass
        if config is None or data_dir is None:
            raise DeviceError("update_model is not available: this device has no bundles folder or trusted keys")
        updater = ModelUpdater(Path(data_dir) / "bundles", getattr(config, "trusted_keys", []),
                               frame_source=lambda: _latest_image(target), **limits)
        try:
            _updaters[target] = updater
        except TypeError:
            pass
        return updater


def _latest_image(target: Any) -> Any:
    """The runtime camera's latest frame for the OTA health check (None: a grey frame is used)."""
    camera = getattr(target, "camera", None)
    latest = camera.latest() if camera is not None and hasattr(camera, "latest") else None
    return getattr(latest, "image", None)


def _error_text(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


def parse(name: str, payload: bytes) -> Command:
    """The validated command; DeviceError with a one-line reason otherwise."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise DeviceError(f"unknown command {str(name)[:40]!r}; known: {', '.join(COMMANDS)}")
    if name not in COMMANDS:
        raise DeviceError(f"unknown command {name!r}; known: {', '.join(COMMANDS)}")
    if len(payload) > MAX_PAYLOAD_BYTES:
        raise DeviceError(f"payload of {len(payload)} bytes is over the {MAX_PAYLOAD_BYTES}-byte limit")
    try:
        doc = json.loads(payload.decode("utf-8")) if payload.strip() else {}
    except (UnicodeDecodeError, ValueError) as exc:
        raise DeviceError(f"payload is not UTF-8 JSON ({str(exc)[:80]})") from None
    except RecursionError:
        raise DeviceError("payload is nested too deeply to parse") from None
    if not isinstance(doc, dict):
        raise DeviceError(f"payload must be a JSON object, not {type(doc).__name__}")
    try:
        return COMMANDS[name].model_validate(doc)
    except ValidationError as exc:
        raise DeviceError(f"invalid {name}: {_error_text(exc)}") from None


def _request_id(payload: bytes) -> str | None:
    """Best effort, so even a rejected command's result can be matched to its request."""
    try:
        rid = json.loads(payload).get("request_id")
    except Exception:
        return None
    return rid[:128] if isinstance(rid, str) else None


def refusal(name: str, payload: bytes, error: str) -> dict[str, Any]:
    """The `cmd_result` of a command that is not run at all (device busy or stopping)."""
    return {"request_id": _request_id(payload), "command": str(name)[:40], "ok": False, "error": error,
            "duration_ms": 0.0}


def execute(cmd: Command, target: CommandTarget, updater: Any = None) -> dict[str, Any]:
    """Run a validated command; returns the `result` object."""
    if isinstance(cmd, Ping):
        return {"pong": True, "status": target.status()}
    if isinstance(cmd, SetThreshold):
        target.set_threshold(float(cmd.value))
        return {"threshold": float(cmd.value)}
    if isinstance(cmd, Snapshot):
        return {"path": str(target.take_snapshot())}
    if isinstance(cmd, Record):
        if cmd.action == "start":
            duration = None if cmd.duration is None else float(cmd.duration)
            return {"recording": True, "id": str(target.start_manual_recording(duration)), "duration": duration}
        target.stop_manual_recording()
        return {"recording": False}
    if isinstance(cmd, ReloadConfig):
        target.reload_config()
        return {"reloaded": True}
    if isinstance(cmd, UpdateModel):
        return (updater or updater_for(target)).handle(cmd, target)
    raise DeviceError(f"command {type(cmd).__name__} has no handler")  # a new schema without a branch


def dispatch(name: str, payload: bytes, target: CommandTarget, reporter: Reporter,
             updater: Any = None) -> dict[str, Any]:
    """Validate and run one command, publish its `cmd_result`, and return that message. Never raises."""
    started = time.monotonic()
    message: dict[str, Any] = {"schema": SCHEMA_VERSION, "request_id": None, "command": str(name)[:40]}
    try:
        message["request_id"] = _request_id(payload)
        cmd = parse(name, payload)
        message["request_id"] = cmd.request_id
        message["result"] = execute(cmd, target, updater)
        message["ok"] = True
    except DeviceError as exc:
        message.update(ok=False, error=str(exc))
    except Exception as exc:  # a bug or an unexpected failure in the target: report, don't crash
        log.exception("command %r failed", name)
        message.update(ok=False, error=f"{type(exc).__name__}: {exc}"[:500])
    message["time"] = time.time()
    message["duration_ms"] = round((time.monotonic() - started) * 1000, 2)
    if not message["ok"]:
        log.warning("command %s (%s) refused: %s", message["command"], message["request_id"], message["error"])
    try:
        reporter.publish("cmd_result", message)
    except Exception:
        log.exception("could not publish the result of command %r", name)
    return message
