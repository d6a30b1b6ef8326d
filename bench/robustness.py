"""Re-upload robustness of PDQ matching: plain hash versus query-side variants.

    .venv/bin/python bench/robustness.py [--synthetic 40] [--threshold 31] [--no-skimage]

Banks one PDQ per benign base image (scikit-image sample data plus synthetic
images), edits each image the way re-uploaders do (re-encode, resize, rotate,
mirror, greyscale, brightness, contrast, borders, overlays, crops, and
combinations), and prints a markdown table to stdout: the share of edited copies
caught at Hamming distance <= threshold with (a) the plain PDQ of the upload
against the bank's one hash and (b) ``pdq_variants`` of the upload against
``bank_hashes`` of the bank image, the median of the smallest distance, and
how many catches also pass the service's quality >= 50 rule. Then the
false-match rate over all ordered pairs of unrelated images (and of edited
uploads against unrelated bank images), and the time per image. Progress goes
to stderr. Not a test: nothing is asserted.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import cv2
import numpy as np

from moderation.hashing import pdq
from moderation.hashing.variants import (
    DIHEDRAL,
    apply_dihedral,
    bank_hashes,
    pdq_variants,
    pdq_variants_with_quality,
)
from tests.support.images import synthetic_image

Image = np.ndarray
Edit = Callable[[Image], Image]
MIN_QUALITY = 50  # the service auto-removes only at PDQ quality >= 50

SKIMAGE_NAMES = (
    "astronaut", "camera", "coffee", "chelsea", "rocket", "coins", "hubble_deep_field",
    "immunohistochemistry", "stereo_motorcycle", "page", "retina", "moon", "text", "clock",
    "grass", "gravel", "brick", "cell", "colorwheel", "logo", "horse", "shepp_logan_phantom",
)  # fmt: skip

# Query sets compared (ablation): which upload variant names take part.
QUERY_SETS: dict[str, Callable[[str], bool]] = {
    "dihedral": lambda name: name in DIHEDRAL,
    "+trimmed": lambda name: name in DIHEDRAL or name == "trimmed",
    "all": lambda name: True,
}


def skimage_images() -> dict[str, Image]:
    import skimage.data

    out: dict[str, Image] = {}
    for name in SKIMAGE_NAMES:
        try:
            raw = getattr(skimage.data, name)()
        except Exception as exc:  # some sample files need pooch and a download
            print(f"skip skimage {name}: {exc.__class__.__name__}", file=sys.stderr)
            continue
        if name == "stereo_motorcycle":
            raw = raw[0]  # the left view ("motorcycle_left")
        out[name] = to_bgr(np.asarray(raw))
    return out


def to_bgr(raw: np.ndarray) -> Image:
    if raw.dtype == bool:
        raw = raw.astype(np.uint8) * 255
    elif raw.dtype != np.uint8:
        raw = (255 * (raw - raw.min()) / max(1e-9, float(raw.max() - raw.min()))).astype(np.uint8)
    if raw.ndim == 2:
        return cv2.cvtColor(raw, cv2.COLOR_GRAY2BGR)
    if raw.shape[2] == 4:  # RGBA logo: composite on white
        alpha = raw[..., 3:4].astype(np.float32) / 255
        raw = (raw[..., :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return cv2.cvtColor(raw, cv2.COLOR_RGB2BGR)


# -- edits ---------------------------------------------------------------------------
def jpeg(img: Image, quality: int = 50) -> Image:
    ok, buf = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, quality])
    decoded = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    assert ok and decoded is not None
    return decoded


def resize(img: Image, scale: float) -> Image:
    h, w = img.shape[:2]
    return cv2.resize(img, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)


def reencode(img: Image) -> Image:
    """tests.support.images.reencoded_copy, decoded: 60% size, JPEG quality 70."""
    return jpeg(resize(img, 0.6), 70)


def border(img: Image, top: float, bottom: float, left: float, right: float, color: tuple[int, ...]) -> Image:
    """``img`` with constant-colour bars, each a fraction of the image's height or width."""
    h, w = img.shape[:2]
    t, b, lft, r = round(top * h), round(bottom * h), round(left * w), round(right * w)
    return cv2.copyMakeBorder(img, t, b, lft, r, cv2.BORDER_CONSTANT, value=color)


def letterbox(img: Image) -> Image:
    return border(img, 0.15, 0.15, 0, 0, (0, 0, 0))


def pillarbox(img: Image) -> Image:
    return border(img, 0, 0, 0.15, 0.15, (0, 0, 0))


