"""Classifier throughput: the worker's own classify path against a bare
``InferenceSession.run`` loop on the same preprocessed tensors, per model.

    .venv/bin/python bench/classifier.py [--images 64] [--batch 8] [--rounds 3] [--models 'a b,c']

For each model card (default: every non-optional card under models/, then the
default ``CLASSIFIER_MODEL`` ensemble, whose bare loop runs each member's session):

- preprocess: ``Pipeline``'s preprocess step, which the worker runs on each event
  as it decodes it (pictures of 1024x768, the size the worker decodes a large
  photo to): resize, crop, colour order, normalisation;
- bare:   ``session.run`` on those tensors, in batches;
- worker: ``Pipeline.classify`` on the prepared events, in batches of the same
  size: what the worker's classify stage does (one run per model, softmax,
  scores, per-event verdicts).

All run in the same process, round after round, and the best round of each is
kept. Prints ms per image, images per second and worker/bare (the target is
>= 0.9), and the whole path (preprocess + classify) per image.
``--batch 1`` measures the unbatched path. Not a test.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from prometheus_client import CollectorRegistry  # noqa: E402

from moderation.classify.cards import available_models, find_card  # noqa: E402
from moderation.classify.ensemble import Ensemble, Member, load_ensemble  # noqa: E402
from moderation.classify.onnx_model import OnnxModel, SessionOptions  # noqa: E402
from moderation.config import Settings  # noqa: E402
from moderation.domain import HashSet  # noqa: E402
from moderation.events.uploads import make_upload_event, parse_upload_event  # noqa: E402
from moderation.media.load import Media, MediaLimits  # noqa: E402
from moderation.metrics import Metrics  # noqa: E402
from moderation.pipeline import Pipeline, Prepared  # noqa: E402
from moderation.routing import RoutingPolicy  # noqa: E402
from tests.support.images import synthetic_image  # noqa: E402


def pictures(count: int) -> list[np.ndarray]:
    return [cv2.resize(synthetic_image(seed), (1024, 768)) for seed in range(count)]


def prepared_events(images: list[np.ndarray], classifier: Ensemble) -> list[Prepared]:
    hashes = HashSet(sha256="0" * 64, md5="0" * 32, pdq="0" * 64, pdq_quality=100)
    out = []
    for i, img in enumerate(images):
        raw = make_upload_event(f"e{i}", f"c{i}", "u", "http://127.0.0.1/x.jpg", "image/jpeg")
        event = parse_upload_event(json.dumps(raw).encode())
        media = Media("image", "image/jpeg", (img,))
        out.append(Prepared(event, b"", media, hashes, (), classifier.preprocess(media.pictures)))
    return out


def timed(fn, batches: list) -> float:
    started = time.perf_counter()
    for batch in batches:
        fn(batch)
    return time.perf_counter() - started


def bench_model(
    name: str, images: list[np.ndarray], batch: int, rounds: int, threads: int
) -> dict[str, float]:
    options = SessionOptions(intra_op_threads=threads)
    classifier = (
        load_ensemble(name, options)
        if "," in name
        else Ensemble([Member(OnnxModel(find_card(name), options), 1.0)])
    )
    models = classifier.models
    pipeline = Pipeline(
        fetcher=None,  # type: ignore[arg-type]
        index=None,  # type: ignore[arg-type]
        classifier=classifier,
        policy=RoutingPolicy(),
        limits=MediaLimits(),
        metrics=Metrics(CollectorRegistry()),
    )
    events = prepared_events(images, classifier)
    tensors = {m.name: np.concatenate([e.tensors[m.name] for e in events]) for m in models}
    bare_batches = [{k: t[i : i + batch] for k, t in tensors.items()} for i in range(0, len(images), batch)]
    worker_batches = [events[i : i + batch] for i in range(0, len(events), batch)]
    singles = [[img] for img in images]

    def bare(x: dict[str, np.ndarray]) -> None:
        for model in models:
            model.session.run([model.output_name], {model.input_name: x[model.name]})

    bare(bare_batches[0])  # warm-up: first runs allocate
    pipeline.classify(worker_batches[0])
    best_bare, best_worker, best_pre = float("inf"), float("inf"), float("inf")
    for _ in range(rounds):
        best_pre = min(best_pre, timed(classifier.preprocess, singles))
        best_bare = min(best_bare, timed(bare, bare_batches))
        best_worker = min(best_worker, timed(pipeline.classify, worker_batches))
    n = len(images)
    return {
        "pre_ms": 1000 * best_pre / n,
        "path_ms": 1000 * (best_pre + best_worker) / n,
        "bare_ms": 1000 * best_bare / n,
        "worker_ms": 1000 * best_worker / n,
        "bare_ips": n / best_bare,
        "worker_ips": n / best_worker,
        "ratio": best_bare / best_worker,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--images", type=int, default=64)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="ONNX_THREADS (0: one per core)")
    ap.add_argument(
        "--models",
        default="",
        help="space-separated card names or comma-joined ensembles "
        "(default: every shipped model, then the default CLASSIFIER_MODEL ensemble)",
    )
    args = ap.parse_args()
    names = [m for m in args.models.split(" ") if m] or [
        m for m in available_models() if not find_card(m).optional
    ] + [Settings().classifier_model]
    images = pictures(args.images)
    print(
        f"{args.images} pictures of 1024x768, batch {args.batch}, best of {args.rounds} rounds, "
        f"{os.cpu_count()} cores, ONNX_THREADS={args.threads or 'auto'}"
    )
    print(
        "| model | bare ms/img | worker ms/img | bare img/s | worker img/s | worker/bare "
        "| preprocess ms/img | whole path img/s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name in names:
        r = bench_model(name, images, args.batch, args.rounds, args.threads)
        print(
            f"| {name} | {r['bare_ms']:.2f} | {r['worker_ms']:.2f} | {r['bare_ips']:.1f} "
            f"| {r['worker_ips']:.1f} | {r['ratio']:.2f} | {r['pre_ms']:.2f} | {1000 / r['path_ms']:.1f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
