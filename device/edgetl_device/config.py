"""Device configuration: one YAML/TOML file, one pydantic model per domain.

Every model forbids unknown keys, so a typo is an error that names the key.
Defaults live here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator


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


# --------------------------------------------------------------------------- runtime domains
# (camera, model, motion, decision, recording, storage, runtime; owned by the runtime area)

class CameraConfig(_Strict):
    """Where frames come from: a device index, an RTSP/HTTP URL, a video file, an image folder, Picamera2."""

    source: int | str = Field(0, description="Device index (0), URL (rtsp://, http://), video file, image folder, "
                                             "or 'picamera2'.")
    loop: bool = Field(False, description="Video files / folders: start again at the end instead of stopping.")
    paced: bool = Field(False, description="Video files / folders: deliver frames at the native fps like a live "
                                           "camera (newest frame only); unpaced files deliver every frame.")
    fps: float | None = Field(None, gt=0, description="Frame rate for folders and paced files when the file has "
                                                      "none; requested rate for devices.")
    width: int | None = Field(None, gt=0, description="Requested capture width (devices / Picamera2).")
    height: int | None = Field(None, gt=0, description="Requested capture height (devices / Picamera2).")
    reconnect_initial: float = Field(0.5, gt=0, description="First reconnect delay in seconds (doubles per try).")
    reconnect_max: float = Field(30.0, gt=0, description="Longest reconnect delay in seconds.")
    timeout: float = Field(5.0, gt=0, description="Network streams: seconds to open / to wait for a frame before "
                                                  "the stream counts as dropped.")
    max_bad_reads: int = Field(5, ge=1, description="Consecutive failed/corrupt reads before the source is "
                                                    "declared offline and reopened.")
    decode_threads: int = Field(1, ge=0, description="FFmpeg decoder threads (video files, network streams); "
                                                    "0 = FFmpeg's choice, one per core. One thread costs the least "
                                                    "CPU per frame at camera resolutions and leaves the other cores "
                                                    "to the model; raise it only for a stream one core cannot "
                                                    "decode in real time (4K).")

    @model_validator(mode="after")
    def _backoff_bounds(self) -> CameraConfig:
        if self.reconnect_initial > self.reconnect_max:
            raise ValueError(f"camera.reconnect_initial ({self.reconnect_initial}) must be <= camera.reconnect_max "
                             f"({self.reconnect_max})")
        return self


class ModelConfig(_Strict):
    """The classifier: either a plain `.tflite` + labels file, or a signed bundle directory."""

    path: Path | None = Field(None, description="Plain .tflite model (use with `labels`).")
    labels: Path | None = Field(None, description="Labels file, one class per line (line number = index).")
    bundle: Path | None = Field(None, description="Bundle directory or .tar.gz from `edgetl export`.")
    num_threads: int | None = Field(None, ge=1, description="Interpreter CPU threads (default: backend's choice).")
    delegate: str = Field("auto", pattern="^(auto|none|edgetpu)$",
                          description="auto: Edge TPU for *_edgetpu models; none: CPU; edgetpu: require a TPU.")
    center_crop: float | None = Field(None, gt=0, le=1,
                                      description="Crop this fraction of the shorter side at the centre before "
                                                  "resizing (plain models; a bundle's manifest decides otherwise).")
    resize: str = Field("area", pattern="^(area|fast)$",
                        description="area: cv2.INTER_AREA like edgetl's training pipeline; fast: bilinear to k x the "
                                    "size, then an exact k x k box average (~1/3 of the cost on non-integer "
                                    "scales, within ~0.5 levels of area on average).")
    input_mean: float = Field(0.0, description="Float-input models only: (pixel - mean) / std.")
    input_std: float = Field(1.0, gt=0, description="Float-input models only: (pixel - mean) / std.")

    @model_validator(mode="after")
    def _one_source(self) -> ModelConfig:
        if (self.path is None) == (self.bundle is None):
            raise ValueError("set exactly one of model.path (plain .tflite, with model.labels) or model.bundle")
        return self


class MotionConfig(_Strict):
    """Cheap motion gate before inference: downscaled frame differencing."""

    enabled: bool = Field(True, description="Skip inference when nothing moves.")
    width: int = Field(160, ge=16, description="Width the frame is downscaled to before differencing.")
    blur: int = Field(5, ge=1, description="Gaussian blur kernel (odd) against sensor noise.")
    pixel_threshold: int = Field(25, ge=1, le=255, description="Grey-level change that counts as motion.")
    min_area: float = Field(0.002, ge=0, le=1, description="Fraction of moving pixels that opens the gate.")
    hold_frames: int = Field(10, ge=0, description="Keep inferring this many frames after motion stops, so an "
                                                   "object that enters and stands still still gets its k-of-n votes "
                                                   "(keep >= decision.n).")
    keepalive: float = Field(10.0, ge=0, description="Run inference at least every this many seconds even "
                                                     "without motion (0: never).")
    masks: list[tuple[float, float, float, float]] = Field(
        default_factory=list,
        description="Rectangles [x, y, w, h] in 0..1 frame coordinates to ignore (trees, clocks, roads).")

    @model_validator(mode="after")
    def _masks_in_frame(self) -> MotionConfig:
        # pixel coordinates or a negative size would silently mask everything or nothing
        for i, (x, y, w, h) in enumerate(self.masks):
            if not (w > 0 and h > 0 and 0 <= x and 0 <= y and x + w <= 1 + 1e-9 and y + h <= 1 + 1e-9):
                raise ValueError(f"masks[{i}] = [{x}, {y}, {w}, {h}] is not a rectangle inside the frame: give "
                                 "[x, y, w, h] as fractions of the frame width/height (0..1), w and h > 0")
        return self


class DecisionConfig(_Strict):
    """Per-frame label + unknown score, smoothed k-of-n, and which objects trigger a recording."""

    unknown_threshold: float = Field(0.5, ge=0, le=1, description="Unknown when the unknown score exceeds "
                                                                  "this (default score: 1 - max probability).")
    min_score: float = Field(0.0, ge=0, le=1, description="A known class below this score does not trigger.")
    k: int = Field(3, ge=1, description="An object counts when k of the last n inferred frames agree.")
    n: int = Field(5, ge=1, description="Window length in inferred frames.")
    k_end: int = Field(1, ge=1, description="Hysteresis: the object ends when fewer than k_end of the last n "
                                            "frames still see it.")
    record_unknown: bool = Field(True, description="Trigger on unknown objects.")
    record_classes: list[str] = Field(default_factory=list, description="Known classes that trigger (e.g. person).")
    ignore_classes: list[str] = Field(default_factory=list, description="Classes that never trigger (e.g. Empty).")

    @model_validator(mode="after")
    def _window(self) -> DecisionConfig:
        if self.k > self.n:
            raise ValueError(f"decision.k ({self.k}) must be <= decision.n ({self.n})")
        if self.k_end > self.k:
            raise ValueError(f"decision.k_end ({self.k_end}) must be <= decision.k ({self.k})")
        return self


class RecordingConfig(_Strict):
    """Clips: pre-roll + event + post-roll, capped, merged when events overlap."""

    enabled: bool = Field(True, description="Write clips on triggers.")
    pre_roll: float = Field(3.0, ge=0, description="Seconds before the trigger kept in the ring buffer.")
    post_roll: float = Field(3.0, ge=0, description="Seconds recorded after the object ends.")
    max_clip: float = Field(60.0, gt=0, description="Longest clip in seconds.")
    cooldown: float = Field(2.0, ge=0, description="Seconds after a clip before the next may start.")
    buffer_mb: float = Field(32.0, gt=0, description="Memory bound in MB of frames held for clips: the pre-roll "
                                                     "ring, or the encoder's backlog while recording.")
    codec: str = Field("mp4v", min_length=4, max_length=4, description="FourCC of the clip codec.")
    extension: str = Field(".mp4", pattern=r"^\.[a-z0-9]+$", description="Clip container extension.")
    fps: float | None = Field(None, gt=0, description="Clip frame rate (default: the camera's).")
    snapshot_quality: int = Field(90, ge=10, le=100, description="JPEG quality of the best-frame snapshot.")


class StorageConfig(_Strict):
    """Where clips and logs go, retention, and the low-disk guard."""

    data_dir: Path = Field(Path("edgetl-data"), description="Clips, event log and status file live here.")
    max_age_days: float = Field(7.0, gt=0, description="Delete clips and command snapshots older than this.")
    max_total_mb: float = Field(2048.0, gt=0, description="Delete oldest clips beyond this total size.")
    min_free_mb: float = Field(256.0, ge=0, description="Stop recording when the disk has less free space.")
    check_interval: float = Field(30.0, gt=0, description="Seconds between retention / disk checks.")


class RuntimeConfig(_Strict):
    """The frame loop: status cadence and logging."""

    status_interval: float = Field(10.0, gt=0, description="Seconds between status snapshots / telemetry.")
    log_format: str = Field("text", pattern="^(text|json)$", description="text, or json lines for journald.")
    read_timeout: float = Field(5.0, gt=0, description="Seconds to wait for a frame before reporting a stall.")
    opencv_threads: int | None = Field(
        1, ge=1, description="Threads in OpenCV's own pool (resize, colour, blur), set at start; null keeps "
        "OpenCV's default (all cores). Per-frame ops are small: a pool's waiting threads spin on the cores the "
        "decoder and the interpreter need (2 cores, static scene: CPU per gated frame 0.73 -> 0.62 ms).")


class OtaConfig(_Strict):
    """Over-the-air model updates (the `update_model` command; bundles under `<data_dir>/bundles`)."""

    download_timeout: float = Field(1800.0, gt=0, description="Seconds an http(s) bundle download may take in "
                                                              "all before it is abandoned.")
    max_transfers: int = Field(2, ge=1, description="Unfinished chunked (MQTT) transfers kept on disk at once; a "
                                                    "new one drops the least recently active beyond this.")


class DeviceConfig(_Strict):
    """The whole device configuration file."""

    device_id: str = Field(pattern=r"^[A-Za-z0-9_\-]+$", description="Unique id of this device in the fleet.")
    camera: CameraConfig = Field(default_factory=CameraConfig)
    model: ModelConfig
    motion: MotionConfig = Field(default_factory=MotionConfig)
    decision: DecisionConfig = Field(default_factory=DecisionConfig)
    recording: RecordingConfig = Field(default_factory=RecordingConfig)
    storage: StorageConfig = Field(default_factory=StorageConfig)
    runtime: RuntimeConfig = Field(default_factory=RuntimeConfig)
    ota: OtaConfig = Field(default_factory=OtaConfig)
    mqtt: MqttConfig | None = Field(None, description="MQTT reporting; absent: local JSONL event log.")
    trusted_keys: list[Path] = Field(default_factory=list, description="Public keys (PEM) that may sign bundles.")


_RELATIVE_PATHS = (("model", "path"), ("model", "labels"), ("model", "bundle"), ("storage", "data_dir"))


def load_config(path: str | Path) -> DeviceConfig:
    """Read and validate a YAML or TOML config; relative paths are relative to the file.

    Raises DeviceError naming the key, the problem and the fix.
    """
    from edgetl_device.errors import DeviceError

    path = Path(path)
    if not path.is_file():
        raise DeviceError(f"config file not found: {path} (see device/example-config.yaml)")
    data = _parse(path)
    try:
        config = DeviceConfig.model_validate(data)
    except ValidationError as exc:
        raise DeviceError(format_validation_error(path, exc)) from None
    return resolve_paths(config, path.parent.resolve())


def resolve_paths(config: DeviceConfig, base: Path) -> DeviceConfig:
    """Make file paths relative to the config file's folder absolute."""
    # `~/...` is the user's home, never a folder named "~"; `base / absolute` is the absolute path itself
    for section, key in _RELATIVE_PATHS:
        obj = getattr(config, section)
        value = getattr(obj, key)
        if value is not None:
            setattr(obj, key, base / Path(value).expanduser())
    config.trusted_keys = [base / k.expanduser() for k in config.trusted_keys]
    cam = config.camera
    if isinstance(cam.source, str) and "://" not in cam.source and cam.source != "picamera2":
        cam.source = str(base / Path(cam.source).expanduser())
    if config.mqtt is not None:
        config.mqtt.outbox_path = config.storage.data_dir / config.mqtt.outbox_path.expanduser()
    return config


