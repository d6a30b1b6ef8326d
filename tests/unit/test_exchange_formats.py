"""Entry files: round trips, line-numbered errors, and interoperability with
python-threatexchange (its own parsing code and its CLI)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import sys
import types
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from moderation.domain import EntrySpec
from moderation.errors import RequestError
from moderation.exchanges.formats import (
    EntryFileError,
    ExportRecord,
    read_entries,
    write_entries,
)
from moderation.hashing.signals import make_entry


def _pdq(i: int) -> str:
    return hashlib.sha256(f"pdq-{i}".encode()).hexdigest()


def _md5(i: int) -> str:
    return hashlib.md5(f"md5-{i}".encode()).hexdigest()


def _sha256(i: int) -> str:
    return hashlib.sha256(f"sha-{i}".encode()).hexdigest()


VPDQ = json.dumps([f"{_pdq(i)},{90 + i},{i}.500" for i in range(3)])


def _read(text: str, fmt: str, **kwargs: Any) -> list[EntrySpec]:
    return list(read_entries(io.StringIO(text), fmt, **kwargs))


def _write(records: list[Any], fmt: str, **kwargs: Any) -> str:
    out = io.StringIO()
    assert write_entries(records, out, fmt, **kwargs) == len(records)
    return out.getvalue()


SPECS = [
    EntrySpec("pdq", _pdq(0), source_ref="ImagePDQ:x", case_id="c-1", note="first", added_by="alice"),
    EntrySpec("md5", _md5(0), note='comma, "quotes"\nand a second line', added_by="bob"),
    EntrySpec("sha256", _sha256(0), source_ref="r-2", note="ünïcödé ✓"),
    EntrySpec("vpdq", VPDQ, case_id="video-case"),
]


# -- round trips --------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_csv_and_jsonl_round_trip(fmt: str) -> None:
    records: list[Any] = [
        ExportRecord(SPECS[0], entry_id=7, status="active", added_at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC)),
        SPECS[1],
        SPECS[2],
        {  # a storage row as a dict: extra keys ignored, "id" taken as entry_id
            "id": 9,
            "bank": "ncii",
            "status_reason": "ignored",
            **{
                k: getattr(SPECS[3], k)
                for k in ("signal", "value", "source_ref", "case_id", "note", "added_by")
            },
            "status": "withdrawn",
            "added_at": "2024-05-02T08:30:00+02:00",
        },
    ]
    text = _write(records, fmt)
    assert _read(text, fmt) == SPECS
    if fmt == "csv":
        assert (
            text.splitlines()[0] == "signal,value,source_ref,case_id,note,added_by,entry_id,status,added_at"
        )
    else:
        first, *_, last = (json.loads(line) for line in text.splitlines())
        assert (first["entry_id"], first["status"], first["added_at"]) == (
            7,
            "active",
            "2024-05-01T12:00:00Z",
        )
        assert (last["entry_id"], last["status"], last["added_at"]) == (
            9,
            "withdrawn",
            "2024-05-02T06:30:00Z",
        )
        assert json.loads(text.splitlines()[1])["entry_id"] is None


def test_te_round_trip_keeps_signal_and_value() -> None:
    text = _write(SPECS, "te")
    assert text.splitlines() == [
        f"pdq {_pdq(0)}",
        f"video_md5 {_md5(0)}",
        f"video_sha256 {_sha256(0)}",
        f"vpdq {VPDQ}",
    ]
    assert _read(text, "te") == [EntrySpec(s.signal, s.value) for s in SPECS]


def test_te_hashes_round_trip() -> None:
    specs = [EntrySpec("pdq", _pdq(i)) for i in range(3)]
    text = _write(specs, "te-hashes")
    assert text == "".join(f"{_pdq(i)}\n" for i in range(3))
    assert _read(text, "te-hashes", signal="pdq") == specs
    with pytest.raises(RequestError, match="one signal type"):
        _write([specs[0], SPECS[1]], "te-hashes")
    with pytest.raises(RequestError, match="say which signal"):
        _read(text, "te-hashes")


@pytest.mark.parametrize("note", ["=1+1", "'=", "''=x", "'plain", "-", "'", "@SUM(A1)", "\tx"])
def test_formula_guards_come_off_exactly_once(note: str) -> None:
    spec = make_entry("pdq", _pdq(1), note=note)
    for fmt in ("csv", "jsonl"):
        assert _read(_write([spec], fmt), fmt) == [spec]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["pdq", "md5", "sha256"]),
            st.integers(0, 10_000),
            st.text(max_size=40),
            st.text(max_size=40),
            st.text(max_size=200),
            st.text(max_size=30),
        ),
        max_size=5,
    ),
    st.sampled_from(["csv", "jsonl"]),
)
def test_any_text_survives_a_round_trip(rows: list[tuple[str, int, str, str, str, str]], fmt: str) -> None:
    value = {"pdq": _pdq, "md5": _md5, "sha256": _sha256}
    specs = [
        make_entry(signal, value[signal](i), source_ref=ref, case_id=case, note=note, added_by=who)
        for signal, i, ref, case, note, who in rows
    ]
    assert _read(_write(specs, fmt), fmt) == specs


# -- validation ---------------------------------------------------------------------------------------
BAD_CSV = "\n".join(
    [
        "signal,value,source_ref,note",  # 1
        f"pdq,{_pdq(1)},r1,fine",  # 2
        f"phash,{_pdq(2)},r2,",  # 3 unknown signal
        f"pdq,{_pdq(3)[:63]},r3,",  # 4 short
        "md5,,r4,",  # 5 no value
        f'md5,{_md5(5)},r5,"a note',  # 6 (a quoted note over two lines: fine)
        'that goes on"',  # 7
        f"md5,{_md5(8)},r8,x,extra",  # 8 too many fields
        f"sha256,{_sha256(9)},{'r' * 201},",  # 9 source_ref too long
        "vpdq,[not json,r10,",  # 10
        "",  # blank lines are skipped
        f"sha256,{_sha256(12).upper()},r12,",  # 12 fine (normalised)
    ]
)


def test_strict_mode_reports_every_bad_line_and_imports_nothing() -> None:
    with pytest.raises(EntryFileError) as caught:
        _read(BAD_CSV, "csv")
    problems = caught.value.problems
    assert [p.line for p in problems] == [3, 4, 5, 8, 9, 10]
    message = str(caught.value)
    assert "6 invalid line(s) in the csv input; nothing was imported" in message
    assert "line 3: unknown signal 'phash'" in message
    assert "line 4: pdq value must be 64 hex characters" in message
    assert "line 5: value is missing" in message
    assert "line 8: 5 fields but the header has 4" in message
    assert "line 9: source_ref is too long: 201 characters, at most 200 allowed" in message
    assert "line 10: vpdq value is not vPDQ text" in message


def test_collecting_mode_yields_the_valid_lines() -> None:
    errors: list[str] = []
    entries = _read(BAD_CSV, "csv", errors=errors)
    assert [e.source_ref for e in entries] == ["r1", "r5", "r12"]
    assert entries[1].note == "a note\nthat goes on"
    assert entries[2].value == _sha256(12)
    assert [e.split(":")[0] for e in errors] == ["line 3", "line 4", "line 5", "line 8", "line 9", "line 10"]


@pytest.mark.parametrize(
    ("header", "problem"),
    [
        ("signal,hash", "missing column(s) value; unknown column(s) 'hash'"),
        ("signal,value,sourceref", "unknown column(s) 'sourceref'"),
        ("signal,value,value", "repeated column(s) value"),
    ],
)
def test_bad_csv_headers_fail_the_whole_file(header: str, problem: str) -> None:
    text = f"{header}\npdq,{_pdq(0)},x\n"
    collected: list[str] = []
    for errors in (None, collected):
        with pytest.raises(EntryFileError, match=r"line 1: header: .*") as caught:
            _read(text, "csv", errors=errors)
        assert problem in str(caught.value)


def test_values_are_normalised_and_a_bom_is_tolerated() -> None:
    text = f"\ufeffSignal,Value\n PDQ , {_pdq(0).upper()} \nmd5,{_md5(0).upper()}\n"
    assert _read(text, "csv") == [EntrySpec("pdq", _pdq(0)), EntrySpec("md5", _md5(0))]


def test_jsonl_problems_are_numbered() -> None:
    lines = [
        json.dumps({"signal": "pdq", "value": _pdq(0), "note": None}),
        "{not json",
        "",
        json.dumps(["pdq", _pdq(1)]),
        json.dumps({"signal": "pdq", "value": _pdq(2), "note": 5}),
        json.dumps({"signal": "pdq", "value": _pdq(3), "colour": "red"}),
    ]
    errors: list[str] = []
    assert _read("\n".join(lines), "jsonl", errors=errors) == [EntrySpec("pdq", _pdq(0))]
    assert errors[0].startswith("line 2: not JSON")
    assert errors[1:] == [
        "line 4: expected a JSON object, got list",
        "line 5: note must be a string, got int",
        "line 6: unknown key(s) 'colour'",
    ]


def test_te_reads_what_the_threatexchange_cli_prints() -> None:
    lines = [
        f"pdq {_pdq(0)}",  # threatexchange hash
        f" pdq {_pdq(1)}",  # hash --photo-preprocess unletterbox
        f"ROTATE90 pdq {_pdq(2)}",  # hash --photo-preprocess rotations
        f"video_md5 {_md5(0)} 'Sample Data' INVESTIGATION_SEED",  # dataset -P
        "url_md5 0123",
        "raw_text some words",
    ]
    errors: list[str] = []
    assert _read("\n".join(lines), "te", errors=errors) == [
        EntrySpec("pdq", _pdq(0)),
        EntrySpec("pdq", _pdq(1)),
        EntrySpec("pdq", _pdq(2)),
        EntrySpec("md5", _md5(0), note="'Sample Data' INVESTIGATION_SEED"),
    ]
    assert [e[:30] for e in errors] == ["line 5: unsupported signal typ", "line 6: unsupported signal typ"]


def test_unknown_and_read_only_formats() -> None:
    with pytest.raises(RequestError, match="unknown entry file format 'xml'"):
        _read("", "xml")
    with pytest.raises(RequestError, match="read only"):
        _write([SPECS[0]], "te-csv")
    with pytest.raises(RequestError, match="unknown entry file format"):
        _write([SPECS[0]], "xml")


# -- interoperability with python-threatexchange -----------------------------------------------------
@pytest.fixture(scope="module")
def te_vpdq() -> Iterator[types.ModuleType]:
    """threatexchange's vPDQ signal module. Its extension imports the native ``vpdq``
    package only to hash video files; a stand-in lets its text parsing load, and is
    removed again so nothing else sees it."""
    with pytest.MonkeyPatch.context() as patch:
        if "vpdq" not in sys.modules:
            stub = types.ModuleType("vpdq")
            stub.VpdqFeature = object  # type: ignore[attr-defined]
            patch.setitem(sys.modules, "vpdq", stub)
        from threatexchange.extensions.vpdq import vpdq

        yield vpdq


def test_our_values_pass_threatexchange_validation(te_vpdq: types.ModuleType) -> None:
    from threatexchange.extensions.vpdq.vpdq_util import json_to_vpdq
    from threatexchange.signal_type.md5 import VideoMD5Signal
    from threatexchange.signal_type.pdq.signal import PdqSignal
    from threatexchange.signal_type.sha256 import VideoSHA256Signal

    text = io.StringIO()
    writer = csv.writer(text)
    writer.writerow(["signal", "value"])
    writer.writerows([("pdq", _pdq(0).upper()), ("md5", _md5(0)), ("sha256", _sha256(0)), ("vpdq", VPDQ)])
    pdq, md5, sha256, vpdq = _read(text.getvalue(), "csv")
    assert PdqSignal.validate_signal_str(pdq.value) == pdq.value == _pdq(0)
    assert VideoMD5Signal.validate_signal_str(md5.value) == md5.value
    assert VideoSHA256Signal.validate_signal_str(sha256.value) == sha256.value
    assert te_vpdq.VPDQSignal.validate_signal_str(vpdq.value) == vpdq.value
    frames = json_to_vpdq(vpdq.value)
    assert [(f.pdq_hex, f.quality, f.timestamp) for f in frames] == [
        (_pdq(i), 90 + i, i + 0.5) for i in range(3)
    ]


def test_te_files_we_write_are_read_by_threatexchange(tmp_path: Path, te_vpdq: types.ModuleType) -> None:
    from threatexchange.cli.match_cmd import _match_hashes
    from threatexchange.exchanges.impl.file_api import FileCollaborationConfig, LocalFileSignalExchangeAPI
    from threatexchange.signal_type.md5 import VideoMD5Signal
    from threatexchange.signal_type.pdq.signal import PdqSignal
    from threatexchange.signal_type.sha256 import VideoSHA256Signal

    types_ = [PdqSignal, VideoMD5Signal, VideoSHA256Signal, te_vpdq.VPDQSignal]
    listing = tmp_path / "ours.te"
    listing.write_text(_write(SPECS, "te"))
    collab = FileCollaborationConfig(name="ours", filename=str(listing))
    (delta,) = LocalFileSignalExchangeAPI(collab).fetch_iter(types_, None)
    parsed = LocalFileSignalExchangeAPI.naive_convert_to_signal_type(types_, collab, delta.updates)
    assert {(t.get_name(), value) for t, values in parsed.items() for value in values} == {
        ("pdq", _pdq(0)),
        ("video_md5", _md5(0)),
        ("video_sha256", _sha256(0)),
        ("vpdq", VPDQ),
    }

    # `threatexchange match --hashes` reads te-hashes files.
    hashes = tmp_path / "hashes.txt"
    hashes.write_text(_write([EntrySpec("pdq", _pdq(i)) for i in range(3)], "te-hashes"))
    index = PdqSignal.get_index_cls().build([(_pdq(i), i) for i in range(3)])
    assert sorted(m.match.metadata for m in _match_hashes(hashes, PdqSignal, index)) == [0, 1, 2]


def test_vpdq_text_threatexchange_writes_is_read_by_us(te_vpdq: types.ModuleType) -> None:
    """vPDQ text made by threatexchange's own serialiser (vpdq_util.vpdq_to_json,
    which writes timestamps like "1.23e+02") reads as the same frames."""
    from threatexchange.extensions.vpdq.vpdq_util import VpdqCompactFeature, json_to_vpdq, vpdq_to_json

    frames = [VpdqCompactFeature(_pdq(i), 80 + i, 61.25 * i) for i in range(4)]
    line = f"vpdq {vpdq_to_json(frames)}\n"
    assert "e+02" in line
    (entry,) = _read(line, "te")
    assert entry.signal == "vpdq"
    ours = json_to_vpdq(entry.value)
    assert [(f.pdq_hex, f.quality) for f in ours] == [(f.pdq_hex, f.quality) for f in frames]
    assert [f.timestamp for f in ours] == [float(str(f).split(",")[2]) for f in frames]


def test_round_trip_through_the_threatexchange_cli(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Our te file -> `threatexchange fetch` (a local_file collaboration) ->
    `dataset -P -S` / `dataset -P --csv` -> read by us; and `threatexchange hash`
    output read by us, its PDQ equal to ours for the same picture. The CLI runs
    in this process through ``inner_main``, its entry point for tests."""
    import cv2
    import numpy as np
    from threatexchange.cli.main import inner_main

    from moderation.hashing.pdq import hash_image

    def tx(*args: str) -> str:
        capsys.readouterr()
        inner_main(list(args), state_dir=tmp_path / "state")
        return capsys.readouterr().out

    specs = SPECS[:3]
    (tmp_path / "ours.te").write_text(_write(specs, "te"))
    tx("config", "collab", "edit", "local_file", "--create", "--filename", str(tmp_path / "ours.te"), "ours")
    tx("fetch")
    plain = [EntrySpec(s.signal, s.value) for s in specs]
    assert sorted(_read(tx("dataset", "-P", "-S"), "te"), key=str) == sorted(plain, key=str)
    from_csv = _read(tx("dataset", "-P", "--csv"), "te-csv")
    assert sorted((e.signal, e.value) for e in from_csv) == sorted((e.signal, e.value) for e in plain)
    assert all(e.note == "collab=ours category=INVESTIGATION_SEED" for e in from_csv)

    rng = np.random.default_rng(7)
    picture = cv2.resize(
        (rng.random((8, 8, 3)) * 255).astype(np.uint8), (96, 96), interpolation=cv2.INTER_CUBIC
    )
    cv2.imwrite(str(tmp_path / "picture.png"), picture)
    (hashed,) = _read(tx("hash", "photo", str(tmp_path / "picture.png")), "te")
    assert hashed == EntrySpec("pdq", hash_image(picture)[0])


def test_csv_exports_cannot_smuggle_spreadsheet_formulas_and_still_round_trip():
    import io

    from moderation.domain import EntrySpec
    from moderation.exchanges.formats import read_entries, write_entries

    note = '=HYPERLINK("http://evil.example","click")'
    out = io.StringIO()
    write_entries([EntrySpec("md5", "a" * 32, case_id="-7", note=note)], out, "csv")
    assert "\"'=HYPERLINK" in out.getvalue() and ",'-7," in out.getvalue()
    (back,) = list(read_entries(io.StringIO(out.getvalue()), "csv"))
    assert (back.note, back.case_id) == (note, "-7")
