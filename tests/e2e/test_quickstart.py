"""The README's quick start, as a new user runs it: `moderation up` on embedded
defaults, `moderation publish` a local image, log in to the console."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from moderation.embedded import free_port
from tests.conftest import wait_until
from tests.support.http import http_get
from tests.support.images import encode, synthetic_image
from tests.support.processes import terminate

BIN = Path(sys.executable).with_name("moderation")


def test_moderation_up_then_publish(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"KAFKA_BOOTSTRAP_SERVERS", "DATABASE_URL"}}
    port = free_port()
    env.update(WEB_PORT=str(port), REVIEW_THRESHOLD="0.0")  # threshold 0: the upload is queued
    log = (tmp_path / "up.log").open("w")
    proc = subprocess.Popen([str(BIN), "up"], cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        wait_until(lambda: http_get(base + "/readyz")[0] == 200, timeout=60, interval=0.3)
        out = (tmp_path / "up.log").read_text()
        password = re.search(r"user 'admin' with password: (\S+)", out).group(1)
        assert f"review console: {base}/" in out
        assert (tmp_path / "var" / "moderation.db").exists()

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
        status, metrics = http_get(base + "/metrics")
        assert status == 200
        assert "moderation_queue_items" in metrics
        status, login_page = http_get(base + "/login")
        assert status == 200 and "Log in" in login_page
        assert event["path"] == str(image)
    finally:
        terminate(proc, timeout=20)
        log.close()
    assert proc.returncode == 0, (tmp_path / "up.log").read_text()[-2000:]
    time.sleep(0.5)
    # The embedded broker went down with it.
    assert not (tmp_path / "var" / "embedded.json").exists()
