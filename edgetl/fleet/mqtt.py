"""Connect a paho client for fleet tools, with clear errors for the usual mistakes."""

from __future__ import annotations

import logging
import ssl
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import paho.mqtt.client as mqtt

from edgetl.errors import EdgetlError
from edgetl.fleet.topics import parse_broker_url

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BrokerOptions:
    url: str
    ca: Path | None = None
    username: str | None = None
    password: str | None = None
    prefix: str = "edgetl"
    cert: Path | None = None  # client certificate (PEM) for brokers that require one (mutual TLS)
    key: Path | None = None


def connect(opts: BrokerOptions, client_id: str | None = None, clean_session: bool = True,
            manual_ack: bool = False, timeout: float = 10.0,
            subscribe: list[tuple[str, int]] | None = None,
            on_message: Callable[[mqtt.Client, object, mqtt.MQTTMessage], None] | None = None) -> mqtt.Client:
    """Connect and start the network loop; raises EdgetlError when the broker is unreachable or refuses us.

    `subscribe` is (re)done on every connect, after `on_message` is in place, so retained messages and
    reconnects are not missed; the first connect returns once the broker acknowledged the subscription, so
    nothing published after this returns is missed either. A fixed `client_id` with `clean_session=False`
    makes the broker queue QoS 1 messages while we are away.
    """
    url = parse_broker_url(opts.url)
    client = mqtt.Client(
        mqtt.CallbackAPIVersion.VERSION2,
        client_id=client_id or f"edgetl-fleet-{uuid.uuid4().hex[:8]}",
        clean_session=clean_session,
        manual_ack=manual_ack,
    )
    client.max_inflight_messages_set(100)
    client.reconnect_delay_set(min_delay=1, max_delay=15)  # paho retries forever; keep the gaps short
    client.max_queued_messages_set(0)
    username = opts.username or url.username
    password = opts.password or url.password
    if username:
        client.username_pw_set(username, password)
    if url.tls or opts.ca or opts.cert:
        for what, path in (("CA file", opts.ca), ("client certificate", opts.cert), ("client key", opts.key)):
            if path and not Path(path).is_file():
                raise EdgetlError(f"{what} {path} not found: give the PEM file's path")
        if (opts.cert is None) != (opts.key is None):
            raise EdgetlError("--cert and --key go together; give both or neither")
        try:
            client.tls_set(ca_certs=str(opts.ca) if opts.ca else None, certfile=str(opts.cert) if opts.cert else None,
                           keyfile=str(opts.key) if opts.key else None, cert_reqs=ssl.CERT_REQUIRED)
        except (OSError, ValueError) as exc:
            raise EdgetlError(f"cannot load the TLS certificates: {exc}") from exc
    connected = threading.Event()
    result: dict[str, object] = {}

    def on_connect(c, _u, _flags, reason_code, _props) -> None:
        result["rc"] = reason_code
        if not reason_code.is_failure and subscribe:
            c.subscribe(subscribe)  # `connected` is set on its SUBACK
        else:
            connected.set()

    client.on_connect = on_connect
    client.on_subscribe = lambda *_: connected.set()
    if on_message is not None:
        client.on_message = on_message
    try:
        client.connect(url.host, url.port, keepalive=30)
    except (OSError, ssl.SSLError) as exc:
        raise EdgetlError(f"cannot reach broker {opts.url}: {exc}; check the URL and that the broker runs") from exc
    client.loop_start()
    if not connected.wait(timeout):
        client.loop_stop()
        raise EdgetlError(f"broker {opts.url} did not answer within {timeout:.0f}s")
    rc = result["rc"]
    if getattr(rc, "is_failure", False):
        client.loop_stop()
        client.disconnect()
        raise EdgetlError(f"broker {opts.url} refused the connection: {rc}; check --username/--password")
    return client


def close(client: mqtt.Client) -> None:
    client.disconnect()
    client.loop_stop()
