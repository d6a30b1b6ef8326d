"""The README's quick start, as a new user runs it: `moderation up` on embedded
defaults, `moderation publish` a local image, log in to the console, Ctrl-C;
then a quick restart, which finds the broker on the same port."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from moderation.embedded import free_port
from moderation.embedded_stack import PREFERRED_BROKER_PORT
from tests.conftest import wait_until
from tests.support.http import http_get
from tests.support.images import encode, synthetic_image

BIN = Path(sys.executable).with_name("moderation")
STOPPED = "moderation up: stopped (worker, appeals consumer, console, embedded broker)"
BROKER_LINE = re.compile(
    r"^(?:embedded Kafka-protocol broker on|port (\d+) is in use; embedded broker on) "
    r"127\.0\.0\.1:(\d+) \(in memory\)$",
    re.M,
)


def _up_env(port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}}
    env.update(WEB_PORT=str(port), WEB_METRICS_PORT=str(free_port()))
    return env


def _start_up(cwd: Path, env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    with log_path.open("w") as log:  # the child keeps its own descriptor
        return subprocess.Popen([str(BIN), "up"], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)


def _wait_ready(base: str) -> None:
    wait_until(lambda: http_get(base + "/readyz")[0] == 200, timeout=60, interval=0.3)


def _broker_port(out: str) -> int:
    found = BROKER_LINE.search(out)
    assert found, out[-2000:]
    if found.group(1):
        assert int(found.group(1)) == PREFERRED_BROKER_PORT
    return int(found.group(2))


def _stop(proc: subprocess.Popen[bytes], sig: signal.Signals, log_path: Path, timeout: float = 40) -> str:
    """Send ``sig``; the process must stop by itself, cleanly: exit code 0, one
    last line saying what stopped, no error and no traceback on the way."""
    proc.send_signal(sig)
    try:
        code = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"`moderation up` did not stop within {timeout}s of {sig.name}") from None
    out = log_path.read_text()
    lines = [line for line in out.splitlines() if line.strip()]
    assert code == 0, out[-3000:]
    assert lines and lines[-1] == STOPPED, out[-3000:]
    assert sum("moderation up: stopped" in line for line in lines) == 1, out[-3000:]
    assert not [line for line in lines if "ERROR" in line], out[-3000:]
    assert "Traceback" not in out, out[-3000:]
    return out


def test_moderation_up_then_publish(tmp_path):
    port = free_port()
    env = _up_env(port)
    env.update(REVIEW_THRESHOLD="0.0")  # threshold 0: the upload is queued
    log_path = tmp_path / "up.log"
    proc = _start_up(tmp_path, env, log_path)
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_ready(base)
        out = log_path.read_text()
        password = re.search(r"user 'admin' with password: (\S+)", out).group(1)
        assert f"review console: {base}/" in out
        assert (tmp_path / "var" / "moderation.db").exists()
        broker_port = _broker_port(out)
        state = json.loads((tmp_path / "var" / "embedded.json").read_text())
        assert state == {"kafka_bootstrap_servers": f"127.0.0.1:{broker_port}"}

        image = tmp_path / "upload.jpg"
        image.write_bytes(encode(synthetic_image(77)))
        published = subprocess.run(
            [str(BIN), "publish", str(image)],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert published.returncode == 0, published.stderr
        event = json.loads(published.stdout)

        def queued() -> bool:
            status, body = http_get(base + "/api/v1/queue", basic_auth=f"admin:{password}")
            return status == 200 and sum(row["count"] for row in json.loads(body)["depth"]) == 1

        wait_until(queued, timeout=60, interval=0.5)
        # Every part's metrics, on the metrics port (loopback); none on the console's port.
        assert f"metrics: http://127.0.0.1:{env['WEB_METRICS_PORT']}/metrics" in out
        status, metrics = http_get(f"http://127.0.0.1:{env['WEB_METRICS_PORT']}/metrics")
        assert status == 200
        assert "moderation_queue_items" in metrics and "moderation_events_consumed_total" in metrics
        assert http_get(base + "/metrics")[0] == 404
        status, login_page = http_get(base + "/login")
        assert status == 200 and "Log in" in login_page
        assert event["path"] == str(image)

        _stop(proc, signal.SIGINT, log_path)  # Ctrl-C
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # The embedded broker went down with it, and so did the console.
    assert not (tmp_path / "var" / "embedded.json").exists()
    time.sleep(0.2)
    assert http_get(f"http://127.0.0.1:{port}/readyz")[0] == 0  # nothing answers


def test_quick_restart_keeps_the_broker_port_and_sigterm_stops_cleanly(tmp_path):
    env = _up_env(free_port())
    base = f"http://127.0.0.1:{env['WEB_PORT']}"
    first_log, second_log = tmp_path / "first.log", tmp_path / "second.log"
    proc = _start_up(tmp_path, env, first_log)
    try:
        _wait_ready(base)
        # Running for a while: the worker joined its group, clients are connected.
        wait_until(lambda: "partitions assigned" in first_log.read_text(), timeout=60, interval=0.3)
        first_port = _broker_port(first_log.read_text())
        _stop(proc, signal.SIGTERM, first_log)

        proc = _start_up(tmp_path, env, second_log)  # at once: the same port, the same database
        _wait_ready(base)
        out = second_log.read_text()
        assert "users exist" in out
        second_port = _broker_port(out)
        if first_port == PREFERRED_BROKER_PORT:
            assert second_port == PREFERRED_BROKER_PORT, out[-2000:]
        # Ctrl-C right after start-up, while the consumers are still joining their groups.
        _stop(proc, signal.SIGINT, second_log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
