"""A private tansu broker for broker-outage tests, reachable only through a
TcpProxy: it advertises the proxy's address in its metadata, so every client
(bootstrap and the connections metadata sends it to) goes through the proxy,
and cutting the proxy cuts the broker off for all of them.

Storage is in memory, so the broker itself is never restarted (its topics would
be gone); an outage is a cut proxy, or the process stopped (SIGSTOP) and
continued (SIGCONT): it then answers nothing, like a hung broker.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from moderation.embedded import _die_with_parent, free_port, tansu_binary
from tests.support.tcp_proxy import TcpProxy


class ProxiedBroker:
    def __init__(self, log_path: Path | None = None) -> None:
        self.port = free_port()
        self.proxy = TcpProxy("127.0.0.1", self.port)
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The address clients use: the proxy."""
        return self.proxy.address

    def start(self, timeout_s: float = 20.0) -> ProxiedBroker:
        self.proxy.start()
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                f"tcp://127.0.0.1:{self.port}",
                "--advertised-listener-url",
                f"tcp://127.0.0.1:{self.proxy.port}",
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            preexec_fn=_die_with_parent if sys.platform == "linux" else None,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"tansu exited with {self.process.returncode}"
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise AssertionError(f"tansu did not listen on {self.port} within {timeout_s}s")

    def freeze(self) -> None:
        """SIGSTOP: the broker hangs (connections stay open, nothing answers)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.proxy.close()

    def __enter__(self) -> ProxiedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
