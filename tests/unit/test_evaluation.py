"""Metrics, the label file and the per-file CSV of ``moderation eval``
(moderation/classify/evaluation.py), against hand-computed cases."""

from __future__ import annotations

import csv
import itertools
import math

import numpy as np
import pytest

from moderation.classify import ModelScore, Scores
from moderation.classify.evaluation import (
    MAX_PROBLEMS_SHOWN,
    Confusion,
    LabelFileError,
    ScoredFile,
    average_precision,
    confusion_at,
    evaluate,
    floor_threshold,
    parse_label,
    precision_recall_curve,
    read_labels,
    recommend_threshold,
    roc_auc,
    roc_curve,
    write_scores_csv,
)
from moderation.errors import ConfigError

# Scores 0.9 .. 0.1; labels chosen so that every metric is easy to work out by hand.
SCORES = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1]
LABELS = [1, 1, 0, 1, 0, 0, 1, 0, 0]  # 4 positives, 5 negatives


def brute_auc(scores, labels):
    """P(random positive > random negative) + P(tie) / 2, over every pair."""
    pos = [s for s, y in zip(scores, labels, strict=True) if y]
    neg = [s for s, y in zip(scores, labels, strict=True) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


def brute_ap(scores, labels):
    """Mean over positives of the precision when flagging everything scoring at least as high."""
    pairs = list(zip(scores, labels, strict=True))
    precisions = []
    for s, y in pairs:
        if y:
            flagged = [yy for ss, yy in pairs if ss >= s]
            precisions.append(sum(flagged) / len(flagged))
    return sum(precisions) / len(precisions)


# -- confusion counts -----------------------------------------------------------------
def test_confusion_counts_score_at_the_threshold_as_flagged():
    c = confusion_at(SCORES, LABELS, 0.6)  # flagged: 0.9+ 0.8+ 0.7- 0.6+
    assert (c.tp, c.fp, c.tn, c.fn) == (3, 1, 4, 1)
    assert c.precision == pytest.approx(3 / 4)
    assert c.recall == pytest.approx(3 / 4)
    assert c.fpr == pytest.approx(1 / 5)
    assert c.as_json() == {
        "threshold": 0.6,
        "precision": 0.75,
        "recall": 0.75,
        "fpr": 0.2,
        "tp": 3,
        "fp": 1,
        "tn": 4,
        "fn": 1,
    }


def test_confusion_ratios_are_none_when_undefined():
    nothing_flagged = confusion_at(SCORES, LABELS, 0.95)
    assert nothing_flagged.precision is None
    assert nothing_flagged.recall == 0.0 and nothing_flagged.fpr == 0.0
    assert Confusion(0.5, 0, 0, 3, 0).recall is None
    assert Confusion(0.5, 2, 0, 0, 1).fpr is None


def test_metrics_reject_mismatched_or_non_finite_input():
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        confusion_at([0.1, 0.2, 0.3], [1, 0], 0.5)
    with pytest.raises(ValueError, match="finite"):
        roc_auc([0.1, float("nan")], [1, 0])


# -- ROC ------------------------------------------------------------------------------
def test_roc_auc_by_hand():
    # Positives 0.9, 0.8, 0.6, 0.3 beat 5, 5, 4 and 2 of the 5 negatives: 16 of 20 pairs.
    assert roc_auc(SCORES, LABELS) == pytest.approx(16 / 20)


def test_roc_auc_counts_ties_as_half():
    # Pairs: 0.8 vs 0.5 win, 0.8 vs 0.8 tie, 0.5 vs 0.5 tie, 0.5 vs 0.8 loss -> (1 + .5 + .5) / 4
    assert roc_auc([0.8, 0.5, 0.8, 0.5], [1, 1, 0, 0]) == pytest.approx(0.5)
    assert roc_auc([0.7, 0.7, 0.7], [1, 0, 0]) == pytest.approx(0.5)


def test_roc_auc_perfect_inverted_and_constant_classifiers():
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0
    assert roc_auc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == 0.0
    assert roc_auc([0.5] * 6, [1, 0, 1, 0, 1, 0]) == 0.5


def test_roc_auc_needs_both_classes():
    with pytest.raises(ValueError, match="one positive and one negative"):
        roc_auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError):
        roc_curve([0.1, 0.2], [0, 0])


