"""Evaluating the classifier on an operator's labelled pictures (``moderation eval``).

Pure logic: the label file, the metrics and the per-file CSV. A file counts as
flagged when its score is at or above the threshold, as the worker routes an
upload to review when ``score >= REVIEW_THRESHOLD``.

The metrics follow scikit-learn's definitions (``roc_auc_score``,
``average_precision_score``, ``precision_recall_curve``) and are exact with tied
scores: the ROC AUC is the Mann-Whitney statistic, the probability that a random
positive scores above a random negative, ties counting one half.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np
import numpy.typing as npt

from moderation.classify import Scores
from moderation.errors import ConfigError

POSITIVE_LABELS = ("1", "true", "yes", "positive", "nsfw")
NEGATIVE_LABELS = ("0", "false", "no", "negative", "sfw")
LABEL_CHOICES = "1/0, true/false, yes/no, positive/negative, nsfw/sfw"
MAX_PROBLEMS_SHOWN = 20


# -- the label file ----------------------------------------------------------------------
class LabelFileError(ConfigError):
    """The label file cannot be used; ``problems`` lists every fault found."""

    code = "bad_label_file"

    def __init__(self, path: str | Path, problems: Sequence[str]) -> None:
        self.path = str(path)
        self.problems = list(problems)
        shown = self.problems[:MAX_PROBLEMS_SHOWN]
        lines = [f"{self.path}: {_plural(len(self.problems), 'problem')}:"]
        lines += [f"  {p}" for p in shown]
        if len(self.problems) > len(shown):
            lines.append(f"  ... and {len(self.problems) - len(shown)} more")
        super().__init__("\n".join(lines))


def parse_label(text: str) -> bool | None:
    """True for a positive label, False for a negative one, None if not a label."""
    value = text.strip().lower()
    if value in POSITIVE_LABELS:
        return True
    if value in NEGATIVE_LABELS:
        return False
    return None


def _normal_file(text: str) -> tuple[str, str | None]:
    """The file name as a normalised relative POSIX path, and what is wrong with it."""
    name = text.strip()
    if not name:
        return name, "the file name is empty"
    path = PurePosixPath(name)
    if path.is_absolute():
        return name, f"{name!r} is not relative to DIR"
    if ".." in path.parts:
        return name, f"{name!r} points outside DIR (..)"
    return path.as_posix(), None


def read_labels(path: str | Path) -> dict[str, bool]:
    """Read a ``file,label`` CSV: ``{relative file: True if positive}``, in file order.

    The header names the ``file`` and ``label`` columns (any order, any case; other
    columns are ignored). Blank lines are skipped. Every fault is collected, with
    its line number, into one :class:`LabelFileError`.
    """
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            return _parse_labels(path, csv.reader(f))
    except OSError as exc:
        raise LabelFileError(path, [f"cannot read it: {exc.strerror or exc}"]) from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise LabelFileError(path, [f"not a UTF-8 CSV file: {exc}"]) from None


def _parse_labels(path: str | Path, reader: Any) -> dict[str, bool]:
    problems: list[str] = []
    header: list[str] | None = None
    file_col = label_col = 0
    labels: dict[str, bool] = {}
    first_line: dict[str, int] = {}
    for row in reader:
        line = reader.line_num
        if not any(cell.strip() for cell in row):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in row]
            if "file" not in header or "label" not in header:
                raise LabelFileError(
                    path, [f"line {line}: the first line must be the header 'file,label', not {row!r}"]
                )
            file_col, label_col = header.index("file"), header.index("label")
            continue
        if len(row) < len(header):
            problems.append(f"line {line}: {len(row)} columns, the header has {len(header)}")
            continue
        name, fault = _normal_file(row[file_col])
        if fault:
            problems.append(f"line {line}: {fault}")
            continue
        label = parse_label(row[label_col])
        if label is None:
            problems.append(f"line {line}: label {row[label_col].strip()!r} is not one of {LABEL_CHOICES}")
            continue
        if name in first_line:
            problems.append(f"line {line}: {name!r} is listed again (first on line {first_line[name]})")
            continue
        first_line[name] = line
        labels[name] = label
    if header is None:
        raise LabelFileError(
            path, ["the file is empty: expected a header 'file,label' and one line per file"]
        )
    if problems:
        raise LabelFileError(path, problems)
    positives = sum(labels.values())
    if not labels:
        raise LabelFileError(path, ["no files are labelled"])
    if positives == 0 or positives == len(labels):
        missing = "positive" if positives == 0 else "negative"
        raise LabelFileError(
            path,
            [
                f"no {missing} files among the {len(labels)} labelled: precision, ROC AUC and the "
                "recommended threshold need at least one file of each class"
            ],
        )
    return labels


# -- metrics -----------------------------------------------------------------------------
def as_arrays(scores: npt.ArrayLike, labels: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Scores as float64 and labels as bool, checked to match in length and be finite."""
    s = np.asarray(scores, dtype=np.float64).ravel()
    y = np.asarray(labels, dtype=bool).ravel()
    if s.shape != y.shape:
        raise ValueError(f"{s.size} scores but {y.size} labels")
    if not np.all(np.isfinite(s)):
        raise ValueError("scores must be finite numbers")
    return s, y


