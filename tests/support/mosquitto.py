"""Start real Mosquitto brokers on free ports (tests and tools/ benchmarks).

A broker can be stopped, SIGKILLed and restarted on the same port to test
faults. Persistence is off unless asked for, like a broker that lost its state.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path


def mosquitto_binary() -> str | None:
    for candidate in (shutil.which("mosquitto"), "/usr/sbin/mosquitto", "/usr/local/sbin/mosquitto"):
        if candidate and os.path.exists(candidate):
            return candidate
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 10.0, host: str = "127.0.0.1") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s")


class MosquittoBroker:
    """One Mosquitto process on 127.0.0.1:`port` with an optional extra config text.

    `extra_config` is appended after the listener line, e.g. password_file,
    acl_file, TLS options. Use as a context manager or call start()/stop().
    """

    def __init__(self, port: int | None = None, extra_config: str = "", allow_anonymous: bool = True,
                 workdir: str | os.PathLike[str] | None = None, persistence: bool = False) -> None:
        binary = mosquitto_binary()
        if binary is None:
            raise RuntimeError("mosquitto is not installed; run `apt-get install -y mosquitto` (tools/test.sh does)")
        self.binary = binary
        self.port = port or free_port()
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="edgetl-mosquitto-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.config_path = self.workdir / "mosquitto.conf"
        self.log_path = self.workdir / "mosquitto.log"
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'true' if allow_anonymous else 'false'}",
            f"persistence {'true' if persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
            "max_queued_messages 100000",
            # As root, Mosquitto drops to user `mosquitto`, who cannot read test files in private tmp dirs.
            *(["user root"] if hasattr(os, "geteuid") and os.geteuid() == 0 else []),
            extra_config,
        ]
        self.config_path.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self, timeout: float = 10.0) -> MosquittoBroker:
        if self.process and self.process.poll() is None:
            return self
        log = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        self.process = subprocess.Popen([self.binary, "-c", str(self.config_path)], stdout=log, stderr=log)
        log.close()
        try:
            deadline = time.monotonic() + timeout
            while self.process.poll() is None and time.monotonic() < deadline:
                try:
                    wait_for_port(self.port, 0.2)
                    break
                except TimeoutError:
                    continue
            else:  # exited (bad config) or never listened
                raise TimeoutError(f"mosquitto exited with {self.process.poll()} or did not listen")
        except TimeoutError as exc:
            self.stop()
            raise RuntimeError(f"mosquitto did not start: {self.log_path.read_text()[-2000:]}") from exc
        return self

    def stop(self) -> None:
        """Graceful stop (SIGTERM)."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def kill(self) -> None:
        """Hard stop (SIGKILL), like a crashed broker."""
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(5)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()

    def __enter__(self) -> MosquittoBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
