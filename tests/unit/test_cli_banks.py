"""`moderation bank ...` and `moderation match` on the embedded SQLite default:
what a script or a test does without a running server."""

from __future__ import annotations

import cv2

from tests.support.images import encode, reencoded_copy, synthetic_image


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


def test_export_then_import_round_trips_and_bad_files_name_their_lines(cli, tmp_path):
    img = tmp_path / "a.jpg"
    img.write_bytes(encode(synthetic_image(31)))
    cli("bank", "create", "source", "--action", "auto_remove")
    cli("bank", "create", "copy", "--action", "review")
    cli("bank", "add", "source", str(img), "--case-id", "c-1")
    for fmt in ("jsonl", "csv", "te"):
        out = tmp_path / f"export.{fmt}"
        assert cli("bank", "export", "source", "--format", fmt, "-o", str(out))[0] == 0
        code, rows, _ = cli("bank", "import", "copy", str(out), "--format", fmt)
        assert code == 0 and rows[0]["added"] + rows[0]["existing"] == 3, fmt
    code, rows, _ = cli("match", "--json", str(img))
    assert {m["bank"] for m in rows[0]["matches"]} == {"source", "copy"}

    bad = tmp_path / "bad.csv"
    bad.write_text("signal,value\npdq,zz\nmd5," + "a" * 32 + "\nsha1,abc\n")
    code, _, err = cli("bank", "import", "copy", str(bad))
    assert code == 1 and "line 2" in err and "line 4" in err and "nothing imported" in err
    code, rows, _ = cli("bank", "import", "copy", str(bad), "--skip-invalid")
    assert code == 0 and (rows[0]["added"], rows[0]["invalid"]) == (1, 2)


def test_hash_prints_variants_and_video_frames(cli, tmp_path):
    from tests.support.videos import synthetic_video

    img, clip = tmp_path / "a.jpg", tmp_path / "b.mp4"
    img.write_bytes(encode(synthetic_image(41)))
    clip.write_bytes(synthetic_video(None, seed=3, seconds=3))
    code, rows, _ = cli("hash", "--json", "--variants", str(img), str(clip))
    assert code == 0
    assert {"rotate90", "rotate180", "flip_horizontal"} <= set(rows[0]["pdq_variants"])
    assert rows[1]["vpdq_frames"] >= 2 and rows[1]["vpdq"].startswith("[")


def test_threatexchange_hash_lists_import_and_export_one_signal(cli, tmp_path):
    img = tmp_path / "a.jpg"
    img.write_bytes(encode(synthetic_image(51)))
    cli("bank", "create", "source", "--action", "review")
    cli("bank", "create", "copy", "--action", "review")
    cli("bank", "add", "source", str(img))
    out = tmp_path / "pdq.txt"
    assert cli("bank", "export", "source", "--format", "te-hashes", "--signal", "pdq", "-o", str(out))[0] == 0
    assert len(out.read_text().split()) == 1 and len(out.read_text().strip()) == 64
    code, rows, _ = cli("bank", "import", "copy", str(out), "--format", "te-hashes", "--signal", "pdq")
    assert code == 0 and rows[0]["added"] == 1


def test_bank_list_shows_settings_and_counts(cli, tmp_path):
    cli("bank", "create", "victims", "--action", "auto_remove", "--pdq-distance", "24")
    img = tmp_path / "a.jpg"
    img.write_bytes(encode(synthetic_image(61)))
    cli("bank", "add", "victims", str(img))
    code, rows, _ = cli("bank", "list")
    assert code == 0
    assert (rows[0]["name"], rows[0]["action"], rows[0]["pdq_distance"]) == ("victims", "auto_remove", 24)
    assert rows[0]["stats"]["active"] == 3
