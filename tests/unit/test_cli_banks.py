"""`moderation bank ...` and `moderation match` on the embedded SQLite default:
what a script or a test does without a running server."""

from __future__ import annotations

import json

import cv2
import pytest

from moderation.cli import main
from tests.support.images import encode, reencoded_copy, synthetic_image


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/banks.db")

    def run(*args: str) -> tuple[int, list[dict], str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return code, rows, err

    return run


def test_bank_add_then_match_reports_bank_entry_signal_distance_and_variant(cli, tmp_path):
    victim = synthetic_image(21)
    banked, unrelated = tmp_path / "victim.jpg", tmp_path / "other.jpg"
    banked.write_bytes(encode(victim))
    unrelated.write_bytes(encode(synthetic_image(22)))
    rotated, resized = tmp_path / "rotated.jpg", tmp_path / "resized.jpg"
    rotated.write_bytes(encode(cv2.rotate(victim, cv2.ROTATE_180)))
    resized.write_bytes(reencoded_copy(victim))

    assert cli("bank", "create", "victims", "--action", "auto_remove")[0] == 0
    code, rows, _ = cli("bank", "add", "victims", str(banked), "--case-id", "case-1")
    assert code == 0 and rows[0]["added"] == 3  # sha256, md5, pdq

    code, rows, _ = cli("match", "--json", str(banked), str(rotated), str(resized), str(unrelated))
    assert code == 0
    by_path = {r["path"]: r for r in rows}
    exact = by_path[str(banked)]
    assert exact["route"] == "auto_remove"
    assert {m["signal"] for m in exact["matches"]} == {"sha256", "md5", "pdq"}
    turned = by_path[str(rotated)]["matches"]
    assert [(m["bank"], m["signal"], m["variant"]) for m in turned] == [("victims", "pdq", "rotate180")]
    assert by_path[str(resized)]["matches"][0]["distance"] <= 31
    assert by_path[str(unrelated)] | {"matches": []} == by_path[str(unrelated)]
    assert by_path[str(unrelated)]["route"] == "allow"

    code, rows, _ = cli("bank", "withdraw", "victims", "--case-id", "case-1", "--reason", "victim asked")
    assert code == 0 and rows[0]["changed"] == 3
    code, rows, _ = cli("match", "--json", str(banked))
    assert rows[0]["matches"] == []


def test_bank_commands_fail_clearly(cli, tmp_path):
    assert cli("bank", "create", "victims", "--action", "auto_remove")[0] == 0
    code, _, err = cli("bank", "create", "victims", "--action", "review")
    assert code == 1 and "already exists" in err
    code, _, err = cli("bank", "add", "nope", str(tmp_path / "x.jpg"))
    assert code == 1 and "no bank named 'nope'" in err
    code, _, err = cli("bank", "add", "victims", str(tmp_path / "missing.jpg"))
    assert code == 1 and "missing.jpg" in err
    code, _, err = cli("bank", "withdraw", "victims")
    assert code == 1 and "entry ids or --case-id" in err
