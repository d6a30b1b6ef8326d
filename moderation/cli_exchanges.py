"""``moderation exchange sync|feedback``: StopNCII and NCMEC hash lists.

``sync`` fetches changes since the stored checkpoint into the exchange's bank
(``STOPNCII_BANK`` / ``NCMEC_BANK``), one transaction per page, printing
progress; run it from cron or a Kubernetes CronJob. ``feedback`` sends the
Blocked / NotBlocked reports owed after decisions on matched uploads.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from moderation.config import Settings, load_settings
from moderation.errors import RequestError

EXCHANGES = ("stopncii", "ncmec")


def register(sub: Any) -> None:
    ex = sub.add_parser("exchange", help="sync StopNCII / NCMEC hash lists and send feedback")
    esub = ex.add_subparsers(metavar="ACTION")
    s = esub.add_parser("sync", help="fetch new and withdrawn hashes since the last sync")
    s.add_argument("exchange", choices=EXCHANGES)
    s.add_argument("--bank", help="bank to sync into (default STOPNCII_BANK / NCMEC_BANK)")
    s.set_defaults(func=cmd_exchange_sync)
    f = esub.add_parser("feedback", help="send pending Blocked / NotBlocked feedback (StopNCII)")
    f.add_argument("exchange", choices=("stopncii",))
    f.add_argument("--limit", type=int, default=500)
    f.set_defaults(func=cmd_exchange_feedback)


def make_client(name: str, settings: Settings) -> Any:
    if name == "stopncii":
        from moderation.exchanges.stopncii import StopNCIIExchange

        return StopNCIIExchange(
            subscription_key=settings.stopncii_subscription_key,
            fetch_function_key=settings.stopncii_fetch_function_key,
            feedback_function_key=settings.stopncii_feedback_function_key,
            base_url=settings.stopncii_api_url,
        )
    from moderation.exchanges.ncmec import NCMECExchange

    try:
        members = [int(m) for m in settings.ncmec_member_ids.split(",") if m.strip()]
    except ValueError:
        raise RequestError(f"NCMEC_MEMBER_IDS={settings.ncmec_member_ids!r}: expected numbers") from None
    return NCMECExchange(
        username=settings.ncmec_username,
        password=settings.ncmec_password,
        base_url=settings.ncmec_api_url,
        only_member_ids=members,
    )


@contextmanager
def _store(settings: Settings) -> Iterator[Any]:
    from moderation.storage.db import open_sessions
    from moderation.storage.exchange_store import SqlExchangeStore

    with open_sessions(settings.database_url) as sessions:
        yield SqlExchangeStore(sessions)


def cmd_exchange_sync(args: argparse.Namespace) -> int:
    from moderation.exchanges.sync import SyncResult, sync_exchange

    settings = load_settings()
    client = make_client(args.exchange, settings)
    bank = args.bank or (settings.stopncii_bank if args.exchange == "stopncii" else settings.ncmec_bank)

    def progress(r: SyncResult) -> None:
        print(
            f"{args.exchange}: page {r.batches}: {r.added} added, {r.updated} updated, "
            f"{r.withdrawn} withdrawn, {r.skipped} skipped",
            file=sys.stderr,
        )

    with _store(settings) as store:
        result = sync_exchange(client, store, bank, progress=progress)
    print(
        json.dumps(
            {
                "exchange": args.exchange,
                "bank": bank,
                "added": result.added,
                "updated": result.updated,
                "withdrawn": result.withdrawn,
                "skipped": result.skipped,
                "ignored": result.ignored,
                "pages": result.batches,
            }
        )
    )
    return 0


def cmd_exchange_feedback(args: argparse.Namespace) -> int:
    from moderation.exchanges.sync import sync_feedback

    settings = load_settings()
    client = make_client(args.exchange, settings)
    with _store(settings) as store:
        result = sync_feedback(client, store, limit=args.limit)
    print(json.dumps({"exchange": args.exchange, "sent": result.sent, "rejected": result.rejected}))
    return 0
