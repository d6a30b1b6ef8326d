"""``moderation bank ...``, ``moderation match`` and ``moderation token ...``:
bank management and matching from the shell, without a running server.

They use ``DATABASE_URL`` (default: the embedded SQLite file, migrated on first
use) and hash files exactly as the worker does, so ``moderation match`` shows
what the worker would match.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from sqlalchemy.orm import Session

from moderation.config import Settings, load_settings
from moderation.domain import BankAction, EntrySpec, EntryStatus, HashSet
from moderation.errors import InvalidInput, NotFound, RequestError

ACTIONS = [a.value for a in BankAction]
FORMATS = ["csv", "jsonl", "te", "te-hashes", "te-csv"]  # docs/exchanges.md
IMPORT_BATCH = 50_000


def register(sub: Any) -> None:
    bank = sub.add_parser("bank", help="create banks and add, import, export or withdraw hashes")
    bsub = bank.add_subparsers(metavar="ACTION")

    c = bsub.add_parser("create", help="create a bank")
    c.add_argument("name")
    c.add_argument("--action", choices=ACTIONS, required=True, help="what a match does")
    c.add_argument("--description", default="")
    c.add_argument("--pdq-distance", type=int, default=31, help="PDQ match distance 0..31 (default 31)")
    c.add_argument("--vpdq-share", type=float, default=0.8, help="share of video frames to match (0.8)")
    c.set_defaults(func=cmd_bank_create)

    ls = bsub.add_parser("list", help="list banks with entry counts")
    ls.set_defaults(func=cmd_bank_list)

    a = bsub.add_parser("add", help="hash local images or videos into a bank")
    a.add_argument("name")
    a.add_argument("paths", nargs="+", metavar="FILE")
    a.add_argument("--case-id", default="", help="case reference stored with each entry")
    a.add_argument("--note", default="")
    a.set_defaults(func=cmd_bank_add)

    i = bsub.add_parser("import", help="import entries from a CSV, JSONL or threatexchange file")
    i.add_argument("name")
    i.add_argument("file", help="path, or - for standard input")
    i.add_argument("--format", choices=FORMATS, help="default: from the file extension (.csv, .jsonl)")
    i.add_argument("--signal", help="te-hashes only: the signal of every line (pdq, md5, sha256, vpdq)")
    i.add_argument("--skip-invalid", action="store_true", help="import valid rows, report invalid ones")
    i.set_defaults(func=cmd_bank_import)

    e = bsub.add_parser("export", help="export a bank's entries")
    e.add_argument("name")
    e.add_argument("-o", "--output", default="-", help="path, or - for standard output (default)")
    e.add_argument("--format", choices=[f for f in FORMATS if f != "te-csv"], default="jsonl")
    e.add_argument("--signal", help="te-hashes only: export the entries of this signal")
    e.add_argument("--all", action="store_true", help="include disabled and withdrawn entries")
    e.set_defaults(func=cmd_bank_export)

    for verb, status, helptext in (
        ("withdraw", EntryStatus.WITHDRAWN, "withdraw entries for good (they stop matching; kept for audit)"),
        ("disable", EntryStatus.DISABLED, "stop entries matching for now"),
        ("enable", EntryStatus.ACTIVE, "let disabled or quarantined entries match again"),
    ):
        w = bsub.add_parser(verb, help=helptext)
        w.add_argument("name")
        w.add_argument("entry_ids", nargs="*", type=int, metavar="ENTRY_ID")
        w.add_argument("--case-id", help="every entry of this case")
        w.add_argument("--reason", default="")
        w.set_defaults(func=cmd_bank_status, status=status)

    m = sub.add_parser("match", help="match local files against the banks, as the worker would")
    m.add_argument("paths", nargs="+", metavar="FILE")
    m.add_argument("--json", action="store_true", help="JSON lines even on a terminal (default when piped)")
    m.set_defaults(func=cmd_match)

    token = sub.add_parser("token", help="API tokens for services and trusted flaggers")
    tsub = token.add_subparsers(metavar="ACTION")
    tc = tsub.add_parser("create", help="create a token; prints the secret once")
    tc.add_argument("name")
    tc.add_argument(
        "--scope",
        "--scopes",
        action="append",
        required=True,
        help="e.g. hashes:submit (repeatable, or comma-separated); review: a personal token (needs --user)",
    )
    tc.add_argument("--bank", help="bank that hash submissions go to")
    tc.add_argument("--user", help="a personal token (scope review): it acts as this console user")
    tc.set_defaults(func=cmd_token_create)
    tr = tsub.add_parser("revoke", help="revoke a token by name")
    tr.add_argument("name")
    tr.set_defaults(func=cmd_token_revoke)


# -- shared ----------------------------------------------------------------------------
@contextmanager
def _session(settings: Settings) -> Iterator[Session]:
    from moderation.storage.db import open_sessions

    with open_sessions(settings.database_url) as sessions, sessions() as session:
        yield session


def _fail(message: str) -> int:
    print(f"moderation: {message}", file=sys.stderr)
    return 1


def hash_file(path: str, settings: Settings, variants: bool = True) -> HashSet:
    """Hash one local file as the worker hashes an upload. Raises OSError or InvalidInput."""
    from moderation import runtime
    from moderation.media.load import load_media
    from moderation.pipeline import hash_loaded

    data = Path(path).read_bytes()
    limits = runtime.media_limits(settings)
    return hash_loaded(data, load_media(data, limits), limits, variants)


def _hash_files(paths: list[str], settings: Settings, variants: bool) -> Iterator[tuple[str, HashSet | str]]:
    for raw in paths:
        try:
            yield raw, hash_file(raw, settings, variants)
        except OSError as exc:
            yield raw, exc.strerror or str(exc)
        except InvalidInput as exc:
            yield raw, f"{exc.code}: {exc}"


# -- bank ------------------------------------------------------------------------------
def cmd_bank_create(args: argparse.Namespace) -> int:
    from moderation.storage import banks

    settings = load_settings()
    with _session(settings) as s:
        bank = banks.create_bank(
            s,
            args.name,
            args.action,
            actor="cli",
            description=args.description,
            pdq_distance=args.pdq_distance,
            vpdq_share=args.vpdq_share,
        )
        s.commit()
        print(json.dumps({"bank": bank.name, "id": bank.id, "action": bank.action}))
    return 0


def cmd_bank_list(args: argparse.Namespace) -> int:
    from moderation.storage import banks

    with _session(load_settings()) as s:
        for bank in banks.list_banks(s):
            print(json.dumps(banks.bank_dict(bank, banks.bank_stats(s, bank))))
    return 0


def cmd_bank_add(args: argparse.Namespace) -> int:
    from moderation.storage import banks

    settings = load_settings()
    failures = 0
    with _session(settings) as s:
        bank = banks.get_bank(s, args.name)
        for raw, hashed in _hash_files(args.paths, settings, variants=True):
            if isinstance(hashed, str):
                failures += 1
                print(json.dumps({"path": raw, "error": hashed}), file=sys.stderr)
                continue
            specs = [
                EntrySpec(signal, value, case_id=args.case_id, note=args.note)
                for signal, value in hashed.signals().items()
            ]
            if "trimmed" in hashed.pdq_variants:
                # A banked picture with borders must also match its copies without them.
                specs.append(
                    EntrySpec(
                        "pdq", hashed.pdq_variants["trimmed"], case_id=args.case_id, note="trimmed borders"
                    )
                )
            result = banks.add_entries(s, bank, specs, added_by="cli")
            s.commit()
            print(
                json.dumps(
                    {"path": raw, "added": result.added, "existing": result.existing, "ids": result.ids}
                )
            )
    return 1 if failures else 0


@contextmanager
def _open(path: str, mode: str) -> Iterator[TextIO]:
    if path == "-":
        yield sys.stdin if "r" in mode else sys.stdout
        return
    with open(path, mode, encoding="utf-8", newline="") as f:
        yield f  # type: ignore[misc]


def _format_of(path: str, given: str | None) -> str:
    if given:
        return given
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in ("csv", "jsonl"):
        return suffix
    raise RequestError(f"cannot tell the format of {path!r}: pass --format {'|'.join(FORMATS)}")


def cmd_bank_import(args: argparse.Namespace) -> int:
    from moderation.exchanges import formats
    from moderation.storage import banks

    settings = load_settings()
    fmt = _format_of(args.file, args.format)
    errors: list[str] = []
    with _open(args.file, "r") as stream:
        specs = list(formats.read_entries(stream, fmt, signal=args.signal, errors=errors))
    for message in errors:
        print(f"moderation: {args.file}: {message}", file=sys.stderr)
    if errors and not args.skip_invalid:
        return _fail(f"{len(errors)} invalid rows, nothing imported (use --skip-invalid to import the rest)")
    added = existing = 0
    with _session(settings) as s:
        bank = banks.get_bank(s, args.name)
        # One transaction per batch: a large file shows progress, and an
        # interrupted import is finished by running it again (it is idempotent).
        for start in range(0, len(specs), IMPORT_BATCH):
            result = banks.add_entries(s, bank, specs[start : start + IMPORT_BATCH], added_by="import")
            s.commit()
            added, existing = added + result.added, existing + result.existing
            if len(specs) > IMPORT_BATCH:
                done = min(start + IMPORT_BATCH, len(specs))
                print(f"imported {done:,} of {len(specs):,} rows", file=sys.stderr, flush=True)
    print(json.dumps({"bank": args.name, "added": added, "existing": existing, "invalid": len(errors)}))
    return 0


def cmd_bank_export(args: argparse.Namespace) -> int:
    from moderation.exchanges import formats
    from moderation.storage import banks

    with _session(load_settings()) as s, _open(args.output, "w") as out:
        bank = banks.get_bank(s, args.name)
        statuses = None if args.all else [EntryStatus.ACTIVE.value, EntryStatus.QUARANTINED.value]
        records = banks.export_records(s, bank, statuses)
        if args.signal:
            records = (r for r in records if r["signal"] == args.signal)
        formats.write_entries(records, out, args.format, signal=args.signal)
    return 0


def cmd_bank_status(args: argparse.Namespace) -> int:
    from moderation.storage import banks

    if not args.entry_ids and not args.case_id:
        return _fail("name entry ids or --case-id")
    with _session(load_settings()) as s:
        bank = banks.get_bank(s, args.name)
        entries = [banks.get_entry(s, bank, i) for i in args.entry_ids]
        if args.case_id:
            entries += banks.entries_by_case(s, bank, args.case_id)
        changed = banks.set_status(s, bank, entries, args.status, actor="cli", reason=args.reason)
        s.commit()
    print(json.dumps({"bank": args.name, "status": args.status.value, "changed": changed}))
    return 0


# -- match -----------------------------------------------------------------------------
def cmd_match(args: argparse.Namespace) -> int:
    from moderation import runtime
    from moderation.hashing.index import BankIndex
    from moderation.routing import route
    from moderation.storage.bank_feed import IndexFeeder
    from moderation.storage.db import open_sessions

    settings = load_settings()
    as_json = args.json or not sys.stdout.isatty()
    index = BankIndex(settings.pdq_match_distance)

    def progress(loaded: int) -> None:
        print(f"loaded {loaded:,} bank entries", file=sys.stderr, flush=True)

    with open_sessions(settings.database_url) as sessions:
        IndexFeeder(sessions, index).load(progress=progress)
    policy = runtime.routing_policy(settings)
    failures = 0
    for raw, hashed in _hash_files(args.paths, settings, variants=settings.pdq_variants):
        if isinstance(hashed, str):
            failures += 1
            print(json.dumps({"path": raw, "error": hashed}), file=sys.stderr)
            continue
        matches = index.match(hashed)
        verdict = route(matches, None, hashed.pdq_quality, policy)
        row = {
            "path": raw,
            "pdq": hashed.pdq,
            "pdq_quality": hashed.pdq_quality,
            "matches": [m.as_dict() for m in verdict.matches],
            "route": verdict.route.value,
            "reason": verdict.reason,
        }
        if as_json:
            print(json.dumps(row))
        else:
            print(f"{raw}: {verdict.route.value} ({verdict.reason})")
            for m in verdict.matches:
                print(
                    f"  {m.bank} entry {m.entry_id}: {m.signal} distance {m.distance}"
                    f" variant {m.variant}{' (quarantined)' if m.quarantined else ''}"
                )
    return 1 if failures else 0


# -- tokens ----------------------------------------------------------------------------
def cmd_token_create(args: argparse.Namespace) -> int:
    from moderation.storage import tokens, users

    scopes = [part.strip() for value in args.scope for part in value.split(",") if part.strip()]
    with _session(load_settings()) as s:
        try:
            user = users.get_user(s, args.user) if args.user else None
        except users.UserError as exc:
            raise NotFound(str(exc)) from None
        secret = tokens.create_token(s, args.name, scopes, bank=args.bank, created_by="cli", user=user)
        s.commit()
    print(json.dumps({"name": args.name, "scopes": scopes, "bank": args.bank, "user": args.user}))
    print(f"token (shown once): {secret}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    from moderation.storage import tokens

    with _session(load_settings()) as s:
        tokens.revoke_token(s, args.name, actor="cli")
        s.commit()
    print(json.dumps({"name": args.name, "revoked": True}))
    return 0
