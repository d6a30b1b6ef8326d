"""``moderation evidence ...``: export, verify, legal holds and retention purges.

Each command acts as ``cli:<login name>`` in the chain of custody and the audit
log. ``purge`` is meant for a daily cron job or Kubernetes CronJob; it is safe
to run twice at once (rows another run holds are skipped).
"""

from __future__ import annotations

import argparse
import getpass
import json
import os
from pathlib import Path
from typing import Any

from moderation.config import load_settings
from moderation.errors import RequestError


def register(sub: Any) -> None:
    ev = sub.add_parser("evidence", help="preserved evidence: export, verify, legal hold, purge")
    esub = ev.add_subparsers(metavar="ACTION")
    ex = esub.add_parser(
        "export", help="write one case as a ZIP bundle (media, manifest, custody, checksums)"
    )
    ex.add_argument("item_id", type=int, metavar="ITEM_ID")
    ex.add_argument("--out", required=True, metavar="FILE.zip", help="new file to write (mode 0600)")
    ex.set_defaults(func=cmd_export)
    v = esub.add_parser("verify", help="check a case's chain of custody, manifest and ciphertext")
    v.add_argument("item_id", type=int, metavar="ITEM_ID")
    v.set_defaults(func=cmd_verify)
    for verb, helptext in (
        ("hold", "put a case under legal hold: it is never purged"),
        ("release", "release a case from legal hold"),
    ):
        h = esub.add_parser(verb, help=helptext)
        h.add_argument("item_id", type=int, metavar="ITEM_ID")
        h.add_argument("--reason", required=True, help="who asked and their reference")
        h.set_defaults(func=cmd_hold, hold=verb == "hold")
    p = esub.add_parser(
        "purge", help="purge evidence past EVIDENCE_RETENTION_DAYS that is not under legal hold"
    )
    p.add_argument("--dry-run", action="store_true", help="only count what would be purged")
    p.add_argument("--batch", type=int, default=100, help="cases per transaction (default 100)")
    p.set_defaults(func=cmd_purge)


def actor() -> str:
    try:
        return f"cli:{getpass.getuser()}"
    except (OSError, KeyError):  # no login name in a bare container
        return "cli"


def cmd_export(args: argparse.Namespace) -> int:
    from moderation.storage import evidence
    from moderation.storage.db import open_sessions

    settings = load_settings()
    out = Path(args.out)
    if out.exists():
        raise RequestError(f"{out} exists; give a new file name")
    with open_sessions(settings.database_url) as sessions, sessions() as session:
        bundle = evidence.export_case(session, args.item_id, actor(), settings)
        try:
            fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except OSError as exc:
            raise RequestError(f"{out}: cannot create it ({exc.strerror or exc})") from None
        with os.fdopen(fd, "wb") as fh:
            fh.write(bundle.data)
        session.commit()  # the export is recorded once the file is written
    print(f"wrote {out} ({len(bundle.data)} bytes, sha256 {bundle.sha256})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    from moderation.storage import audit, evidence
    from moderation.storage.db import open_sessions

    settings = load_settings()
    with open_sessions(settings.database_url) as sessions, sessions() as session:
        check = evidence.verify(session, evidence.get(session, args.item_id))
        audit.record(session, actor(), "evidence.verify", args.item_id, ok=check.ok)
        session.commit()
    print(json.dumps({"item_id": args.item_id, **check.as_dict()}))
    return 0 if check.ok else 1


def cmd_hold(args: argparse.Namespace) -> int:
    from moderation.storage import evidence
    from moderation.storage.db import open_sessions

    settings = load_settings()
    with open_sessions(settings.database_url) as sessions, sessions() as session:
        evidence.set_hold(session, args.item_id, args.hold, args.reason, actor())
        session.commit()
    print(f"item {args.item_id}: legal hold {'set' if args.hold else 'released'}")
    return 0


def cmd_purge(args: argparse.Namespace) -> int:
    from moderation.storage import evidence
    from moderation.storage.db import open_sessions

    if args.batch < 1:
        raise RequestError("--batch must be at least 1")
    settings = load_settings()

    def progress(r: evidence.PurgeResult) -> None:
        print(f"purged {r.purged} of {r.expired}", flush=True)

    with open_sessions(settings.database_url) as sessions:
        result = evidence.purge_expired(
            sessions, actor(), dry_run=args.dry_run, batch_size=args.batch, progress=progress
        )
    verb = "would purge" if args.dry_run else "purged"
    count = result.expired if args.dry_run else result.purged
    print(f"{verb} {count} cases past retention; {result.held} past retention kept under legal hold")
    return 0
