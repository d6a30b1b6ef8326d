"""What authentication costs API clients of the review queue: claims and
decisions per second with many concurrent clients using HTTP Basic, personal
API tokens (scope review) or console sessions.

    .venv/bin/python bench/api_auth.py [--clients 20] [--seconds 20] [--items 12000]
                                       [--modes basic,token,session]

Creates a fresh PostgreSQL database (``TEST_DATABASE_URL`` or 127.0.0.1:5432)
with ``--items`` pending items and one moderator per client (passwords hashed
with the default scrypt, as `moderation user create` does), serves the app with
waitress and 8 request threads, as ``moderation web`` does (decisions go to the
outbox and a sweeper publishes them to a sender that drops them), and runs each
mode in turn: ``--clients`` threads in a separate process, each a moderator
with a keep-alive connection, claim the next item (``POST /api/v1/queue/claim``)
and allow it (``POST .../decision``) for ``--seconds``. Sessions log in through
the form once per client (``LOGIN_ATTEMPTS_PER_MINUTE`` is raised to 1000: every
client comes from 127.0.0.1, like an office behind one NAT address); tokens are
created with ``tokens.create_token`` (a mode the code under test lacks is
reported as unsupported, so the same script measures older code). Prints one
JSON object per mode and, last, one with all of them. Not a test: nothing is
asserted.
"""

from __future__ import annotations

import argparse
import base64
import http.client
import json
import multiprocessing as mp
import os
import re
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from scratch_db import scratch_database  # noqa: E402
from sqlalchemy import text  # noqa: E402

