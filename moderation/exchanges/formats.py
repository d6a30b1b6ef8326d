"""Bank entry files: CSV, JSON Lines and python-threatexchange's text formats.

Formats (the ``fmt`` argument); docs/exchanges.md has examples:

``csv``
    A header row, then one entry per row (UTF-8, RFC 4180 quoting; a BOM is
    tolerated). Import columns, in any order: ``signal`` and ``value``
    (required), ``source_ref``, ``case_id``, ``note``, ``added_by``. Export
    writes those six plus ``entry_id``, ``status`` and ``added_at`` (ISO 8601
    UTC); import accepts and ignores those three, so an export re-imports as it
    is. Any other column is an error: a misspelt column must not drop data.
``jsonl``
    One JSON object per line with the same keys; values are strings (null
    reads as empty).
``te``
    ``<signal type> <value>`` per line, with python-threatexchange's signal type
    names: ``pdq``, ``vpdq``, ``video_md5`` (our ``md5``), ``video_sha256`` (our
    ``sha256``). It is what ``threatexchange hash`` prints (cli/hash_cmd.py,
    including the rotation name that ``--photo-preprocess rotations`` puts
    first), what ``threatexchange dataset -P`` prints (cli/dataset_cmd.py; text
    after the value, e.g. ``'collab' POSITIVE_CLASS``, becomes the note), and
    what its ``local_file`` exchange reads and appends to
    (exchanges/impl/file_api.py). Only signal and value are written.
``te-hashes``
    Bare values, one per line, all of one signal (``signal=``): what
    ``threatexchange match --hashes`` reads (cli/match_cmd.py,
    ``_match_hashes``) and a ``local_file`` collaboration with
    ``--signal-type`` reads.
``te-csv``
    ``threatexchange dataset -P --csv`` output (cli/dataset_cmd.py): columns
    signal_type, signal_str, collab, category, tags. Read only.

Reading validates every line (signal known, value well formed, fields within
the column sizes) and reports each bad line by number. Two modes:

- strict (default): all or nothing. ``read_entries`` reads the whole input
  before returning and raises ``EntryFileError`` listing every bad line, so a
  caller imports nothing from a file with errors;
- collecting (``errors=[]``): yields the valid entries lazily, and appends
  ``"line N: problem"`` to ``errors`` (and logs it) for each bad line. The
  caller decides: import the valid ones (``--skip-invalid``), or report the
  errors and import nothing.

A file-level problem (a CSV header with missing or unknown columns) raises
``EntryFileError`` in both modes.

Writing takes ``EntrySpec``s, ``ExportRecord``s or mappings (a storage row as a
dict: the ``EXPORT_FIELDS`` keys, ``id`` accepted for ``entry_id``, other keys
ignored).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TextIO

from moderation.domain import EntrySpec
from moderation.errors import RequestError
from moderation.hashing.signals import make_entry
from moderation.spreadsheet import formula_safe, unguard

log = logging.getLogger(__name__)

FORMATS = ("csv", "jsonl", "te", "te-hashes", "te-csv")
ENTRY_FIELDS = ("signal", "value", "source_ref", "case_id", "note", "added_by")
EXPORT_FIELDS = (*ENTRY_FIELDS, "entry_id", "status", "added_at")
# Our signal -> python-threatexchange SignalType.get_name() (signal_type/pdq/signal.py,
# signal_type/md5.py, signal_type/sha256.py, extensions/vpdq/vpdq.py). Its md5 and
# sha256 types are named for video, but both are plain digests of the file's bytes.
TE_SIGNAL_NAMES = {"pdq": "pdq", "vpdq": "vpdq", "md5": "video_md5", "sha256": "video_sha256"}
_TE_READ_NAMES = {**{te: ours for ours, te in TE_SIGNAL_NAMES.items()}, "md5": "md5", "sha256": "sha256"}
# content_type/content_base.py RotationType names, printed before the signal type
# by `threatexchange hash --photo-preprocess rotations`.
_ROTATIONS = frozenset(
    {"ORIGINAL", "ROTATE90", "ROTATE180", "ROTATE270", "FLIPX", "FLIPY", "FLIPPLUS1", "FLIPMINUS1"}
)
_TE_CSV_COLUMNS = ("signal_type", "signal_str", "collab", "category", "tags")
_SHOWN_PROBLEMS = 20
_CSV_FIELD_LIMIT = 64 * 1024 * 1024  # vPDQ values of long videos exceed csv's 128 KiB default


@dataclass(frozen=True)
class LineProblem:
    """One bad line: its 1-based line number in the input, and what is wrong."""

    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


class EntryFileError(RequestError):
    """An entry file has bad lines; ``problems`` lists every one. Nothing was
    imported."""

    code = "invalid_entry_file"

    def __init__(self, fmt: str, problems: Sequence[LineProblem]) -> None:
        self.problems = list(problems)
        shown = "\n".join(f"  {p}" for p in self.problems[:_SHOWN_PROBLEMS])
        more = len(self.problems) - _SHOWN_PROBLEMS
        tail = f"\n  ... and {more} more" if more > 0 else ""
        super().__init__(
            f"{len(self.problems)} invalid line(s) in the {fmt} input; nothing was imported:\n{shown}{tail}"
        )


@dataclass(frozen=True)
class ExportRecord:
    """A bank entry as exported: the spec plus what the bank knows about it."""

    entry: EntrySpec
    entry_id: int | None = None
    status: str = ""
    added_at: datetime | None = None  # naive means UTC


_Parsed = EntrySpec | LineProblem


def read_entries(
    stream: TextIO,
    fmt: str,
    *,
    signal: str | None = None,
    errors: list[str] | None = None,
) -> Iterator[EntrySpec]:
    """Entries from ``stream`` in format ``fmt`` (module docstring).

    ``signal`` is required for ``te-hashes`` and ignored otherwise. Without
    ``errors`` (strict) raises ``EntryFileError`` before returning if any line
    is bad; with ``errors`` yields the valid entries and appends one message
    per bad line. An unknown ``fmt`` raises ``RequestError``."""
    parsed = _parser(fmt, signal)(stream)
    if errors is not None:
        return _collecting(parsed, fmt, errors)
    entries: list[EntrySpec] = []
    found: list[LineProblem] = []
    for item in parsed:
        if isinstance(item, LineProblem):
            found.append(item)
        else:
            entries.append(item)
    if found:
        raise EntryFileError(fmt, found)
    return iter(entries)


Exportable = EntrySpec | ExportRecord | Mapping[str, object]


def write_entries(
    records: Iterable[Exportable], stream: TextIO, fmt: str, *, signal: str | None = None
) -> int:
    """Write ``records`` to ``stream`` in ``fmt``; returns how many were written.

    ``csv`` and ``jsonl`` always carry all of ``EXPORT_FIELDS`` (empty or null
    where a plain ``EntrySpec`` has no id, status or time). ``te-hashes`` needs
    every record to have one signal (``signal``, or the first record's);
    otherwise, like an unknown or read-only ``fmt``, it raises ``RequestError``."""
    if fmt == "te-csv":
        raise RequestError("te-csv is read only (threatexchange writes it); export as te or csv")
    if fmt not in FORMATS:
        raise RequestError(f"unknown entry file format {fmt!r}: expected one of {', '.join(FORMATS)}")
    writer = csv.writer(stream)  # CRLF rows: a lone CR or LF in a field gets quoted
    if fmt == "csv":
        writer.writerow(EXPORT_FIELDS)
    count = 0
    for record in records:
        row = _export_row(record)
        if fmt == "csv":
            writer.writerow([formula_safe("" if row[k] is None else row[k]) for k in EXPORT_FIELDS])
        elif fmt == "jsonl":
            stream.write(json.dumps(row, ensure_ascii=False) + "\n")
        elif fmt == "te":
            name = TE_SIGNAL_NAMES.get(str(row["signal"]))
            if name is None:
                raise RequestError(f"record {count + 1}: no threatexchange name for signal {row['signal']!r}")
            stream.write(f"{name} {row['value']}\n")
        else:
            signal = signal or str(row["signal"])
            if row["signal"] != signal:
                raise RequestError(
                    f"te-hashes holds one signal type: record {count + 1} is {row['signal']}, "
                    f"expected {signal}; export one signal at a time or use the te format"
                )
            stream.write(f"{row['value']}\n")
        count += 1
    return count


# -- reading ---------------------------------------------------------------------------------------
def _parser(fmt: str, signal: str | None) -> Callable[[TextIO], Iterator[_Parsed]]:
    if fmt == "csv":
        return _read_csv
    if fmt == "jsonl":
        return _read_jsonl
    if fmt == "te":
        return _read_te
    if fmt == "te-csv":
        return _read_te_csv
    if fmt == "te-hashes":
        if not signal:
            raise RequestError("the te-hashes format has no signal column: say which signal the values are")
        one_signal = signal
        return lambda stream: _read_te_hashes(stream, one_signal)
    raise RequestError(f"unknown entry file format {fmt!r}: expected one of {', '.join(FORMATS)}")


def _collecting(parsed: Iterator[_Parsed], fmt: str, errors: list[str]) -> Iterator[EntrySpec]:
    for item in parsed:
        if isinstance(item, LineProblem):
            log.warning("%s import: %s", fmt, item)
            errors.append(str(item))
        else:
            yield item


def _entry(line: int, fields: Mapping[str, object]) -> _Parsed:
    text: dict[str, str] = {}
    for key in ENTRY_FIELDS:
        raw = fields.get(key)
        if raw is None:
            raw = ""
        if not isinstance(raw, str):
            return LineProblem(line, f"{key} must be a string, got {type(raw).__name__}")
        text[key] = raw
    if not text["signal"].strip():
        return LineProblem(line, "signal is missing")
    if not text["value"].strip():
        return LineProblem(line, "value is missing")
    try:
        return make_entry(
            text["signal"],
            text["value"],
            source_ref=text["source_ref"],
            case_id=text["case_id"],
            note=text["note"],
            added_by=text["added_by"],
        )
    except ValueError as exc:
        return LineProblem(line, str(exc))


def _csv_rows(stream: TextIO) -> Iterator[tuple[int, list[str]]]:
    """(line number where the record starts, fields) of each non-blank record.
    Raises _CsvSyntax on malformed CSV: the reader can't resync after it."""
    csv.field_size_limit(max(csv.field_size_limit(), _CSV_FIELD_LIMIT))
    reader = csv.reader(stream)
    while True:
        start = reader.line_num + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise _CsvSyntax(start, str(exc)) from None
        if any(cell.strip() for cell in row):
            yield start, row


class _CsvSyntax(Exception):
    def __init__(self, line: int, message: str) -> None:
        self.problem = LineProblem(line, f"CSV syntax error ({message}); the rest of the input was not read")


def _header(rows: Iterator[tuple[int, list[str]]], fmt: str) -> tuple[int, list[str]] | None:
    try:
        line, header = next(rows)
    except StopIteration:
        return None
    except _CsvSyntax as exc:
        raise EntryFileError(fmt, [exc.problem]) from None
    columns = [cell.strip().lower() for cell in header]
    columns[0] = columns[0].lstrip("\ufeff")
    return line, columns


def _read_csv(stream: TextIO) -> Iterator[_Parsed]:
    rows = _csv_rows(stream)
    found = _header(rows, "csv")
    if found is None:
        return
    line, columns = found
    unknown = [c for c in columns if c not in EXPORT_FIELDS]
    missing = [c for c in ("signal", "value") if c not in columns]
    repeated = sorted({c for c in columns if columns.count(c) > 1})
    if unknown or missing or repeated:
        parts = []
        if missing:
            parts.append(f"missing column(s) {', '.join(missing)}")
        if unknown:
            parts.append(f"unknown column(s) {', '.join(repr(c) for c in unknown)}")
        if repeated:
            parts.append(f"repeated column(s) {', '.join(repeated)}")
        problem = "header: " + "; ".join(parts) + f" (columns: {', '.join(EXPORT_FIELDS)})"
        raise EntryFileError("csv", [LineProblem(line, problem)])
    try:
        for line, row in rows:
            if len(row) > len(columns):
                yield LineProblem(line, f"{len(row)} fields but the header has {len(columns)}")
                continue
            yield _entry(line, {c: unguard(v) for c, v in zip(columns, row, strict=False)})
    except _CsvSyntax as exc:
        yield exc.problem


def _read_jsonl(stream: TextIO) -> Iterator[_Parsed]:
    for line, raw in enumerate(stream, 1):
        if not raw.strip():
            continue
        try:
            obj = json.loads(raw)
        except ValueError as exc:
            yield LineProblem(line, f"not JSON ({exc})")
            continue
        if not isinstance(obj, dict):
            yield LineProblem(line, f"expected a JSON object, got {type(obj).__name__}")
            continue
        unknown = sorted(k for k in obj if k not in EXPORT_FIELDS)
        if unknown:
            yield LineProblem(line, f"unknown key(s) {', '.join(repr(k[:40]) for k in unknown)}")
            continue
        yield _entry(line, obj)


def _read_te(stream: TextIO) -> Iterator[_Parsed]:
    for line, raw in enumerate(stream, 1):
        text = raw.strip()
        if not text:
            continue
        name, _, rest = text.partition(" ")
        if name in _ROTATIONS:
            name, _, rest = rest.strip().partition(" ")
        signal = _TE_READ_NAMES.get(name)
        if signal is None:
            yield LineProblem(
                line, f"unsupported signal type {name[:40]!r}: expected one of {', '.join(_TE_READ_NAMES)}"
            )
            continue
        rest = rest.strip()
        # A vPDQ value is JSON with spaces in it: the rest of the line. Others are one token.
        value, note = rest, ""
        if signal != "vpdq":
            value, _, note = rest.partition(" ")
        yield _entry(line, {"signal": signal, "value": value, "note": note})


def _read_te_hashes(stream: TextIO, signal: str) -> Iterator[_Parsed]:
    for line, raw in enumerate(stream, 1):
        if raw.strip():
            yield _entry(line, {"signal": signal, "value": raw})


def _read_te_csv(stream: TextIO) -> Iterator[_Parsed]:
    rows = _csv_rows(stream)
    found = _header(rows, "te-csv")
    if found is None:
        return
    line, columns = found
    missing = [c for c in _TE_CSV_COLUMNS[:2] if c not in columns]
    if missing:
        raise EntryFileError("te-csv", [LineProblem(line, f"header: missing column(s) {', '.join(missing)}")])
    try:
        for line, row in rows:
            cells = dict(zip(columns, row, strict=False))
            name = cells.get("signal_type", "").strip()
            signal = _TE_READ_NAMES.get(name)
            if signal is None:
                yield LineProblem(line, f"unsupported signal type {name[:40]!r}")
                continue
            note = " ".join(
                f"{key}={cells[key].strip()}" for key in _TE_CSV_COLUMNS[2:] if cells.get(key, "").strip()
            )
            yield _entry(line, {"signal": signal, "value": cells.get("signal_str", ""), "note": note})
    except _CsvSyntax as exc:
        yield exc.problem


# -- writing ---------------------------------------------------------------------------------------
def _export_row(record: Exportable) -> dict[str, str | int | None]:
    """The ``EXPORT_FIELDS`` of one record, in that order."""
    if isinstance(record, EntrySpec):
        record = ExportRecord(record)
    if isinstance(record, ExportRecord):
        row: dict[str, str | int | None] = {k: getattr(record.entry, k) for k in ENTRY_FIELDS}
        row.update(entry_id=record.entry_id, status=record.status, added_at=_utc_text(record.added_at))
        return row
    row = {k: str(record.get(k) or "") for k in ENTRY_FIELDS}
    entry_id = record.get("entry_id", record.get("id"))
    row["entry_id"] = entry_id if isinstance(entry_id, int) else None
    row["status"] = str(record.get("status") or "")
    added_at = record.get("added_at")
    row["added_at"] = _utc_text(added_at) if isinstance(added_at, datetime | str | None) else str(added_at)
    return row


def _utc_text(at: datetime | str | None) -> str | None:
    """ISO 8601 UTC with a Z (naive means UTC); text that parses as a time is
    rewritten so, other text is kept."""
    if isinstance(at, str):
        try:
            parsed = datetime.fromisoformat(at)
        except ValueError:
            return at
    else:
        if at is None:
            return None
        parsed = at
    parsed = parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
