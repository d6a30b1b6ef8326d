"""``moderation eval`` end to end, without the real model: a folder of synthetic,
benign pictures (flat colours and gradients) whose planted scores are their
mean red channel, read by a fake classifier that replaces the configured one.

The parser is built from ``cli_classify.register`` here, so the tests do not
depend on how cli.py wires the subcommand."""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
from collections.abc import Sequence

import cv2
import numpy as np
import pytest

from moderation import cli_classify, runtime
from moderation.classify import ModelScore, Scores

H, W = 48, 64
# Red level of each labelled picture -> its score (red / 255). Positives 200, 180,
# 160, 100 beat 5, 5, 5 and 4 of the 5 negatives: ROC AUC 19/20 = 0.95.
PICTURES = {
    "pos/flat-200.png": (True, 200, "flat"),
    "pos/flat-180.jpg": (True, 180, "flat"),
    "pos/gradient-160.png": (True, 160, "gradient"),
    "pos/deeper/flat-100.png": (True, 100, "flat"),
    "neg/gradient-120.jpg": (False, 120, "gradient"),
    "neg/flat-060.png": (False, 60, "flat"),
    "neg/flat-040.jpg": (False, 40, "flat"),
    "neg/gradient-020.png": (False, 20, "gradient"),
    "neg/flat-000.png": (False, 0, "flat"),
}


def picture(red: int, kind: str) -> np.ndarray:
    img = np.zeros((H, W, 3), dtype=np.uint8)
    img[..., 1], img[..., 0] = 90, 140  # green, blue: constant
    if kind == "flat":
        img[..., 2] = red
    else:  # a left-to-right ramp averaging ``red``
        spread = min(red, 255 - red, 40)
        img[..., 2] = np.linspace(red - spread, red + spread, W).round().astype(np.uint8)[None, :]
    return img


class RedClassifier:
    """Two fake models: ``red`` (mean red / 255, the combined score) and ``green``."""

    name = "red+green"
    version = "red-0+green-0"

    def __init__(self) -> None:
        self.batches: list[int] = []

    def classify(self, images_bgr: Sequence[np.ndarray]) -> list[Scores]:
        self.batches.append(len(images_bgr))
        out = []
        for img in images_bgr:
            red, green = float(img[..., 2].mean()) / 255, float(img[..., 1].mean()) / 255
            out.append(Scores(red, (ModelScore("red", "red-0", red), ModelScore("green", "green-0", green))))
        return out


@pytest.fixture
def folder(tmp_path):
    root = tmp_path / "labelled"
    lines = ["file,label"]
    for name, (positive, red, kind) in PICTURES.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        ok, buf = cv2.imencode(path.suffix, picture(red, kind))
        assert ok
        path.write_bytes(buf.tobytes())
        lines.append(f"{name},{'nsfw' if positive else 'sfw'}")
    (root / "broken.jpg").write_bytes(b"\xff\xd8 not really a JPEG")
    lines.append("broken.jpg,1")
    (root / "notes.txt").write_text("not labelled, ignored\n")
    (root / "labels.csv").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture
def classifier(monkeypatch):
    fake = RedClassifier()
    seen: list[tuple[str, int, str]] = []

    def load(settings) -> RedClassifier:
        seen.append((settings.classifier_model, settings.onnx_threads, settings.classifier_combine))
        return fake

    monkeypatch.setattr(runtime, "build_classifier", load)
    monkeypatch.setenv("CLASSIFIER_MODEL", "fixed:0")  # never loaded: the fake replaces it
    monkeypatch.setenv("REVIEW_THRESHOLD", "0.6")
    fake.loads = seen  # type: ignore[attr-defined]
    return fake


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="moderation")
    cli_classify.register(p.add_subparsers(metavar="COMMAND"))
    return p


def run_eval(*argv: str) -> int:
    args = parser().parse_args(["eval", *argv])
    return int(args.func(args))