def _both_classes(y: np.ndarray) -> tuple[int, int]:
    positives = int(y.sum())
    negatives = int(y.size - positives)
    if positives == 0 or negatives == 0:
        raise ValueError("undefined unless there is at least one positive and one negative")
    return positives, negatives


def _ratio(num: int, den: int) -> float | None:
    return num / den if den else None


@dataclass(frozen=True)
class Confusion:
    """Counts at one threshold: flagged means ``score >= threshold``."""

    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int

    @property
    def precision(self) -> float | None:
        """Share of flagged files that are positive; None when nothing is flagged."""
        return _ratio(self.tp, self.tp + self.fp)

    @property
    def recall(self) -> float | None:
        """Share of positives flagged (true-positive rate); None without positives."""
        return _ratio(self.tp, self.tp + self.fn)

    @property
    def fpr(self) -> float | None:
        """Share of negatives flagged (false-positive rate); None without negatives."""
        return _ratio(self.fp, self.fp + self.tn)

    def as_json(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "precision": self.precision,
            "recall": self.recall,
            "fpr": self.fpr,
            "tp": self.tp,
            "fp": self.fp,
            "tn": self.tn,
            "fn": self.fn,
        }


def confusion_at(scores: npt.ArrayLike, labels: npt.ArrayLike, threshold: float) -> Confusion:
    s, y = as_arrays(scores, labels)
    flagged = s >= threshold
    tp = int(np.count_nonzero(flagged & y))
    fp = int(np.count_nonzero(flagged & ~y))
    fn = int(np.count_nonzero(~flagged & y))
    tn = int(np.count_nonzero(~flagged & ~y))
    return Confusion(float(threshold), tp, fp, tn, fn)