def test_roc_auc_and_average_precision_match_brute_force_on_random_data_with_ties():
    rng = np.random.default_rng(7)
    for _ in range(20):
        n = int(rng.integers(2, 60))
        scores = np.round(rng.random(n), 1)  # few distinct values: many ties
        labels = rng.random(n) < 0.4
        labels[0], labels[1] = True, False
        auc = roc_auc(scores, labels)
        assert auc == pytest.approx(brute_auc(list(scores), list(labels)))
        curve = roc_curve(scores, labels)
        area = float(np.sum(np.diff(curve.fpr) * (curve.tpr[1:] + curve.tpr[:-1]) / 2))
        assert auc == pytest.approx(area)
        assert average_precision(scores, labels) == pytest.approx(brute_ap(list(scores), list(labels)))


def test_roc_curve_points():
    curve = roc_curve([0.8, 0.5, 0.5, 0.2], [1, 1, 0, 0])
    assert list(curve.thresholds) == [math.inf, 0.8, 0.5, 0.2]
    assert list(curve.tpr) == [0.0, 0.5, 1.0, 1.0]
    assert list(curve.fpr) == [0.0, 0.0, 0.5, 1.0]


# -- precision-recall -------------------------------------------------------------------
def test_precision_recall_curve_points():
    pr = precision_recall_curve([0.8, 0.5, 0.5, 0.2], [1, 1, 0, 0])
    assert list(pr.thresholds) == [0.8, 0.5, 0.2]
    assert list(pr.recall) == [0.5, 1.0, 1.0]
    assert list(pr.precision) == pytest.approx([1.0, 2 / 3, 0.5])


def test_average_precision_by_hand():
    # Ranked: + + - + - - + - -; precision at each positive: 1, 1, 3/4, 4/7.
    assert average_precision(SCORES, LABELS) == pytest.approx((1 + 1 + 3 / 4 + 4 / 7) / 4)


def test_average_precision_with_ties_takes_the_tied_groups_precision():
    # At 0.5 both the positive and the negative are flagged at once: precision 2/3.
    assert average_precision([0.8, 0.5, 0.5, 0.2], [1, 1, 0, 0]) == pytest.approx((1 + 2 / 3) / 2)


def test_average_precision_perfect_and_inverted():
    assert average_precision([0.9, 0.8, 0.2, 0.1], [1, 1, 0, 0]) == 1.0
    assert average_precision([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]) == pytest.approx((1 / 3 + 2 / 4) / 2)


def test_metrics_agree_with_scikit_learn_when_it_is_installed():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(3)
    scores = np.round(rng.random(300), 2)
    labels = rng.random(300) < 0.3
    assert roc_auc(scores, labels) == pytest.approx(metrics.roc_auc_score(labels, scores))
    assert average_precision(scores, labels) == pytest.approx(metrics.average_precision_score(labels, scores))
    fpr, tpr, _ = metrics.roc_curve(labels, scores, drop_intermediate=False)
    ours = roc_curve(scores, labels)
    assert np.allclose(ours.fpr, fpr) and np.allclose(ours.tpr, tpr)


# -- recommended threshold -----------------------------------------------------------------
def test_recommend_threshold_is_the_highest_reaching_the_target_recall():
    # Positives score 0.9, 0.8, 0.6, 0.3.
    assert recommend_threshold(SCORES, LABELS, 0.5).threshold == 0.8
    assert recommend_threshold(SCORES, LABELS, 0.51).threshold == 0.6
    assert recommend_threshold(SCORES, LABELS, 0.75).threshold == 0.6
    rec = recommend_threshold(SCORES, LABELS, 1.0)
    assert rec.threshold == 0.3
    c = rec.confusion
    assert (c.tp, c.fp, c.tn, c.fn) == (4, 3, 2, 0)
    assert c.precision == pytest.approx(4 / 7) and c.fpr == pytest.approx(3 / 5)
    assert rec.as_json()["target_recall"] == 1.0 and rec.as_json()["tp"] == 4