PASSWORD = "bench password 123"
ADMIN_URL = os.environ.get("TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def seed(url: str, items: int, clients: int) -> tuple[list[str], dict[str, str]]:
    """Pending items, one moderator per client and (where supported) a personal token each."""
    from moderation.storage import tokens, users
    from moderation.storage.db import make_engine, make_sessionmaker

    engine = make_engine(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO items (event_id, content_id, uploader_id, media_url, media_type, event, sha256,"
                " md5, pdq, pdq_quality, model_version, matches, route, reason, priority, state, tier,"
                " created_at, due_at, rank_at)"
                " SELECT 'e' || g, 'c' || g, 'u', 'http://x', 'image/jpeg', '{}',"
                " md5(g::text) || md5(g::text), md5(g::text), repeat('0', 64), 90, 'm1', '[]', 'review',"
                " 'classifier_score', 50, 'pending',"
                " 'moderator', now() - interval '1 hour', now() + interval '47 hours',"
                " now() - interval '1 hour' + g * interval '1 millisecond'"
                " FROM generate_series(1, :n) AS g"
            ),
            {"n": items},
        )
        conn.execute(text("ANALYZE items"))
    names = [f"mod{n:02}" for n in range(clients)]
    secrets: dict[str, str] = {}
    with make_sessionmaker(engine)() as s:
        for name in names:
            user = users.create_user(s, name, PASSWORD, "moderator")
            if hasattr(tokens, "REVIEW"):
                secrets[name] = tokens.create_token(
                    s, f"{name}/bench", [tokens.REVIEW], created_by="bench", user=user
                )
        s.commit()
    engine.dispose()
    return names, secrets


def serve(url: str) -> tuple[Any, int]:
    """The app on waitress (8 threads, as `moderation web`), in this process."""
    from prometheus_client import CollectorRegistry
    from waitress.server import create_server

    from moderation.config import load_settings
    from moderation.metrics import Metrics
    from moderation.web import create_app

    settings = load_settings(
        {},
        database_url=url,
        secret_key="bench-secret",
        dev_mode=True,  # plain http: the `session` cookie, not __Host-session
        break_after_items=0,
        break_after_revealed_seconds=0,
        # Every client logs in from 127.0.0.1: an office behind one NAT address.
        login_attempts_per_minute=1000,
    )
    app = create_app(settings, metrics=Metrics(CollectorRegistry()), send_decision=lambda _k, _v: None)
    app.extensions["moderation"].publisher.start_sweeper()
    server = create_server(app, host="127.0.0.1", port=0, threads=8, ident="bench")
    threading.Thread(target=server.run, name="waitress", daemon=True).start()
    return server, int(server.effective_port)


def stop_server(server: Any) -> None:
    from waitress import wasyncore

    # From the server's own loop (its trigger), which then ends with an empty socket map.
    server.trigger.pull_trigger(lambda: wasyncore.close_all(server._map, ignore_all=True))
    time.sleep(0.5)
    server.task_dispatcher.shutdown()


# -- clients (a separate process) ------------------------------------------------------
class Client:
    def __init__(self, port: int, mode: str, name: str, secret: str | None) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        self.headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if mode == "basic":
            raw = base64.b64encode(f"{name}:{PASSWORD}".encode()).decode()
            self.headers["Authorization"] = f"Basic {raw}"
        elif mode == "token":
            self.headers["Authorization"] = f"Bearer {secret}"
        else:
            self._login(name)

    def send(
        self, method: str, path: str, body: bytes, headers: dict[str, str]
    ) -> tuple[int, dict[str, str], bytes]:
        self.conn.request(method, path, body=body, headers=headers)
        resp = self.conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()

    def _login(self, name: str) -> None:
        _, headers, page = self.send("GET", "/login", b"", {})
        cookie = headers["set-cookie"].split(";", 1)[0]
        csrf = re.search(rb'name="csrf_token" value="([^"]+)"', page).group(1).decode()  # type: ignore[union-attr]
        form = urlencode({"username": name, "password": PASSWORD, "csrf_token": csrf}).encode()
        status, headers, _ = self.send(
            "POST", "/login", form, {"Cookie": cookie, "Content-Type": "application/x-www-form-urlencoded"}
        )
        assert status == 302, f"login of {name}: {status}"
        cookie = headers["set-cookie"].split(";", 1)[0]
        _, headers, page = self.send("GET", "/", b"", {"Cookie": cookie})
        if "set-cookie" in headers:  # the page stored its CSRF token in the session
            cookie = headers["set-cookie"].split(";", 1)[0]
        csrf = re.search(rb'name="csrf-token" content="([^"]+)"', page).group(1).decode()  # type: ignore[union-attr]
        self.headers.update({"Cookie": cookie, "X-CSRF-Token": csrf})

    def call(self, path: str, body: dict[str, Any]) -> tuple[int, bytes]:
        status, _, data = self.send("POST", path, json.dumps(body).encode(), self.headers)
        return status, data


def client_loop(
    port: int, mode: str, name: str, secret: str | None, start: float, stop: float, out: Any
) -> None:
    counts = {"claims": 0, "decisions": 0, "errors": 0, "throttled": 0}
    latencies: list[float] = []
    try:
        client = Client(port, mode, name, secret)
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        out.put({"name": name, "error": repr(exc)})
        return
    while time.time() < start:
        time.sleep(0.01)
    while time.time() < stop:
        t0 = time.perf_counter()
        status, data = client.call("/api/v1/queue/claim", {})
        if status != 200:
            counts["throttled" if status == 429 else "errors"] += 1
            if status == 204:
                break  # the queue ran dry
            time.sleep(0.05)
            continue
        counts["claims"] += 1
        item_id = json.loads(data)["id"]
        status, _ = client.call(
            f"/api/v1/items/{item_id}/decision", {"action": "allow", "reason": "not_violating"}
        )
        if status == 201:
            counts["decisions"] += 1
            latencies.append(time.perf_counter() - t0)
        else:
            counts["throttled" if status == 429 else "errors"] += 1
    out.put({"name": name, **counts, "latencies": latencies})


def run_clients(
    port: int, mode: str, names: list[str], secrets: dict[str, str], seconds: float, out: Any
) -> None:
    """In the child process: one thread per client, all starting together after logging in."""
    start = time.time() + 3 + (0.1 * len(names) if mode == "session" else 0)
    stop = start + seconds
    threads = [
        threading.Thread(target=client_loop, args=(port, mode, n, secrets.get(n), start, stop, out))
        for n in names
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def measure(
    port: int, mode: str, names: list[str], secrets: dict[str, str], seconds: float
) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    cpu0 = time.process_time()
    proc = ctx.Process(target=run_clients, args=(port, mode, names, secrets, seconds, out))
    proc.start()
    results = [out.get(timeout=seconds + 300) for _ in names]
    proc.join()
    server_cpu = time.process_time() - cpu0  # the server's process (waitress threads, sweeper)
    failed = [r for r in results if "error" in r]
    if failed:
        return {"mode": mode, "error": failed[0]["error"]}
    latencies = sorted(x for r in results for x in r["latencies"])
    decisions = sum(r["decisions"] for r in results)
    return {
        "mode": mode,
        "clients": len(names),
        "seconds": seconds,
        "claims_per_s": round(sum(r["claims"] for r in results) / seconds, 1),
        "decisions_per_s": round(decisions / seconds, 1),
        "claim_and_decide_p50_ms": round(statistics.median(latencies) * 1000, 1) if latencies else None,
        "claim_and_decide_p95_ms": round(latencies[int(len(latencies) * 0.95)] * 1000, 1)
        if latencies
        else None,
        "server_cpu_ms_per_decision": round(server_cpu * 1000 / decisions, 1) if decisions else None,
        "errors": sum(r["errors"] for r in results),
        "throttled_429": sum(r["throttled"] for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=20)
    parser.add_argument("--items", type=int, default=12_000)
    parser.add_argument("--modes", default="basic,token,session")
    args = parser.parse_args()
    modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    results = []
    with scratch_database(ADMIN_URL.replace("postgresql+psycopg://", "postgresql://")) as url:
        url = url.replace("postgresql://", "postgresql+psycopg://")
        log(f"seeding {args.items} items and {args.clients} moderators")
        names, secrets = seed(url, args.items, args.clients)
        server, port = serve(url)
        for mode in modes:
            if mode == "token" and not secrets:
                result: dict[str, Any] = {"mode": mode, "unsupported": "this code has no personal API tokens"}
            else:
                log(f"{mode}: {args.clients} clients for {args.seconds:.0f} s")
                result = measure(port, mode, names, secrets, args.seconds)
            print(json.dumps(result), flush=True)
            results.append(result)
        stop_server(server)
    print(json.dumps({"bench": "api_auth", "cpus": os.cpu_count(), "results": results}), flush=True)


if __name__ == "__main__":
    main()
