"""``moderation classify`` scores local files as the worker would; ``moderation
eval``: measure the configured classifier on the operator's own
labelled pictures and videos, and pick REVIEW_THRESHOLD from the result.

Files are decoded as the worker decodes uploads (``load_media``: the picture, or
sampled video and animation frames) and scored in batches with the configured
classifier (``CLASSIFIER_MODEL``, ``CLASSIFIER_COMBINE``, ``ONNX_THREADS``); a
file's score is that of its most suspicious picture. Nothing is sent anywhere:
the files, the scores and the reports stay on this machine.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from moderation.classify import Classifier, highest_per_item
from moderation.classify.evaluation import (
    LABEL_CHOICES,
    Confusion,
    Evaluation,
    LabelFileError,
    ScoredFile,
    evaluate,
    model_names,
    read_labels,
    write_scores_csv,
)
from moderation.config import Settings, load_settings
from moderation.domain import UploadEvent
from moderation.errors import InvalidInput
from moderation.media.load import MediaLimits, load_media
from moderation.pipeline import Analysis, Prepared

SHOW_AT_MOST = 5  # undecodable, missing or ignored files named in the report
THRESHOLD_DECIMALS = 4  # the recommended threshold is rounded down to this many places


# -- helpers -----------------------------------------------------------------------------
def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not between 0 and 1")
    return value


def _target_recall(text: str) -> float:
    value = _fraction(text)
    if value == 0.0:
        raise argparse.ArgumentTypeError("the target recall must be greater than 0")
    return value


def _threshold_list(text: str) -> list[float]:
    return [_fraction(part) for part in text.split(",") if part.strip()]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def _fail(message: str) -> int:
    print(f"moderation: {message}", file=sys.stderr)
    return 2


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


class Progress:
    """``scored 1,200/5,000 files (37.2 files/s, ETA 1m42s)`` on a terminal, redrawn
    at most every ``interval`` seconds; elsewhere (a log, a pipe) only the final line."""

    def __init__(
        self,
        total: int,
        stream: TextIO | None = None,
        interval: float = 0.5,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.total = total
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval
        self.clock = clock
        self.start = self.last = clock()

    def _rate(self, done: int) -> float:
        elapsed = self.clock() - self.start
        return done / elapsed if elapsed > 0 else 0.0

    def update(self, done: int) -> None:
        now = self.clock()
        if not self.tty or now - self.last < self.interval:
            return
        self.last = now
        rate = self._rate(done)
        eta = f", ETA {_duration((self.total - done) / rate)}" if rate > 0 else ""
        line = f"scored {done:,}/{self.total:,} files ({rate:.1f} files/s{eta})"
        self.stream.write(f"\r{line}\x1b[K")
        self.stream.flush()

    def finish(self, done: int) -> None:
        elapsed = self.clock() - self.start
        line = (
            f"scored {done:,}/{self.total:,} files in {_duration(elapsed)} ({self._rate(done):.1f} files/s)"
        )
        self.stream.write(f"\r{line}\x1b[K\n" if self.tty else f"{line}\n")
        self.stream.flush()


def list_files(root: Path, skip: Sequence[Path] = ()) -> list[str]:
    """Every regular file under ``root`` as a relative POSIX path, sorted; hidden
    files and folders (``.name``) and the paths in ``skip`` are left out."""
    skipped = {p.resolve() for p in skip}
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            path = Path(dirpath, name)
            if name.startswith(".") or path.resolve() in skipped:
                continue
            found.append(path.relative_to(root).as_posix())
    return sorted(found)


def decode_file(path: Path, limits: MediaLimits) -> tuple[np.ndarray, ...] | str:
    """The file's pictures as the worker would see them, or why it cannot be decoded."""
    try:
        return load_media(path.read_bytes(), limits).pictures
    except OSError as exc:
        return f"unreadable: {exc.strerror or exc}"
    except InvalidInput as exc:
        return f"{exc.code}: {exc}"
    except Exception as exc:  # noqa: BLE001 - one odd file must not end a long run
        return f"{type(exc).__name__}: {exc}"


