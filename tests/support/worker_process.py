"""``moderation worker`` as a child process that a test can kill, stop and restart.

    proc = WorkerProcess(worker_env(settings), tmp_path / "w1.log").start()
    proc.wait_ready()
    proc.kill()          # SIGKILL: a crash, nothing cleaned up
    proc.start()         # the same worker again (appends to the same log)
    proc.terminate()     # SIGTERM: the graceful path; returns the exit code

The process runs tests/support/worker_main.py: the real CLI entry plus the test
hooks described there (slow classifier, consumer overrides).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from typing import Any

from moderation.config import Settings, env_names
from moderation.embedded import free_port
from tests.support.http import http_get

REPO = Path(__file__).resolve().parents[2]


def worker_env(settings: Settings, **extra: Any) -> dict[str, str]:
    """The environment that makes ``moderation worker`` load ``settings``
    (every field, as its environment variable), plus ``extra`` (names as given,
    values turned into strings; dicts become JSON)."""
    known = set(env_names())
    env = {k: v for k, v in os.environ.items() if k not in known and not k.endswith("_FILE")}
    for f in fields(Settings):
        value = getattr(settings, f.name)
        env[f.name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
    env["METRICS_PORT"] = str(free_port())
    env["LOG_FORMAT"] = "json"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH", "")]))
    for key, value in extra.items():
        env[key] = json.dumps(value) if isinstance(value, dict) else str(value)
    return env


class WorkerProcess:
    def __init__(self, env: Mapping[str, str], log_path: Path, name: str = "worker") -> None:
        self.env = dict(env)
        self.log_path = log_path
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> WorkerProcess:
        assert not self.alive, f"{self.name} is already running"
        self.env["METRICS_PORT"] = str(free_port())  # each run its own: a killed one may linger
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "tests.support.worker_main"],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.starts += 1
        return self

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.env['METRICS_PORT']}"

    def wait_ready(self, timeout: float = 60.0) -> float:
        """Wait until /healthz answers (the worker loop runs); seconds waited."""
        started = time.monotonic()
        deadline = started + timeout
        while time.monotonic() < deadline:
            if not self.alive:
                raise AssertionError(f"{self.name} exited: {self.log_tail()}")
            if http_get(self.base_url + "/healthz")[0] == 200:
                return time.monotonic() - started
            time.sleep(0.1)
        raise AssertionError(f"{self.name} not ready within {timeout}s: {self.log_tail()}")

    def kill(self) -> None:
        """SIGKILL and reap: a crash."""
        if self.proc is not None and self.alive:
            self.proc.kill()
            self.proc.wait()
            self.kills += 1

    def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM, wait for the exit (SIGKILL after ``timeout``); the exit code."""
        assert self.proc is not None
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def signal(self, signum: int) -> None:
        if self.alive:
            os.kill(self.pid, signum)

    def stop(self) -> None:
        """Whatever state it is in, make sure it is gone (test teardown)."""
        if self.proc is not None and self.alive:
            self.signal(signal.SIGCONT)
            self.terminate(timeout=10)

    # -- observation ----------------------------------------------------------------
    def rss_kib(self) -> int:
        """Resident set size of the process, KiB (0 when not running)."""
        if not self.alive:
            return 0
        try:
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        except OSError:
            return 0
        return 0

    def log_lines(self) -> list[dict[str, Any]]:
        """The JSON log records written so far (all runs of this worker)."""
        out: list[dict[str, Any]] = []
        if not self.log_path.exists():
            return out
        for line in self.log_path.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass
        return out

    def log_tail(self, chars: int = 3000) -> str:
        return self.log_path.read_text(errors="replace")[-chars:] if self.log_path.exists() else ""

    def __enter__(self) -> WorkerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


class WorkerPool:
    """Several workers of one consumer group (the same environment), to crash,
    add and remove at random."""

    def __init__(self, env: Mapping[str, str], log_dir: Path, prefix: str = "w") -> None:
        self.env = dict(env)
        self.log_dir = log_dir
        self.prefix = prefix
        self.workers: list[WorkerProcess] = []

    def add(self) -> WorkerProcess:
        worker = WorkerProcess(self.env, self.log_dir / f"{self.prefix}{len(self.workers)}.log")
        worker.name = f"{self.prefix}{len(self.workers)}"
        self.workers.append(worker.start())
        return worker

    def alive(self) -> list[WorkerProcess]:
        return [w for w in self.workers if w.alive]

    def dead(self) -> list[WorkerProcess]:
        return [w for w in self.workers if not w.alive]

    @property
    def kills(self) -> int:
        return sum(w.kills for w in self.workers)

    @property
    def starts(self) -> int:
        return sum(w.starts for w in self.workers)

    def stop_all(self) -> None:
        for w in self.workers:
            w.stop()

    def log_lines(self) -> list[dict[str, Any]]:
        return [line for w in self.workers for line in w.log_lines()]

    def tails(self, chars: int = 1500) -> str:
        return "\n".join(f"--- {w.name}\n{w.log_tail(chars)}" for w in self.workers)

    def __enter__(self) -> WorkerPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop_all()
