"""A local TCP proxy that can cut the network: for fault tests and tools/bench_mqtt.py.

    proxy = TcpProxy(target_port=1883).start()   # device connects to proxy.port
    proxy.cut()      # resets every connection and refuses new ones (like a dropped link)
    proxy.restore()  # accepts and forwards again

Run standalone: `python tools/tcp_proxy.py --target-port 1883 --port 18830`.
"""

from __future__ import annotations

import argparse
import logging
import select
import socket
import struct
import threading
import time

log = logging.getLogger(__name__)


class TcpProxy:
    def __init__(self, target_port: int, port: int = 0, target_host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", port))
        self._server.listen(64)
        self.port = self._server.getsockname()[1]
        self._up = threading.Event()
        self._up.set()
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._pairs: list[tuple[socket.socket, socket.socket]] = []
        self.connections = 0

    def start(self) -> TcpProxy:
        threading.Thread(target=self._accept_loop, name="tcp-proxy", daemon=True).start()
        return self

    def cut(self) -> None:
        """Reset every open connection and refuse new ones until restore()."""
        self._up.clear()
        with self._lock:
            pairs, self._pairs = self._pairs, []
        for a, b in pairs:
            _reset(a)
            _reset(b)
        log.info("proxy %d: cut", self.port)

    def restore(self) -> None:
        self._up.set()
        log.info("proxy %d: restored", self.port)

    def close(self) -> None:
        self._closed.set()
        self.cut()
        self._server.close()

    def __enter__(self) -> TcpProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                return
            if not self._up.is_set():
                _reset(client)
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                _reset(client)
                continue
            with self._lock:
                self._pairs.append((client, upstream))
                self.connections += 1
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()

    def _pump(self, a: socket.socket, b: socket.socket) -> None:
        peers = {a: b, b: a}
        try:
            while True:
                readable, _, _ = select.select([a, b], [], [], 0.5)
                for s in readable:
                    data = s.recv(65536)
                    if not data:
                        raise ConnectionError
                    peers[s].sendall(data)
        except (OSError, ValueError, ConnectionError):
            pass
        finally:
            with self._lock:
                if (a, b) in self._pairs:
                    self._pairs.remove((a, b))
            _reset(a)
            _reset(b)


def _reset(s: socket.socket) -> None:
    """Close with RST (SO_LINGER 0): the peer sees the link die, not a polite goodbye."""
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    except OSError:
        pass
    s.close()


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target-port", type=int, required=True)
    p.add_argument("--port", type=int, default=0)
    args = p.parse_args()
    proxy = TcpProxy(args.target_port, args.port).start()
    print(f"proxy 127.0.0.1:{proxy.port} -> 127.0.0.1:{args.target_port} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        proxy.close()


if __name__ == "__main__":
    main()