def classify_decoded(
    classifier: Classifier, batch: Sequence[tuple[str, bool, tuple[np.ndarray, ...] | str]]
) -> list[ScoredFile]:
    """Score a batch of decoded files with one ``classify`` call; a file's score is
    its most suspicious picture's. If the call fails, files are retried one by one
    so that only the file at fault is marked."""
    pictures = [p for _, _, decoded in batch if not isinstance(decoded, str) for p in decoded]
    try:
        scores = classifier.classify(pictures) if pictures else []
    except Exception:  # noqa: BLE001
        if len(batch) == 1:
            raise
        return [row for item in batch for row in _classify_alone(classifier, item)]
    counts = [len(decoded) for _, _, decoded in batch if not isinstance(decoded, str)]
    verdicts = iter(highest_per_item(scores, counts))
    return [
        ScoredFile.failed(name, label, decoded)
        if isinstance(decoded, str)
        else ScoredFile.from_scores(name, label, next(verdicts))
        for name, label, decoded in batch
    ]


def _classify_alone(
    classifier: Classifier, item: tuple[str, bool, tuple[np.ndarray, ...] | str]
) -> list[ScoredFile]:
    try:
        return classify_decoded(classifier, [item])
    except Exception as exc:  # noqa: BLE001
        return [ScoredFile.failed(item[0], item[1], f"classifier failed: {type(exc).__name__}: {exc}")]


def score_files(
    classifier: Classifier,
    root: Path,
    labels: dict[str, bool],
    limits: MediaLimits,
    batch_size: int,
    progress: Progress | None = None,
) -> list[ScoredFile]:
    """Decode and score every labelled file, in label-file order. The next batch
    is decoded (in threads) while the current one is classified."""
    items = list(labels.items())
    batches = [items[i : i + batch_size] for i in range(0, len(items), batch_size)]
    rows: list[ScoredFile] = []
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:

        def submit(batch: list[tuple[str, bool]]) -> list[Future[tuple[np.ndarray, ...] | str]]:
            return [pool.submit(decode_file, root / name, limits) for name, _ in batch]

        pending = submit(batches[0]) if batches else []
        for i, batch in enumerate(batches):
            decoded = [f.result() for f in pending]
            if i + 1 < len(batches):
                pending = submit(batches[i + 1])
            rows += classify_decoded(
                classifier, [(n, lab, d) for (n, lab), d in zip(batch, decoded, strict=True)]
            )
            if progress:
                progress.update(len(rows))
    if progress:
        progress.finish(len(rows))
    return rows


def scored_pairs(rows: Sequence[ScoredFile]) -> tuple[list[float], list[bool]]:
    """Scores and labels of the files that were scored (undecodable ones left out)."""
    pairs = [(r.score, r.label) for r in rows if r.score is not None]
    return [score for score, _ in pairs], [label for _, label in pairs]


def _files(count: int) -> str:
    return f"{count:,} file{'' if count == 1 else 's'}"


def _some(names: Sequence[str], limit: int = SHOW_AT_MOST) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit:,} more" if len(names) > limit else "")