def _parse(path: Path) -> dict:
    from edgetl_device.errors import DeviceError

    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix.lower() == ".toml":
            import tomllib

            data = tomllib.loads(text)
        else:
            import yaml

            data = yaml.safe_load(text)
    except Exception as exc:  # yaml/toml syntax errors carry line numbers in their message
        raise DeviceError(f"{path}: not valid {'TOML' if path.suffix == '.toml' else 'YAML'}: "
                          f"{str(exc).splitlines()[0]} ... fix the syntax") from None
    if not isinstance(data, dict):
        raise DeviceError(f"{path}: expected a mapping of sections (device_id, camera, model, ...) at top level")
    return data


def format_validation_error(path: Path, exc: ValidationError) -> str:
    """One line per problem: `key: problem (fix)`."""
    problems = []
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "(top level)"
        kind = err["type"]
        if kind == "extra_forbidden":
            fix = "unknown key: remove it or fix the spelling"
            parent = _model_at(err["loc"][:-1])
            if parent is not None:
                fix += f" (allowed: {', '.join(parent.model_fields)})"
        elif kind == "missing":
            fix = "required key is missing: add it"
        else:
            fix = err["msg"]
        problems.append(f"{key}: {fix}")
    return f"{path}: invalid config: " + "; ".join(problems)


def _model_at(loc: tuple) -> type[BaseModel] | None:
    model: type[BaseModel] = DeviceConfig
    for part in loc:
        field = model.model_fields.get(str(part))
        if field is None:
            return None
        ann = field.annotation
        candidates = [ann, *getattr(ann, "__args__", ())]
        nxt = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
        if nxt is None:
            return None
        model = nxt
    return model
