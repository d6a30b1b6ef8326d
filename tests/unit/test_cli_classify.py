"""`moderation classify`: each model's scores, the combined score, the threshold
and the route, as the worker computes them (real models on benign pictures;
injected scores for the positive paths)."""

from __future__ import annotations

import io
import json

import cv2
import numpy as np
import pytest
from PIL import Image

from moderation.config import Settings
from tests.support.images import encode, synthetic_image


def test_the_default_models_score_a_benign_photo_and_allow_it(cli, tmp_path):
    import skimage.data

    photo = tmp_path / "astronaut.jpg"
    photo.write_bytes(encode(cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)))
    code, (row,), _err = cli("classify", "--json", "--no-banks", str(photo))
    assert code == 0
    defaults = Settings()
    assert [m["model"] for m in row["models"]] == defaults.classifier_model.split(",")
    for m in row["models"]:
        assert m["version"].startswith(m["model"] + "-") and len(m["version"]) == len(m["model"]) + 13
        assert sum(m["labels"].values()) == pytest.approx(1.0, abs=1e-4)
    mean = sum(m["score"] for m in row["models"]) / len(row["models"])
    assert row["score"] == pytest.approx(mean, abs=1e-5)
    assert (row["combine"], row["review_threshold"]) == ("mean", defaults.review_threshold)
    assert (row["route"], row["reason"], row["matches"]) == ("allow", "below_threshold", [])


def test_an_injected_score_over_the_threshold_routes_to_review(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CLASSIFIER_MODEL", "fixed:0.9")
    picture = tmp_path / "p.png"
    picture.write_bytes(encode(synthetic_image(3), ".png"))
    code, (row,), _ = cli("classify", "--no-banks", str(picture))
    assert code == 0
    assert (row["score"], row["route"]) == (0.9, "review")
    assert row["priority"] > 0


def test_a_banked_picture_is_removed_whatever_the_classifier_says(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CLASSIFIER_MODEL", "fixed:0.0")
    victim = tmp_path / "victim.jpg"
    victim.write_bytes(encode(synthetic_image(8)))
    assert cli("bank", "create", "victims", "--action", "auto_remove")[0] == 0
    assert cli("bank", "add", "victims", str(victim))[0] == 0
    code, (row,), _ = cli("classify", str(victim))
    assert (code, row["route"]) == (0, "auto_remove")
    assert {m["bank"] for m in row["matches"]} == {"victims"}


def test_an_animation_scores_as_its_most_suspicious_frame(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CLASSIFIER_MODEL", "open_nsfw")
    frames = [Image.fromarray(np.full((64, 64, 3), (20 * i, 40, 90), np.uint8)) for i in range(6)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=80)
    gif = tmp_path / "a.gif"
    gif.write_bytes(buf.getvalue())
    code, (row,), _ = cli("classify", "--no-banks", str(gif))
    assert code == 0 and row["route"] == "allow"
    from moderation.classify import load_classifier
    from moderation.media.load import MediaLimits, load_media

    media = load_media(gif.read_bytes(), MediaLimits())
    assert len(media.pictures) == 4
    scores = [s.score for s in load_classifier("open_nsfw").classify(list(media.pictures))]
    assert row["score"] == pytest.approx(max(scores), abs=1e-5)


def test_unreadable_and_undecodable_files_are_reported_and_the_rest_scored(cli, tmp_path, monkeypatch):
    monkeypatch.setenv("CLASSIFIER_MODEL", "fixed:0.2")
    good, junk = tmp_path / "good.png", tmp_path / "junk.jpg"
    good.write_bytes(encode(synthetic_image(4), ".png"))
    junk.write_bytes(b"\xff\xd8\xff definitely not a jpeg")
    code, rows, err = cli("classify", "--no-banks", str(junk), str(tmp_path / "missing.jpg"), str(good))
    assert code == 1
    assert [r["path"] for r in rows] == [str(good)]
    errors = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert {e["path"] for e in errors} == {str(junk), str(tmp_path / "missing.jpg")}
    assert any(e.get("error_class") == "media_undecodable" for e in errors)


def test_a_bad_model_name_is_a_configuration_error(cli, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("CLASSIFIER_MODEL", "open_nsfw,no_such_model")
    picture = tmp_path / "p.png"
    picture.write_bytes(encode(synthetic_image(3), ".png"))
    code, rows, err = cli("classify", "--no-banks", str(picture))
    assert code == 2 and not rows
    assert "unknown classifier model 'no_such_model'" in err and "nsfwjs_mobilenet_v2_mid" in err