def _ratio(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _threshold_rows(result: Evaluation, review_threshold: float) -> list[str]:
    notes: dict[float, list[str]] = {}
    rows: dict[float, Confusion] = {}
    for c in result.thresholds:
        rows[c.threshold] = c
        notes[c.threshold] = ["REVIEW_THRESHOLD"] if c.threshold == review_threshold else []
    rec = result.recommended
    rows.setdefault(rec.threshold, rec.confusion)
    notes.setdefault(rec.threshold, []).append(f"recommended (recall >= {rec.target_recall:g})")
    lines = [
        f"{'threshold':>9}  {'precision':>9}  {'recall':>7}  {'FPR':>7}  "
        f"{'TP':>7}  {'FP':>7}  {'TN':>7}  {'FN':>7}"
    ]
    for threshold in sorted(rows):
        c = rows[threshold]
        lines.append(
            f"{c.threshold:>9.4f}  {_ratio(c.precision):>9}  {_ratio(c.recall):>7}  {_ratio(c.fpr):>7}  "
            f"{c.tp:>7,}  {c.fp:>7,}  {c.tn:>7,}  {c.fn:>7,}  {', '.join(notes[threshold])}".rstrip()
        )
    return lines


def format_report(summary: dict[str, Any], result: Evaluation) -> str:
    """The human-readable summary printed without --json."""
    s = summary
    rec = result.recommended
    lines = [
        f"classifier  {', '.join(s['models'])} (CLASSIFIER_MODEL={s['classifier_model']}, "
        f"CLASSIFIER_COMBINE={s['combine']})",
        f"labelled    {_files(s['files'])} in {s['dir']}: {s['labelled_positives']:,} positive, "
        f"{s['labelled_negatives']:,} negative",
    ]
    if s["ignored"]:
        lines.append(f"ignored     {_files(s['ignored'])} in the folder that the label file does not list")
    if s["errors"]:
        lines.append(f"undecodable {_files(s['errors'])}, left out of the metrics (listed in the CSV)")
    lines += [
        f"scored      {_files(result.positives + result.negatives)}: {result.positives:,} positive, "
        f"{result.negatives:,} negative",
        "",
        f"ROC AUC            {result.roc_auc:.4f}",
        f"average precision  {result.average_precision:.4f}",
        "",
        *_threshold_rows(result, s["review_threshold"]),
        "",
        f"To flag at least {rec.target_recall:.0%} of the positives: REVIEW_THRESHOLD={rec.threshold:g}",
        f"  recall {_ratio(rec.confusion.recall)}, precision {_ratio(rec.confusion.precision)}, "
        f"false-positive rate {_ratio(rec.confusion.fpr)} "
        f"({rec.confusion.fp:,} of {result.negatives:,} negatives flagged)",
        "",
        f"plot    {s['plot'] or '(not drawn)'}",
        f"scores  {s['csv']}",
    ]
    return "\n".join(lines)


def _draw_plot(
    path: str, rows: Sequence[ScoredFile], summary: dict[str, Any], result: Evaluation
) -> str | None:
    from moderation.classify.plots import plot_curves

    scores, labels = scored_pairs(rows)
    try:
        plot_curves(
            path,
            scores,
            labels,
            review_threshold=summary["review_threshold"],
            recommended_threshold=result.recommended.threshold,
            target_recall=result.recommended.target_recall,
            models=summary["models"],
            combine=summary["combine"],
            errors=summary["errors"],
        )
    except ImportError:
        print(
            "moderation: no plot: matplotlib is not installed (it is a dependency: reinstall the package)",
            file=sys.stderr,
        )
        return None
    return path


# -- commands ----------------------------------------------------------------------------
EVAL_DESCRIPTION = """\
Score a folder of labelled pictures and videos with the configured classifier
(CLASSIFIER_MODEL, CLASSIFIER_COMBINE, ONNX_THREADS) and report how well it
separates positives from negatives: precision, recall and false-positive rate at
REVIEW_THRESHOLD and any --thresholds, ROC AUC, average precision, and the
highest threshold that still flags --target-recall of the positives.

Files are decoded as the worker decodes uploads (videos and animations by a few
sampled frames; a file scores as its most suspicious picture) and a file is
flagged when its score is at or above the threshold, as the worker sends an
upload to review. Nothing is sent anywhere: files, scores and reports stay on
this machine."""

EVAL_EPILOG = f"""\
label file (CSV, UTF-8, header line first; other columns are ignored):
  file,label
  beach/IMG_0001.jpg,0
  reports/case-1093.png,1

  file   path relative to DIR
  label  {LABEL_CHOICES} (any case);
         positive = should go to review
  Every labelled file must exist in DIR; files in DIR that the label file does
  not list are ignored (and counted). Both classes must be present.

output:
  standard output  the summary: a table, or one JSON object with --json
  standard error   progress, and the files that could not be decoded (they stay
                   in the CSV with their error and are left out of the metrics)
  --csv            one line per file: file, label, score, score_<model> for each
                   model, predicted (at REVIEW_THRESHOLD), error
  --plot           precision-recall and ROC curves with REVIEW_THRESHOLD and the
                   recommended threshold marked

exit status:
  0  done
  2  bad usage, a bad label file, labelled files missing from DIR, or no file
     of one class could be scored

examples:
  moderation eval ./labelled --labels ./labelled/labels.csv
  CLASSIFIER_COMBINE=max moderation eval ./labelled --labels labels.csv \\
      --thresholds 0.3,0.5,0.8 --target-recall 0.9 --json

See docs/classifier-eval.md."""


CLASSIFY_DESCRIPTION = """\
Score local pictures and videos with the configured classifier, exactly as the
worker scores an upload: the same decoding (sampled frames for videos and
animations; a file scores as its most suspicious picture), the same models,
weights and combine rule, the same bank matching and routing.

One JSON object per file (JSON lines when piped or with --json):
  path, models (each model's name, version, score and class probabilities),
  score (combined), combine, review_threshold, route, reason, priority,
  matches (bank matches, as `moderation match` prints them)."""

CLASSIFY_EPILOG = """\
examples:
  moderation classify photo.jpg clip.mp4
  CLASSIFIER_MODEL=open_nsfw moderation classify --json photos/*.jpg | jq .score
  moderation classify --no-banks photo.jpg      # the classifier alone

Exit status: 0 when every file was scored, 1 when any could not be read or
decoded (each reported on standard error), 2 for a bad configuration."""


def register(sub: Any) -> None:
    c = sub.add_parser(
        "classify",
        help="score local files with the configured classifier and show the route the worker would take",
        description=CLASSIFY_DESCRIPTION,
        epilog=CLASSIFY_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    c.add_argument("paths", nargs="+", metavar="FILE")
    c.add_argument(
        "--json", action="store_true", help="JSON lines even on a terminal (the default when piped)"
    )
    c.add_argument(
        "--no-banks",
        action="store_true",
        help="skip bank matching (no database needed): the classifier alone",
    )
    c.set_defaults(func=cmd_classify)

    e = sub.add_parser(
        "eval",
        help="measure the classifier on your own labelled files and recommend REVIEW_THRESHOLD",
        description=EVAL_DESCRIPTION,
        epilog=EVAL_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    e.add_argument("dir", metavar="DIR", help="folder holding the labelled pictures and videos")
    e.add_argument("--labels", required=True, metavar="FILE", help="CSV of file,label lines (format below)")
    e.add_argument(
        "--target-recall",
        type=_target_recall,
        default=0.95,
        metavar="R",
        help="share of positives the recommended threshold must flag, 0 < R <= 1 (default 0.95)",
    )
    e.add_argument(
        "--thresholds",
        type=_threshold_list,
        default=[],
        metavar="T,T,...",
        help="more thresholds to report, comma-separated, e.g. 0.3,0.5,0.8 "
        "(REVIEW_THRESHOLD is always reported)",
    )
    e.add_argument(
        "--plot",
        default="eval.png",
        metavar="PATH",
        help="PNG of the curves to write (default eval.png; overwritten)",
    )
    e.add_argument(
        "--csv",
        default="eval-scores.csv",
        metavar="PATH",
        help="per-file scores to write (default eval-scores.csv; overwritten)",
    )
    e.add_argument(
        "--batch-size",
        type=_positive_int,
        default=16,
        metavar="N",
        help="files scored per classifier run (default 16; lower it for very large images or videos)",
    )
    e.add_argument("--json", action="store_true", help="print the summary as one JSON object")
    e.set_defaults(func=cmd_eval)


def cmd_eval(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from moderation import runtime

    settings = settings or load_settings()
    root = Path(args.dir)
    if not root.is_dir():
        return _fail(f"{args.dir}: not a folder")
    for option, path in (("--csv", args.csv), ("--plot", args.plot)):
        if not Path(path).resolve().parent.is_dir():
            return _fail(f"{option} {path}: its folder does not exist")
    try:
        labels = read_labels(args.labels)
    except LabelFileError as exc:
        return _fail(str(exc))
    missing = [name for name in labels if not (root / name).is_file()]
    if missing:
        return _fail(
            f"{_files(len(missing))} listed in the label file are not in {args.dir}: {_some(missing, 20)}"
        )
    ignored = [
        name
        for name in list_files(root, skip=[Path(args.labels), Path(args.csv), Path(args.plot)])
        if name not in labels
    ]
    if ignored:
        print(
            f"moderation: ignoring {_files(len(ignored))} that {args.labels} does not list: {_some(ignored)}",
            file=sys.stderr,
        )

    classifier = runtime.build_classifier(settings)
    progress = Progress(len(labels))
    rows = score_files(classifier, root, labels, runtime.media_limits(settings), args.batch_size, progress)

    models = model_names(rows)
    write_scores_csv(args.csv, rows, settings.review_threshold, models)
    failed = [r for r in rows if r.error is not None]
    if failed:
        print(
            f"moderation: {_files(len(failed))} could not be decoded or classified "
            f"(left out of the metrics, listed in {args.csv}):",
            file=sys.stderr,
        )
        for r in failed[:SHOW_AT_MOST]:
            print(f"  {r.file}: {r.error}", file=sys.stderr)
        if len(failed) > SHOW_AT_MOST:
            print(f"  ... and {len(failed) - SHOW_AT_MOST:,} more", file=sys.stderr)

    scores, scored_labels = scored_pairs(rows)
    if set(scored_labels) != {True, False}:
        lacking = "positive" if True not in scored_labels else "negative"
        return _fail(f"no {lacking} file could be scored: the metrics need both classes (see {args.csv})")
    result = evaluate(
        scores,
        scored_labels,
        [settings.review_threshold, *args.thresholds],
        args.target_recall,
        THRESHOLD_DECIMALS,
    )
    summary: dict[str, Any] = {
        "dir": args.dir,
        "labels": args.labels,
        "classifier_model": settings.classifier_model,
        "combine": settings.classifier_combine,
        "models": models,
        "files": len(labels),
        "labelled_positives": sum(labels.values()),
        "labelled_negatives": len(labels) - sum(labels.values()),
        "ignored": len(ignored),
        "errors": len(failed),
        "review_threshold": settings.review_threshold,
        "csv": args.csv,
        "plot": None,
    }
    summary["plot"] = _draw_plot(args.plot, rows, summary, result)
    if args.json:
        print(json.dumps({**summary, **result.as_json()}))
    else:
        print(format_report(summary, result))
    return 0


# -- classify ------------------------------------------------------------------------------
def _local_event(path: str) -> UploadEvent:
    digest = hashlib.sha256(path.encode()).hexdigest()[:16]
    return UploadEvent(f"local-{digest}", path, "local-cli", f"file://{path}", "", datetime.now(UTC))


def classify_row(path: str, analysis: Analysis, settings: Settings) -> dict[str, Any]:
    """One file's verdict as ``moderation classify`` prints it."""
    verdict = analysis.verdict
    return {
        "path": path,
        "models": analysis.classification.as_json(),
        "score": round(analysis.score, 6),
        "combine": settings.classifier_combine,
        "review_threshold": settings.review_threshold,
        "route": verdict.route.value,
        "reason": verdict.reason,
        "priority": verdict.priority,
        "matches": [m.as_dict() for m in verdict.matches],
    }


def _print_human(row: dict[str, Any]) -> None:
    print(
        f"{row['path']}: {row['route']} ({row['reason']}, priority {row['priority']})\n"
        f"  score {row['score']:.4f} ({row['combine']} of {len(row['models'])} models;"
        f" review at >= {row['review_threshold']})"
    )
    for m in row["models"]:
        top = sorted(m["labels"].items(), key=lambda kv: -kv[1])[:3]
        labels = ", ".join(f"{k} {v:.3f}" for k, v in top)
        print(f"  {m['model']:<28} {m['score']:.4f}  [{labels}]  {m['version']}")
    for match in row["matches"]:
        print(
            f"  bank {match['bank']} entry {match['entry_id']}:"
            f" {match['signal']} distance {match['distance']}"
        )


def cmd_classify(args: argparse.Namespace, settings: Settings | None = None) -> int:
    from prometheus_client import CollectorRegistry

    from moderation import runtime
    from moderation.metrics import Metrics
    from moderation.storage.bank_feed import IndexFeeder
    from moderation.storage.db import open_sessions

    settings = settings or load_settings()
    as_json = args.json or not sys.stdout.isatty()
    pipeline = runtime.build_pipeline(settings, Metrics(CollectorRegistry()))
    if not args.no_banks:
        with open_sessions(settings.database_url) as sessions:
            IndexFeeder(sessions, pipeline.index).load(
                progress=lambda n: print(f"loaded {n:,} bank entries", file=sys.stderr, flush=True)
            )
    failures = 0
    paths = list(args.paths)
    size = settings.classify_batch_size
    for start in range(0, len(paths), size):
        prepared: list[tuple[str, Prepared]] = []
        for path in paths[start : start + size]:
            try:
                prepared.append((path, pipeline.prepare_bytes(_local_event(path), Path(path).read_bytes())))
            except OSError as exc:
                failures += 1
                print(json.dumps({"path": path, "error": exc.strerror or str(exc)}), file=sys.stderr)
            except InvalidInput as exc:
                failures += 1
                print(json.dumps({"path": path, "error": str(exc), "error_class": exc.code}), file=sys.stderr)
        verdicts = pipeline.classify([p for _, p in prepared])
        for (path, item), scores in zip(prepared, verdicts, strict=True):
            row = classify_row(path, pipeline.finish(item, scores), settings)
            if as_json:
                print(json.dumps(row), flush=True)
            else:
                _print_human(row)
    return 1 if failures else 0
