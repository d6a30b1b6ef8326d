"""The picture ``moderation eval`` draws: precision-recall and ROC curves side by side.

matplotlib is imported inside :func:`plot_curves` (Agg canvas, no pyplot, no
global backend switch), so importing this module costs nothing and the service
never loads matplotlib. Without matplotlib installed, :func:`plot_curves` raises
ImportError.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy.typing as npt

from moderation.classify.evaluation import (
    Confusion,
    as_arrays,
    average_precision,
    confusion_at,
    precision_recall_curve,
    roc_auc,
    roc_curve,
)

REVIEW_STYLE = {"marker": "o", "color": "tab:red", "markersize": 9, "zorder": 5}
RECOMMENDED_STYLE = {"marker": "*", "color": "tab:green", "markersize": 15, "zorder": 6}


def _describe(name: str, c: Confusion) -> str:
    precision = "n/a" if c.precision is None else f"{c.precision:.3f}"
    recall = "n/a" if c.recall is None else f"{c.recall:.3f}"
    fpr = "n/a" if c.fpr is None else f"{c.fpr:.3f}"
    return f"{name}: precision {precision}, recall {recall}, FPR {fpr}"


def plot_curves(
    path: str | Path,
    scores: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    review_threshold: float,
    recommended_threshold: float,
    target_recall: float,
    models: Sequence[str],
    combine: str | None = None,
    errors: int = 0,
) -> Path:
    """Write a PNG: precision-recall (left) and ROC (right) curves of ``scores``
    against ``labels``, with the configured REVIEW_THRESHOLD and the recommended
    threshold marked on both, ROC AUC and average precision in the legends, and
    the models (and ``combine``, the rule joining several) and file counts in
    the title. Returns the path written."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    s, y = as_arrays(scores, labels)
    positives, negatives = int(y.sum()), int(y.size - y.sum())
    pr, roc = precision_recall_curve(s, y), roc_curve(s, y)
    ap, auc = average_precision(s, y), roc_auc(s, y)
    marked = [
        (f"REVIEW_THRESHOLD {review_threshold:g}", review_threshold, REVIEW_STYLE),
        (
            f"recommended {recommended_threshold:g} (recall \u2265 {target_recall:g})",
            recommended_threshold,
            RECOMMENDED_STYLE,
        ),
    ]

    fig = Figure(figsize=(14, 7.2), dpi=100)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.86, bottom=0.26, wspace=0.18)
    FigureCanvasAgg(fig)
    ax_pr, ax_roc = fig.subplots(1, 2)

    # Precision holds from one threshold's recall to the next: the step that
    # average precision sums.
    ax_pr.step(
        [0.0, *pr.recall],
        [pr.precision[0], *pr.precision],
        where="pre",
        color="tab:blue",
        linewidth=2,
        label=f"classifier (average precision {ap:.3f})",
    )
    prevalence = positives / (positives + negatives)
    ax_pr.axhline(prevalence, color="grey", linestyle="--", label=f"chance (prevalence {prevalence:.3f})")
    ax_pr.set(
        title="Precision-recall",
        xlabel="Recall (share of positives flagged)",
        ylabel="Precision (share of flagged files that are positive)",
    )

    ax_roc.plot(roc.fpr, roc.tpr, color="tab:blue", linewidth=2, label=f"classifier (ROC AUC {auc:.3f})")
    ax_roc.plot([0, 1], [0, 1], color="grey", linestyle="--", label="chance (AUC 0.5)")
    ax_roc.set(
        title="ROC",
        xlabel="False-positive rate (share of negatives flagged)",
        ylabel="Recall / true-positive rate",
    )

    for name, threshold, style in marked:
        confusion = confusion_at(s, y, threshold)
        text = _describe(name, confusion)
        if confusion.precision is not None and confusion.recall is not None:
            ax_pr.plot([confusion.recall], [confusion.precision], linestyle="none", label=text, **style)
        if confusion.fpr is not None and confusion.recall is not None:
            ax_roc.plot([confusion.fpr], [confusion.recall], linestyle="none", label=text, **style)

    for ax in (ax_pr, ax_roc):
        ax.set_xlim(-0.02, 1.02)
        ax.set_ylim(-0.02, 1.02)
        ax.grid(True, alpha=0.4)
        ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.11), fontsize=9, frameon=False)

    counts = f"{positives + negatives:,} files: {positives:,} positive, {negatives:,} negative"
    if errors:
        counts += f" ({errors:,} undecodable, excluded)"
    name = " + ".join(models) or "classifier"
    if combine and len(models) > 1:
        name += f" ({combine} of the scores)"
    fig.suptitle(f"Classifier evaluation: {name}\n{counts}", fontsize=13)
    out = Path(path)
    fig.savefig(out, format="png")
    return out