def white_padding(img: Image) -> Image:
    return border(img, 0.1, 0.1, 0.1, 0.1, (255, 255, 255))


def coloured_border(img: Image) -> Image:
    return border(img, 0.06, 0.06, 0.06, 0.06, (40, 140, 230))


def adjust(img: Image, gain: float, offset: float) -> Image:
    out = (img.astype(np.float32) - 128) * gain + 128 + offset
    return out.clip(0, 255).astype(np.uint8)


def greyscale(img: Image) -> Image:
    return cv2.cvtColor(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)


def watermark_text(img: Image) -> Image:
    out = img.copy()
    h, w = out.shape[:2]
    scale = max(0.4, min(h, w) / 500)
    text = "@reuploader"
    (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 2)
    org = (w - tw - w // 40, h - h // 30)
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), 4, cv2.LINE_AA)
    cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 2, cv2.LINE_AA)
    return out


def logo_overlay(img: Image) -> Image:
    out = img.copy()
    h, w = out.shape[:2]
    x0, y0 = w // 30, h // 30
    cv2.rectangle(out, (x0, y0), (x0 + w // 8, y0 + h // 12), (30, 200, 240), -1)
    return out


def crop(img: Image, top: float, bottom: float, left: float, right: float) -> Image:
    h, w = img.shape[:2]
    return img[round(top * h) : h - round(bottom * h), round(left * w) : w - round(right * w)]


def rot(name: str) -> Edit:
    return lambda img: apply_dihedral(img, name)


@dataclass(frozen=True)
class Case:
    name: str
    upload: Edit
    bank: Edit | None = None  # edit applied to the banked image (default: banked as is)


CASES = (
    Case("JPEG q=50", jpeg),
    Case("resize 50%", lambda i: resize(i, 0.5)),
    Case("resize 25%", lambda i: resize(i, 0.25)),
    Case("rotate 90", rot("rotate90")),
    Case("rotate 180", rot("rotate180")),
    Case("rotate 270", rot("rotate270")),
    Case("mirror", rot("flip_horizontal")),
    Case("greyscale", greyscale),
    Case("brightness +40", lambda i: adjust(i, 1.0, 40)),
    Case("contrast x1.4", lambda i: adjust(i, 1.4, 0)),
    Case("contrast x0.7", lambda i: adjust(i, 0.7, 0)),
    Case("letterbox 15% black", letterbox),
    Case("pillarbox 15% black", pillarbox),
    Case("white padding 10%", white_padding),
    Case("coloured border 6%", coloured_border),
    Case("watermark text", watermark_text),
    Case("logo rectangle", logo_overlay),
    Case("crop 5% each side", lambda i: crop(i, 0.05, 0.05, 0.05, 0.05)),
    Case("crop 5% one side", lambda i: crop(i, 0, 0, 0, 0.05)),
    Case("rotate 90 + re-encode", lambda i: reencode(rot("rotate90")(i))),
    Case("mirror + re-encode", lambda i: reencode(rot("flip_horizontal")(i))),
    Case("letterbox + re-encode", lambda i: reencode(letterbox(i))),
    Case("white padding + JPEG q=50", lambda i: jpeg(white_padding(i))),
    Case("rotate 90 + letterbox", lambda i: letterbox(rot("rotate90")(i))),
    Case("mirror + pillarbox + re-encode", lambda i: reencode(pillarbox(rot("flip_horizontal")(i)))),
    Case("bank letterboxed, upload clean re-encode", reencode, bank=letterbox),
    Case("bank white-padded, upload pillarboxed", pillarbox, bank=white_padding),
)


# -- matching ------------------------------------------------------------------------
def packed(hexes: list[str]) -> np.ndarray:
    return np.stack([pdq.hex_to_bytes(h) for h in hexes]) if hexes else np.zeros((0, 32), np.uint8)


def min_distance(query: list[str], bank: list[str]) -> int:
    b = packed(bank)
    return min(int(pdq.distances(pdq.hex_to_bytes(q), b).min()) for q in query)


@dataclass
class Outcome:
    plain: int
    plain_quality: int
    best: dict[str, tuple[int, int]]  # query set -> (min distance, quality of the closest variant)


def compare(upload: Image, bank_plain: str, bank_var: list[str]) -> Outcome:
    plain_hex, plain_q = pdq.hash_image(upload)
    variants = pdq_variants_with_quality(upload)
    b = packed(bank_var)
    dist = {name: int(pdq.distances(pdq.hex_to_bytes(h), b).min()) for name, (h, _) in variants.items()}
    best = {}
    for label, keep in QUERY_SETS.items():
        name = min((n for n in dist if keep(n)), key=lambda n: dist[n])
        best[label] = (dist[name], variants[name][1])
    return Outcome(pdq.distance(plain_hex, bank_plain), plain_q, best)


def pct(k: int, n: int) -> str:
    return f"{100 * k / n:.0f}%" if n else "-"


def robustness_table(
    bases: dict[str, Image], threshold: int, rates: list[tuple[str, float, float]] | None = None
) -> list[str]:
    """Markdown rows; ``rates`` (if given) gets (edit, plain share, all-variants share) per edit."""
    plain_bank = {n: pdq.hash_image(img)[0] for n, img in bases.items()}
    var_bank = {n: list(bank_hashes(img).values()) for n, img in bases.items()}
    rows = [
        f"| edit (n={len(bases)}) | plain <= {threshold} | dihedral | +trimmed | all variants "
        "| median d plain | median d all | all & q>=50 | upload q<50 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for i, case in enumerate(CASES, 1):
        print(f"[{i}/{len(CASES)}] {case.name}", file=sys.stderr)
        outcomes = []
        for name, img in bases.items():
            if case.bank is None:
                bp, bv = plain_bank[name], var_bank[name]
            else:
                banked = case.bank(img)
                bp, bv = pdq.hash_image(banked)[0], list(bank_hashes(banked).values())
            outcomes.append(compare(case.upload(img), bp, bv))
        n = len(outcomes)

        def caught(label: str, need_quality: bool = False, outcomes: list[Outcome] = outcomes) -> int:
            return sum(
                o.best[label][0] <= threshold and (not need_quality or o.best[label][1] >= MIN_QUALITY)
                for o in outcomes
            )

        if rates is not None:
            rates.append((case.name, sum(o.plain <= threshold for o in outcomes) / n, caught("all") / n))
        rows.append(
            f"| {case.name} | {pct(sum(o.plain <= threshold for o in outcomes), n)} "
            f"| {pct(caught('dihedral'), n)} | {pct(caught('+trimmed'), n)} | {pct(caught('all'), n)} "
            f"| {statistics.median(o.plain for o in outcomes):.0f} "
            f"| {statistics.median(o.best['all'][0] for o in outcomes):.0f} "
            f"| {pct(caught('all', True), n)} | {sum(o.plain_quality < MIN_QUALITY for o in outcomes)} |"
        )
    return rows


def false_matches(bases: dict[str, Image], threshold: int, edited: bool) -> list[str]:
    """Distances of unrelated pairs: each upload (a base image, or with ``edited`` each
    edit of it) against every other bank image, for plain PDQ and each query set."""
    names = list(bases)
    qualities = {n: pdq.hash_image(img)[1] for n, img in bases.items()}
    bank_rows: list[str] = []
    bank_owner: list[int] = []
    plain_rows: list[str] = []
    for j, n in enumerate(names):
        for h in bank_hashes(bases[n]).values():
            bank_rows.append(h)
            bank_owner.append(j)
        plain_rows.append(pdq.hash_image(bases[n])[0])
    bank_p, plain_p, owner = packed(bank_rows), packed(plain_rows), np.array(bank_owner)
    stats: dict[str, list[int]] = {label: [] for label in ("plain", *QUERY_SETS)}
    good: list[bool] = []
    for i, n in enumerate(names):
        uploads = [bases[n]] if not edited else [c.upload(bases[n]) for c in CASES if c.bank is None]
        others = np.arange(len(names)) != i
        for up in uploads:
            plain_d = pdq.distances(pdq.hex_to_bytes(pdq.hash_image(up)[0]), plain_p)
            stats["plain"].extend(plain_d[others].tolist())
            variants = pdq_variants(up)
            for label, keep in QUERY_SETS.items():
                per_owner = np.full(len(names), 256, dtype=np.int32)
                for name, h in variants.items():
                    if keep(name):
                        np.minimum.at(per_owner, owner, pdq.distances(pdq.hex_to_bytes(h), bank_p))
                stats[label].extend(per_owner[others].tolist())
            good.extend(qualities[n] >= MIN_QUALITY and qualities[m] >= MIN_QUALITY for m in names if m != n)
        print(f"  false matches{' (edited)' if edited else ''}: {i + 1}/{len(names)}", file=sys.stderr)
    g = np.array(good)
    rows = [
        f"| query | pairs | <= {threshold} | rate | both q>=50: <= {threshold} | <= 40 | <= 50 "
        "| min distance |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label, values in stats.items():
        d = np.array(values)
        k = int((d <= threshold).sum())
        rows.append(
            f"| {label} | {d.size} | {k} | {k / d.size:.4%} | {int((d[g] <= threshold).sum())} "
            f"| {int((d <= 40).sum())} | {int((d <= 50).sum())} | {int(d.min())} |"
        )
    return rows


def timing(bases: dict[str, Image], repeat: int) -> list[str]:
    """CPU time per image (process time, so other jobs on a shared machine count less),
    functions interleaved within each run, best run kept."""
    bordered = {n: letterbox(img) for n, img in bases.items()}
    funcs: list[tuple[str, Callable[[Image], object], dict[str, Image]]] = [
        ("pdq.hash_image", pdq.hash_image, bases),
        ("pdq_variants (no border: 8 dihedral)", pdq_variants, bases),
        ("pdq_variants (letterboxed: + 8 trimmed)", pdq_variants, bordered),
        ("pdq_variants(dihedral=False) (letterboxed)", lambda i: pdq_variants(i, dihedral=False), bordered),
        ("bank_hashes (letterboxed)", bank_hashes, bordered),
    ]
    best = {label: float("inf") for label, _, _ in funcs}
    for _ in range(repeat):
        for label, fn, images in funcs:
            t0 = time.process_time()
            for img in images.values():
                fn(img)
            best[label] = min(best[label], (time.process_time() - t0) * 1000 / len(images))
    rows = [f"| function | CPU ms per image (best of {repeat}) |", "|---|---:|"]
    rows += [f"| {label} | {ms:.1f} |" for label, ms in best.items()]
    return rows


def plot_rates(rates: list[tuple[str, float, float]], n: int, threshold: int, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r[0] for r in rates][::-1]
    y = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(names) + 1.2))
    ax.barh(y + 0.2, [100 * r[1] for r in rates][::-1], 0.4, label="plain PDQ", color="#bbbbbb")
    ax.barh(
        y - 0.2, [100 * r[2] for r in rates][::-1], 0.4, label="with variants (PDQ_VARIANTS)", color="#2b6cb0"
    )
    ax.set_yticks(y, names, fontsize=8)
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"copies caught at PDQ distance <= {threshold} (%)")
    ax.set_title(f"Re-upload catch rate per edit ({n} benign images)", fontsize=10)
    ax.legend(loc="lower right", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    print(f"plot written to {path}", file=sys.stderr)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--synthetic", type=int, default=40, help="synthetic images (seeds 1000..)")
    ap.add_argument("--threshold", type=int, default=31)
    ap.add_argument("--no-skimage", action="store_true")
    ap.add_argument("--repeat", type=int, default=5, help="timing runs")
    ap.add_argument("--skip-edited-false-matches", action="store_true")
    ap.add_argument("--timing-only", action="store_true")
    ap.add_argument(
        "--plot", metavar="PNG", help="also draw the catch rates (needs matplotlib: the bench extra)"
    )
    args = ap.parse_args()

    bases = {} if args.no_skimage else skimage_images()
    bases.update({f"synthetic_{s}": synthetic_image(s) for s in range(1000, 1000 + args.synthetic)})
    low = {n: q for n, img in bases.items() if (q := pdq.hash_image(img)[1]) < MIN_QUALITY}
    print(f"{len(bases)} base images", file=sys.stderr)
    if args.timing_only:
        print("\n".join(timing(bases, args.repeat)))
        return

    out = [f"## Catch rate at PDQ distance <= {args.threshold} ({len(bases)} base images)", ""]
    rates: list[tuple[str, float, float]] = []
    out += robustness_table(bases, args.threshold, rates)
    if args.plot:
        plot_rates(rates, len(bases), args.threshold, args.plot)
    out += [
        "",
        "dihedral: the 8 dihedral variants; +trimmed: and `trimmed`; all: and `trimmed_<dihedral>`"
        " (what pdq_variants returns). Bank side: `bank_hashes` (original, trimmed if bordered);"
        " plain: one hash each side.",
        "",
        "Base images with PDQ quality < 50 (never auto-removed): "
        + (", ".join(f"{n} ({q})" for n, q in sorted(low.items())) or "none"),
        "",
        "## False matches between unrelated images (ordered pairs: upload variants vs bank hashes)",
        "",
    ]
    out += false_matches(bases, args.threshold, edited=False)
    if not args.skip_edited_false_matches:
        out += ["", "Every edited upload above (bank-side cases excluded) vs every unrelated bank image:", ""]
        out += false_matches(bases, args.threshold, edited=True)
    out += ["", "## Time per image", ""]
    out += timing(bases, args.repeat)
    print("\n".join(out))


if __name__ == "__main__":
    main()