def test_recommend_threshold_tiny_target_still_flags_one_positive():
    rec = recommend_threshold(SCORES, LABELS, 0.01)
    assert rec.threshold == 0.9 and rec.confusion.tp == 1


def test_recommend_threshold_target_is_not_missed_by_float_rounding():
    # 0.95 * 20 is 19 in exact arithmetic: 19 positives must be enough.
    scores = [i / 100 for i in range(40)]
    labels = [1] * 20 + [0] * 20  # the positives score lowest
    rec = recommend_threshold(scores, labels, 0.95)
    assert rec.confusion.tp == 19 and rec.threshold == 0.01


def test_recommend_threshold_with_ties_flags_the_whole_tied_group():
    rec = recommend_threshold([0.7, 0.7, 0.7, 0.2], [1, 1, 0, 0], 0.5)
    assert rec.threshold == 0.7
    assert (rec.confusion.tp, rec.confusion.fp) == (2, 1)
    assert rec.confusion.recall == 1.0


def test_recommend_threshold_rounded_down_keeps_the_recall():
    rec = recommend_threshold([0.73456789, 0.73455, 0.1], [1, 0, 0], 1.0, decimals=4)
    assert rec.threshold == 0.7345
    assert rec.confusion.recall == 1.0 and rec.confusion.fp == 1  # the negative at 0.73455 is now flagged


def test_recommend_threshold_rejects_bad_targets_and_no_positives():
    for target in (0.0, -0.1, 1.01):
        with pytest.raises(ValueError, match="target recall"):
            recommend_threshold(SCORES, LABELS, target)
    with pytest.raises(ValueError, match="no positives"):
        recommend_threshold([0.1, 0.2], [0, 0], 0.9)


def test_floor_threshold_never_writes_a_number_above_the_score():
    assert floor_threshold(0.6, 4) == 0.6
    assert floor_threshold(0.39215686, 4) == 0.3921
    assert floor_threshold(0.99999, 2) == 0.99
    assert floor_threshold(1.0, 4) == 1.0
    assert floor_threshold(0.0, 4) == 0.0
    for value in np.random.default_rng(1).random(500):
        floored = floor_threshold(float(value), 4)
        assert floored <= value < floored + 1e-4 + 1e-12
        assert float(f"{floored:.4f}") == floored


def test_evaluate_reports_each_threshold_once_in_order():
    result = evaluate(SCORES, LABELS, [0.6, 0.3, 0.6], 0.75)
    assert [c.threshold for c in result.thresholds] == [0.3, 0.6]
    assert (result.positives, result.negatives) == (4, 5)
    assert result.roc_auc == pytest.approx(0.8)
    assert result.recommended.threshold == 0.6
    data = result.as_json()
    assert set(data) == {
        "positives",
        "negatives",
        "roc_auc",
        "average_precision",
        "thresholds",
        "recommended",
    }


# -- the label file -------------------------------------------------------------------------
def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_parse_label_accepts_every_spelling_in_any_case():
    for word in ("1", "true", "YES", "Positive", "nsfw", " NSFW "):
        assert parse_label(word) is True
    for word in ("0", "False", "no", "NEGATIVE", "sfw"):
        assert parse_label(word) is False
    for word in ("", "2", "maybe", "y"):
        assert parse_label(word) is None


def test_read_labels(tmp_path):
    labels = write(
        tmp_path / "labels.csv",
        "\ufeffFile,Label,note\n"  # a BOM and capitals, as spreadsheets write them
        "a.jpg,1,x\n"
        "\n"
        "./sub/b.png, no ,\n"
        '"c, with comma.jpg",NSFW,\n',
    )
    assert read_labels(labels) == {"a.jpg": True, "sub/b.png": False, "c, with comma.jpg": True}


def test_read_labels_columns_in_any_order(tmp_path):
    labels = write(tmp_path / "labels.csv", "label,file\nsfw,a.jpg\nnsfw,b.jpg\n")
    assert read_labels(labels) == {"a.jpg": False, "b.jpg": True}


