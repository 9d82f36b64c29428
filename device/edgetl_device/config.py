"""Device configuration: one YAML/TOML file, one pydantic model per domain.

Every model forbids unknown keys, so a typo is an error that names the key.
Defaults live here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class MqttTlsConfig(_Strict):
    """TLS to the broker: CA to trust the broker, optional client certificate for mutual TLS."""

    ca_file: Path = Field(description="CA certificate (PEM) that signed the broker's certificate.")
    cert_file: Path | None = Field(None, description="Client certificate (PEM) when the broker requires one.")
    key_file: Path | None = Field(None, description="Client private key (PEM) for cert_file.")
    insecure: bool = Field(False, description="Skip broker hostname verification (testing only).")


class MqttConfig(_Strict):
    """MQTT reporting (events, status, telemetry, commands). Absent: events go to the local JSONL log."""

    host: str = Field("127.0.0.1", description="Broker host name or address.")
    port: int = Field(1883, ge=1, le=65535, description="Broker port (8883 is the usual TLS port).")
    prefix: str = Field("edgetl", pattern=r"^[A-Za-z0-9_\-/]+$", description="Topic prefix: <prefix>/<device_id>/...")
    client_id: str | None = Field(None, description="MQTT client id; defaults to the device id.")
    username: str | None = Field(None, description="Broker user name.")
    password: SecretStr | None = Field(None, description="Broker password (never logged).")
    tls: MqttTlsConfig | None = Field(None, description="TLS settings; absent means plain TCP.")
    keepalive: int = Field(30, ge=5, le=3600, description="Seconds between MQTT keep-alive pings.")
    telemetry_interval: float = Field(10.0, gt=0, description="Seconds between telemetry messages.")
    outbox_path: Path = Field(Path("outbox.sqlite3"), description="SQLite store-and-forward outbox for events.")
    outbox_max_events: int = Field(100_000, ge=10, description="Outbox bound; beyond it the drop policy applies.")
    drop_policy: str = Field(
        "drop_oldest",
        pattern="^(drop_oldest|drop_newest)$",
        description="What to drop when the outbox is full (drops are counted and reported).",
    )
    outbox_sync: str = Field(
        "full",
        pattern="^(full|normal)$",
        description="SQLite synchronous mode: 'full' survives power loss, 'normal' only a process crash.",
    )
    inflight_window: int = Field(200, ge=1, le=10_000, description="Events sent but not yet acknowledged.")
    stop_flush_timeout: float = Field(5.0, ge=0, description="Seconds stop() waits to deliver pending events.")
