"""Topic names and broker URLs of the device <-> fleet MQTT contract (see DEVELOPERS.md)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

from edgetl.errors import EdgetlError

DEFAULT_PREFIX = "edgetl"
KINDS = ("status", "events", "telemetry", "cmd_result")
COMMANDS = ("ping", "set_threshold", "snapshot", "record", "reload_config", "update_model")


@dataclass(frozen=True)
class Topic:
    """A parsed device topic: `<prefix>/<device_id>/<kind>[/<command>]`."""

    device_id: str
    kind: str
    command: str | None = None


@dataclass(frozen=True)
class BrokerUrl:
    host: str
    port: int
    tls: bool
    username: str | None = None
    password: str | None = None


def parse_topic(topic: str, prefix: str = DEFAULT_PREFIX) -> Topic | None:
    """Split a topic into device id and kind; None when it is not a device topic under `prefix`."""
    head = prefix.rstrip("/") + "/"
    if not topic.startswith(head):
        return None
    parts = topic[len(head):].split("/")
    if len(parts) == 2 and parts[0] and parts[1] in KINDS:
        return Topic(parts[0], parts[1])
    if len(parts) == 3 and parts[0] and parts[1] == "cmd" and parts[2]:
        return Topic(parts[0], "cmd", parts[2])
    return None


def device_topic(prefix: str, device_id: str, kind: str) -> str:
    return f"{prefix.rstrip('/')}/{device_id}/{kind}"


def command_topic(prefix: str, device_id: str, command: str) -> str:
    return f"{prefix.rstrip('/')}/{device_id}/cmd/{command}"


def subscriptions(prefix: str = DEFAULT_PREFIX) -> list[tuple[str, int]]:
    """What a fleet listener subscribes to: events/status/results at QoS 1, telemetry at QoS 0."""
    p = prefix.rstrip("/")
    return [(f"{p}/+/events", 1), (f"{p}/+/status", 1), (f"{p}/+/cmd_result", 1), (f"{p}/+/telemetry", 0)]


def parse_broker_url(url: str) -> BrokerUrl:
    """`mqtt://[user:pass@]host[:port]` (1883) or `mqtts://...` (8883, TLS)."""
    parts = urlsplit(url)
    if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname:
        raise EdgetlError(f"bad broker URL {url!r}: use mqtt://host:port or mqtts://host:port")
    tls = parts.scheme == "mqtts"
    try:
        port = parts.port or (8883 if tls else 1883)
    except ValueError as exc:
        raise EdgetlError(f"bad port in broker URL {url!r}: {exc}") from exc
    return BrokerUrl(
        host=parts.hostname,
        port=port,
        tls=tls,
        username=unquote(parts.username) if parts.username else None,
        password=unquote(parts.password) if parts.password else None,
    )