def test_read_labels_reports_every_bad_line_with_its_number(tmp_path):
    labels = write(
        tmp_path / "labels.csv",
        "file,label\n"  # line 1
        "a.jpg,1\n"  # 2
        "b.jpg,maybe\n"  # 3
        "c.jpg\n"  # 4
        ",0\n"  # 5
        "a.jpg,0\n"  # 6
        "/etc/x.jpg,1\n"  # 7
        "../x.jpg,0\n"  # 8
        "d.jpg,0\n",  # 9
    )
    with pytest.raises(LabelFileError) as info:
        read_labels(labels)
    assert isinstance(info.value, ConfigError)
    message = str(info.value)
    assert message.startswith(f"{labels}: 6 problems:")
    assert "line 3: label 'maybe' is not one of 1/0, true/false" in message
    assert "line 4: 1 columns, the header has 2" in message
    assert "line 5: the file name is empty" in message
    assert "line 6: 'a.jpg' is listed again (first on line 2)" in message
    assert "line 7: '/etc/x.jpg' is not relative to DIR" in message
    assert "line 8: '../x.jpg' points outside DIR" in message
    assert len(info.value.problems) == 6


def test_read_labels_shows_at_most_twenty_problems(tmp_path):
    labels = write(tmp_path / "labels.csv", "file,label\n" + "".join(f"f{i}.jpg,?\n" for i in range(30)))
    with pytest.raises(LabelFileError) as info:
        read_labels(labels)
    message = str(info.value)
    assert "30 problems" in message and "... and 10 more" in message
    assert message.count("\n  line ") == MAX_PROBLEMS_SHOWN
    assert "line 21:" in message and "line 22:" not in message


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "the file is empty"),
        ("name,class\na.jpg,1\n", "line 1: the first line must be the header 'file,label'"),
        ("file,label\n", "no files are labelled"),
        ("file,label\na.jpg,1\nb.jpg,yes\n", "no negative files among the 2 labelled"),
        ("file,label\na.jpg,0\n", "no positive files among the 1 labelled: precision, ROC AUC"),
    ],
)
def test_read_labels_rejects_unusable_files(tmp_path, text, expected):
    with pytest.raises(LabelFileError, match=expected):
        read_labels(write(tmp_path / "labels.csv", text))


def test_read_labels_missing_or_binary_file(tmp_path):
    with pytest.raises(LabelFileError, match="cannot read it"):
        read_labels(tmp_path / "absent.csv")
    (tmp_path / "bin.csv").write_bytes(b"\xff\xfe\x00\x81garbage")
    with pytest.raises(LabelFileError, match="not a UTF-8 CSV"):
        read_labels(tmp_path / "bin.csv")


# -- the per-file CSV ---------------------------------------------------------------------
def test_write_scores_csv(tmp_path):
    both = Scores(0.65, (ModelScore("open_nsfw", "open_nsfw-abc", 0.7), ModelScore("other", "other-1", 0.6)))
    rows = [
        ScoredFile.from_scores("a.jpg", True, both),
        ScoredFile("b.jpg", False, 0.125, {"open_nsfw": 0.125}),  # "other" missing: empty cell
        ScoredFile.failed("c.jpg", True, "media_undecodable: not an image"),
        ScoredFile("d.jpg", False, 0.6, {"open_nsfw": 0.6, "other": 0.6}),
    ]
    path = tmp_path / "scores.csv"
    write_scores_csv(path, rows, review_threshold=0.6)
    with open(path, newline="", encoding="utf-8") as f:
        lines = list(csv.reader(f))
    assert lines == [
        ["file", "label", "score", "score_open_nsfw", "score_other", "predicted", "error"],
        ["a.jpg", "1", "0.65", "0.7", "0.6", "1", ""],
        ["b.jpg", "0", "0.125", "0.125", "", "0", ""],
        ["c.jpg", "1", "", "", "", "", "media_undecodable: not an image"],
        ["d.jpg", "0", "0.6", "0.6", "0.6", "1", ""],  # at the threshold: flagged
    ]


def test_write_scores_csv_keeps_full_precision(tmp_path):
    value = 0.1234567890123
    path = tmp_path / "scores.csv"
    write_scores_csv(path, [ScoredFile("a.jpg", True, value, {"m": value})], 0.5, models=["m"])
    row = list(csv.DictReader(path.open(encoding="utf-8")))[0]
    assert float(row["score"]) == value and float(row["score_m"]) == value