@pytest.fixture
def outputs(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    return out


def test_eval_json_summary(folder, classifier, outputs, capsys):
    plot, scores = outputs / "curves.png", outputs / "scores.csv"
    code = run_eval(
        str(folder),
        "--labels",
        str(folder / "labels.csv"),
        "--thresholds",
        "0.3,0.5",
        "--plot",
        str(plot),
        "--csv",
        str(scores),
        "--batch-size",
        "4",
        "--json",
    )
    out, err = capsys.readouterr()
    assert code == 0, err
    summary = json.loads(out)
    assert summary["files"] == 10 and summary["labelled_positives"] == 5
    assert (summary["positives"], summary["negatives"], summary["errors"]) == (4, 5, 1)
    assert summary["ignored"] == 1  # notes.txt; labels.csv itself is not counted
    assert summary["models"] == ["red", "green"] and summary["combine"] == "mean"
    assert summary["roc_auc"] == pytest.approx(0.95)
    assert summary["average_precision"] == pytest.approx((1 + 1 + 1 + 4 / 5) / 4)
    by_threshold = {t["threshold"]: t for t in summary["thresholds"]}
    assert sorted(by_threshold) == [0.3, 0.5, 0.6]
    at_review = by_threshold[0.6]  # flags 200, 180, 160
    assert (at_review["tp"], at_review["fp"], at_review["tn"], at_review["fn"]) == (3, 0, 5, 1)
    assert at_review["precision"] == 1.0 and at_review["recall"] == 0.75 and at_review["fpr"] == 0.0
    assert (by_threshold[0.3]["tp"], by_threshold[0.3]["fp"]) == (4, 1)
    rec = summary["recommended"]
    # Recall 0.95 of 4 positives needs all 4: the lowest positive, 100/255 = 0.392157, rounded down.
    assert rec["threshold"] == 0.3921 and rec["target_recall"] == 0.95
    assert (rec["tp"], rec["fp"], rec["precision"], rec["fpr"]) == (4, 1, 0.8, 0.2)
    assert summary["plot"] == str(plot) and summary["csv"] == str(scores)

    assert classifier.loads == [("fixed:0", 0, "mean")]  # loaded once
    assert classifier.batches == [4, 4, 1]  # batches of 4 files; broken.jpg has no picture
    assert "broken.jpg: media_undecodable" in err
    assert "1 file could not be decoded" in err
    assert "ignoring 1 file that" in err and "notes.txt" in err
    assert "scored 10/10 files in" in err  # not a terminal: only the final line
    assert err.count("scored 1") == 1


def test_eval_writes_plot_and_per_file_csv(folder, classifier, outputs, capsys):
    plot, scores = outputs / "curves.png", outputs / "scores.csv"
    labels = folder / "labels.csv"
    assert run_eval(str(folder), "--labels", str(labels), "--plot", str(plot), "--csv", str(scores)) == 0
    capsys.readouterr()

    data = plot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    h, w = image.shape[:2]
    assert 800 <= w <= 2000 and 400 <= h <= 1200 and w > h
    assert image.std() > 10  # something was drawn

    with open(scores, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["file", "label", "score", "score_red", "score_green", "predicted", "error"]
    assert [r["file"] for r in rows] == [*PICTURES, "broken.jpg"]  # label-file order
    for r in rows[:-1]:
        positive, red, _ = PICTURES[r["file"]]
        assert r["label"] == str(int(positive))
        assert float(r["score"]) == pytest.approx(red / 255, abs=3 / 255)  # JPEG drifts a little
        assert float(r["score_red"]) == float(r["score"])
        assert float(r["score_green"]) == pytest.approx(90 / 255, abs=3 / 255)
        assert r["predicted"] == str(int(float(r["score"]) >= 0.6)) and r["error"] == ""
    broken = rows[-1]
    assert broken["label"] == "1" and broken["score"] == "" and broken["predicted"] == ""
    assert broken["error"].startswith("media_undecodable")


def test_eval_table_output_and_default_paths(folder, classifier, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_eval(str(folder), "--labels", str(folder / "labels.csv"), "--target-recall", "0.75") == 0
    out = capsys.readouterr().out
    assert (tmp_path / "eval.png").is_file() and (tmp_path / "eval-scores.csv").is_file()
    assert "ROC AUC            0.9500" in out
    assert "average precision  0.9500" in out
    assert "undecodable 1 file," in out and "ignored     1 file in" in out
    assert "scored      9 files: 4 positive, 5 negative" in out
    # Recall 0.75 needs 3 of 4 positives: the third highest, 160/255 = 0.62745 -> 0.6274.
    assert "REVIEW_THRESHOLD=0.6274" in out
    review_row = next(line for line in out.splitlines() if line.endswith("REVIEW_THRESHOLD"))
    assert review_row.split()[:8] == ["0.6000", "1.0000", "0.7500", "0.0000", "3", "0", "5", "1"]
    rec_row = next(line for line in out.splitlines() if "recommended (recall >= 0.75)" in line)
    assert rec_row.split()[:3] == ["0.6274", "1.0000", "0.7500"]
    assert "plot    eval.png" in out and "scores  eval-scores.csv" in out


def test_eval_outputs_inside_the_folder_are_not_counted_as_unlabelled(folder, classifier, capsys):
    labels = str(folder / "labels.csv")
    for _ in range(2):  # the second run finds the first run's plot and CSV in the folder
        args = ["--plot", str(folder / "eval.png"), "--csv", str(folder / "eval-scores.csv"), "--json"]
        assert run_eval(str(folder), "--labels", labels, *args) == 0
        assert json.loads(capsys.readouterr().out)["ignored"] == 1


def test_eval_missing_labelled_files_is_an_error_naming_them(folder, classifier, outputs, capsys):
    with open(folder / "labels.csv", "a") as f:
        f.write("gone-1.jpg,0\ngone-2.png,1\n")
    code = run_eval(str(folder), "--labels", str(folder / "labels.csv"), "--csv", str(outputs / "s.csv"))
    err = capsys.readouterr().err
    assert code == 2
    assert "2 files listed in the label file are not in" in err and "gone-1.jpg, gone-2.png" in err
    assert classifier.batches == []  # nothing scored
    assert not (outputs / "s.csv").exists()


def test_eval_bad_label_file_exits_2_with_line_numbers(folder, classifier, capsys):
    bad = folder / "bad.csv"
    bad.write_text("file,label\npos/flat-200.png,1\nneg/flat-000.png,perhaps\npos/flat-200.png,1\n")
    assert run_eval(str(folder), "--labels", str(bad)) == 2
    err = capsys.readouterr().err
    assert "line 3: label 'perhaps' is not one of" in err
    assert "line 4: 'pos/flat-200.png' is listed again (first on line 2)" in err


def test_eval_fails_when_a_class_has_no_decodable_file(folder, classifier, outputs, capsys):
    labels = folder / "few.csv"
    labels.write_text("file,label\nbroken.jpg,1\nneg/flat-000.png,0\n")
    scores = outputs / "s.csv"
    assert run_eval(str(folder), "--labels", str(labels), "--csv", str(scores)) == 2
    err = capsys.readouterr().err
    assert "no positive file could be scored" in err
    assert scores.is_file()  # written first, so the errors can be read


def test_eval_without_matplotlib_still_reports(folder, classifier, outputs, monkeypatch, capsys):
    for module in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, module, None)  # import fails
    plot = outputs / "curves.png"
    args = ["--plot", str(plot), "--csv", str(outputs / "s.csv"), "--json"]
    assert run_eval(str(folder), "--labels", str(folder / "labels.csv"), *args) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["plot"] is None and not plot.exists()
    assert "no plot: matplotlib is not installed" in err


def test_importing_the_command_does_not_import_matplotlib():
    code = (
        "import sys, moderation.cli_classify, moderation.classify.plots; print('matplotlib' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert result.stdout.strip() == "False", result.stderr


def test_eval_output_folder_must_exist(folder, classifier, tmp_path, capsys):
    code = run_eval(str(folder), "--labels", str(folder / "labels.csv"), "--csv", str(tmp_path / "no/s.csv"))
    assert code == 2
    assert "--csv" in capsys.readouterr().err and classifier.batches == []


def test_eval_not_a_folder(tmp_path, classifier, capsys):
    assert run_eval(str(tmp_path / "absent"), "--labels", "x.csv") == 2
    assert "not a folder" in capsys.readouterr().err


@pytest.mark.parametrize(
    "bad",
    [
        ["--labels", "l.csv", "--target-recall", "0"],
        ["--labels", "l.csv", "--target-recall", "1.5"],
        ["--labels", "l.csv", "--thresholds", "0.2,high"],
        ["--labels", "l.csv", "--thresholds", "2"],
        ["--labels", "l.csv", "--batch-size", "0"],
        [],  # --labels is required
    ],
)
def test_eval_bad_options_exit_2(bad, tmp_path, capsys):
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["eval", str(tmp_path), *bad])
    assert info.value.code == 2


def test_eval_help_documents_the_label_file_outputs_and_exit_status(capsys):
    with pytest.raises(SystemExit) as info:
        parser().parse_args(["eval", "--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    for needle in (
        "--labels FILE",
        "file,label",
        "nsfw/sfw",
        "--target-recall",
        "REVIEW_THRESHOLD",
        "exit status",
    ):
        assert needle in text


def test_progress_redraws_on_a_terminal_at_most_twice_a_second():
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    now = [0.0]
    stream = Terminal()
    progress = cli_classify.Progress(5000, stream=stream, clock=lambda: now[0])
    for done, t in ((100, 0.2), (600, 0.6), (700, 0.9), (1200, 32.2)):
        now[0] = t
        progress.update(done)
    progress.finish(5000)
    lines = stream.getvalue().split("\r")[1:]
    assert lines[0].startswith("scored 600/5,000 files (1000.0 files/s, ETA 4s)")
    assert lines[1].startswith("scored 1,200/5,000 files (37.3 files/s, ETA 1m42s)")
    assert lines[2].startswith("scored 5,000/5,000 files in 32s") and lines[2].endswith("\n")
    assert len(lines) == 3  # 0.2 s and 0.9 s were too soon after the previous line


def test_a_picture_that_breaks_the_classifier_fails_only_its_own_file():
    class Picky(RedClassifier):
        def classify(self, images_bgr: Sequence[np.ndarray]) -> list[Scores]:
            if any(img[..., 2].mean() == 0 for img in images_bgr):
                raise ValueError("cannot score black")
            return super().classify(images_bgr)

    batch = [
        ("a.png", True, (picture(200, "flat"),)),
        ("black.png", False, (picture(0, "flat"),)),
        ("video.mp4", False, (picture(10, "flat"), picture(90, "flat"))),  # two frames: the highest
        ("bad.jpg", True, "media_undecodable: not an image"),
    ]
    rows = cli_classify.classify_decoded(Picky(), batch)
    assert [r.file for r in rows] == ["a.png", "black.png", "video.mp4", "bad.jpg"]
    assert rows[0].score == pytest.approx(200 / 255) and rows[0].error is None
    assert rows[1].score is None and rows[1].error == "classifier failed: ValueError: cannot score black"
    assert rows[2].score == pytest.approx(90 / 255)
    assert rows[3].error == "media_undecodable: not an image"
