"""A private tansu broker for broker-outage tests, reachable only through a
TcpProxy: it advertises the proxy's address in its metadata, so every client
(bootstrap and the connections metadata sends it to) goes through the proxy,
and cutting the proxy cuts the broker off for all of them.

Storage is in memory: an outage is a cut proxy, or the process stopped
(SIGSTOP) and continued (SIGCONT): it then answers nothing, like a hung broker.
``replace()`` kills the broker and starts a new, empty one at the same address
(a broker lost with its disks, or a cluster rebuilt): topics, committed offsets,
groups and producer ids are gone, and whoever runs it creates the topics again.
"""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

from moderation.embedded import EmbeddedBroker, free_port
from tests.support.tcp_proxy import TcpProxy


class ProxiedBroker:
    def __init__(self, log_path: Path | None = None) -> None:
        port = free_port()
        self.proxy = TcpProxy("127.0.0.1", port)
        self.broker = EmbeddedBroker(port, log_path, advertised_port=self.proxy.port)

    @property
    def process(self) -> subprocess.Popen[bytes] | None:
        return self.broker.process

    @property
    def bootstrap(self) -> str:
        """The address clients use: the proxy."""
        return self.proxy.address

    def start(self, timeout_s: float = 20.0) -> ProxiedBroker:
        self.proxy.start()
        self.broker.start(timeout_s)
        return self

    def freeze(self) -> None:
        """SIGSTOP: the broker hangs (connections stay open, nothing answers)."""
        assert self.process is not None
        self.process.send_signal(signal.SIGSTOP)

    def replace(self, timeout_s: float = 20.0) -> None:
        """SIGKILL the broker, then start a new empty one on the same port."""
        self.kill()
        self.start_empty(timeout_s)

    def kill(self) -> None:
        """SIGKILL the broker (the proxy keeps accepting, then resets: refused upstream)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def start_empty(self, timeout_s: float = 20.0) -> None:
        """A new, empty broker on the killed one's port, advertising the same proxy."""
        old = self.broker
        self.broker = EmbeddedBroker(old.port, old.log_path, advertised_port=self.proxy.port)
        self.broker.start(timeout_s)

    def thaw(self) -> None:
        assert self.process is not None
        self.process.send_signal(signal.SIGCONT)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.broker.stop()
        self.proxy.close()

    def __enter__(self) -> ProxiedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