def _cumulative(s: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Distinct scores, highest first, with the TP and FP counts at each as threshold."""
    order = np.argsort(-s, kind="mergesort")
    s_sorted, y_sorted = s[order], y[order]
    last_of_group = np.r_[np.flatnonzero(np.diff(s_sorted)), s.size - 1]
    tp = np.cumsum(y_sorted)[last_of_group]
    fp = last_of_group + 1 - tp
    return s_sorted[last_of_group], tp, fp


@dataclass(frozen=True)
class RocCurve:
    """From (0, 0) at threshold +inf to (1, 1) at the lowest score, one point per distinct score."""

    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray


def roc_curve(scores: npt.ArrayLike, labels: npt.ArrayLike) -> RocCurve:
    s, y = as_arrays(scores, labels)
    positives, negatives = _both_classes(y)
    thresholds, tp, fp = _cumulative(s, y)
    return RocCurve(
        fpr=np.r_[0.0, fp / negatives],
        tpr=np.r_[0.0, tp / positives],
        thresholds=np.r_[np.inf, thresholds],
    )


def roc_auc(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Area under the ROC curve, exact with ties (Mann-Whitney U / (P * N))."""
    s, y = as_arrays(scores, labels)
    positives, negatives = _both_classes(y)
    _, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    mid_ranks = ends - (counts - 1) / 2.0  # 1-based rank, averaged over each group of ties
    rank_sum = float(mid_ranks[inverse][y].sum())
    return (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)


@dataclass(frozen=True)
class PrCurve:
    """One point per distinct score, highest threshold first (recall rising)."""

    precision: np.ndarray
    recall: np.ndarray
    thresholds: np.ndarray


def precision_recall_curve(scores: npt.ArrayLike, labels: npt.ArrayLike) -> PrCurve:
    s, y = as_arrays(scores, labels)
    positives = int(y.sum())
    if positives == 0:
        raise ValueError("undefined without positives")
    thresholds, tp, fp = _cumulative(s, y)
    return PrCurve(precision=tp / (tp + fp), recall=tp / positives, thresholds=thresholds)


def average_precision(scores: npt.ArrayLike, labels: npt.ArrayLike) -> float:
    """Sum over thresholds of (recall gained) x precision, as scikit-learn computes it."""
    pr = precision_recall_curve(scores, labels)
    gained = np.diff(np.r_[0.0, pr.recall])
    return float(np.sum(gained * pr.precision))


@dataclass(frozen=True)
class Recommendation:
    """The highest threshold whose recall reaches ``target_recall``, with its counts."""

    target_recall: float
    confusion: Confusion

    @property
    def threshold(self) -> float:
        return self.confusion.threshold

    def as_json(self) -> dict[str, Any]:
        return {"target_recall": self.target_recall, **self.confusion.as_json()}


def floor_threshold(value: float, decimals: int) -> float:
    """``value`` rounded down to ``decimals`` places, such that the number as
    written (and read back from REVIEW_THRESHOLD) is never above ``value``."""
    step = 10.0**-decimals
    floored = float(f"{math.floor(value / step + 1e-9) * step:.{decimals}f}")
    while floored > value:
        floored = float(f"{floored - step:.{decimals}f}")
    return max(floored, 0.0)


def recommend_threshold(
    scores: npt.ArrayLike, labels: npt.ArrayLike, target_recall: float, decimals: int | None = None
) -> Recommendation:
    """The highest threshold at which recall >= ``target_recall``.

    It is the score of the positive that brings recall up to the target (ties
    included). With ``decimals`` the threshold is rounded down to that many
    places, as an operator would write REVIEW_THRESHOLD, and the counts are those
    at the rounded value (recall can only rise; precision may fall).
    """
    if not 0.0 < target_recall <= 1.0:
        raise ValueError(f"target recall {target_recall}: must be greater than 0 and at most 1")
    s, y = as_arrays(scores, labels)
    positives = int(y.sum())
    if positives == 0:
        raise ValueError("no positives: recall is undefined")
    needed = max(1, math.ceil(target_recall * positives - 1e-9))
    positive_scores = np.sort(s[y])[::-1]
    threshold = float(positive_scores[needed - 1])
    if decimals is not None:
        threshold = floor_threshold(threshold, decimals)
    return Recommendation(target_recall, confusion_at(s, y, threshold))


@dataclass(frozen=True)
class Evaluation:
    """Everything ``moderation eval`` reports about one set of scored files."""

    positives: int
    negatives: int
    roc_auc: float
    average_precision: float
    thresholds: tuple[Confusion, ...]
    recommended: Recommendation

    def as_json(self) -> dict[str, Any]:
        return {
            "positives": self.positives,
            "negatives": self.negatives,
            "roc_auc": self.roc_auc,
            "average_precision": self.average_precision,
            "thresholds": [c.as_json() for c in self.thresholds],
            "recommended": self.recommended.as_json(),
        }


def evaluate(
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    thresholds: Iterable[float],
    target_recall: float,
    decimals: int | None = 4,
) -> Evaluation:
    """Metrics at each of ``thresholds`` (sorted, deduplicated) and overall."""
    s, y = as_arrays(scores, labels)
    positives, negatives = _both_classes(y)
    return Evaluation(
        positives=positives,
        negatives=negatives,
        roc_auc=roc_auc(s, y),
        average_precision=average_precision(s, y),
        thresholds=tuple(confusion_at(s, y, t) for t in sorted(set(thresholds))),
        recommended=recommend_threshold(s, y, target_recall, decimals),
    )


# -- the per-file CSV --------------------------------------------------------------------
@dataclass(frozen=True)
class ScoredFile:
    """One labelled file: its scores, or why it could not be decoded."""

    file: str
    label: bool
    score: float | None = None
    model_scores: dict[str, float] = field(default_factory=dict, hash=False)
    error: str | None = None

    @classmethod
    def from_scores(cls, file: str, label: bool, scores: Scores) -> ScoredFile:
        return cls(file, label, scores.score, {m.model: m.score for m in scores.models})

    @classmethod
    def failed(cls, file: str, label: bool, error: str) -> ScoredFile:
        return cls(file, label, error=error)


def model_names(rows: Iterable[ScoredFile]) -> list[str]:
    """The models that scored any of ``rows``, in first-seen order."""
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row.model_scores))
    return list(names)


def write_scores_csv(
    path: str | Path,
    rows: Sequence[ScoredFile],
    review_threshold: float,
    models: Sequence[str] | None = None,
) -> None:
    """One line per file: ``file,label,score,score_<model>...,predicted,error``.

    ``label`` and ``predicted`` (score >= ``review_threshold``) are 1 or 0; scores
    are written in full precision. A file that could not be decoded has empty
    scores and prediction, and its error.
    """
    models = list(models) if models is not None else model_names(rows)
    with open(path, "w", encoding="utf-8", newline="") as f:
        out = csv.writer(f)
        out.writerow(["file", "label", "score", *(f"score_{m}" for m in models), "predicted", "error"])
        for row in rows:
            if row.score is None:
                values = ["", *("" for _ in models), ""]
            else:
                per_model = [_number(row.model_scores.get(m)) for m in models]
                values = [_number(row.score), *per_model, str(int(row.score >= review_threshold))]
            out.writerow([row.file, int(row.label), *values, row.error or ""])


def _number(value: float | None) -> str:
    return "" if value is None else repr(float(value))


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"
