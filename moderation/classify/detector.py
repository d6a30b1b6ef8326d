"""Optional body-part detector: NudeNet 3.4's 320n model (AGPL-3.0, off by default).

LICENCE WARNING: the model file ``320n.onnx`` comes from the PyPI package
``nudenet`` (3.4.x), whose licence files are the GNU **AGPL-3.0**; the weights are
an Ultralytics YOLOv8n training, itself AGPL-3.0 (the ONNX metadata says so). The
package is never installed by default. An operator who installs it and serves
the console to moderators over a network takes on the AGPL's obligations; read
``models/nudenet_320n.md`` first.

What it is for: boxes around intimate body parts, which the review console
keeps blurred when a moderator reveals an item. It never affects routing or
scores. Only the ONNX file is used: it is located in the installed package
without importing the package's Python code, and the pre- and post-processing
are re-implemented here (numpy, OpenCV, ONNX Runtime) after
``nudenet/nudenet.py`` 3.4.2:

- pad the picture with black at the right or bottom to a square, resize the
  square to 320 x 320 (bilinear), RGB, scale to 0..1, NCHW float32;
- the output ``(N, 22, 2100)`` holds, per anchor, the box centre and size in
  model pixels and 18 class scores (YOLOv8 layout, no objectness column); a row's
  label is its best class, its score that class's score;
- keep rows scoring at least the threshold (0.25, NudeNet's effective
  threshold), then non-maximum suppression at IoU 0.45.

Deliberate differences from nudenet 3.4.2's own code:

- **channel order**: nudenet's ``_read_image`` calls ``cvtColor(COLOR_RGBA2BGR)``
  on OpenCV's BGR picture (which swaps red and blue) and then
  ``blobFromImage(swapRB=True)`` (which swaps them back), so its model sees BGR
  although Ultralytics trained it on RGB (upstream issue notAI-tech/NudeNet#203).
  We feed RGB, as trained.
- **labels before NMS**: only the labels in :data:`BLUR_LABELS` are kept, before
  suppression, and suppression is per label (Ultralytics' default). nudenet
  suppresses across all 18 labels at once, so a face or belly box could
  suppress an overlapping genitals box; for blurring, an extra box costs nothing
  and a missing one shows what should stay hidden.
- **clipping**: boxes are clipped on both edges (nudenet moves a box that starts
  left of or above the picture inside without shortening it) and returned
  relative to the picture (0..1) instead of in integer pixels.
"""

from __future__ import annotations

import hashlib
import importlib.util
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from moderation.classify.onnx_model import SessionOptions, make_session
from moderation.errors import ConfigError

MODEL_PACKAGE = "nudenet"
MODEL_FILE = "320n.onnx"
INPUT_SIZE = 320
DEFAULT_THRESHOLD = 0.25  # nudenet: rows >= 0.2, then NMSBoxes(score_threshold=0.25)
NMS_IOU = 0.45  # nudenet's NMSBoxes nms_threshold
MAX_BATCH = 16  # pictures per ONNX Runtime call (the model's batch axis is dynamic)
INSTALL_HINT = (
    "pip install 'nudenet>=3.4,<3.5' (the optional `nudenet` extra). Its licence is AGPL-3.0: "
    "read models/nudenet_320n.md before deploying it"
)

# The model's class list, in output order (nudenet 3.4.2 `__labels`; also in the
# ONNX metadata `names`, which the constructor checks against this list).
LABELS: tuple[str, ...] = (
    "FEMALE_GENITALIA_COVERED",
    "FACE_FEMALE",
    "BUTTOCKS_EXPOSED",
    "FEMALE_BREAST_EXPOSED",
    "FEMALE_GENITALIA_EXPOSED",
    "MALE_BREAST_EXPOSED",
    "ANUS_EXPOSED",
    "FEET_EXPOSED",
    "BELLY_COVERED",
    "FEET_COVERED",
    "ARMPITS_COVERED",
    "ARMPITS_EXPOSED",
    "FACE_MALE",
    "BELLY_EXPOSED",
    "MALE_GENITALIA_EXPOSED",
    "ANUS_COVERED",
    "FEMALE_BREAST_COVERED",
    "BUTTOCKS_COVERED",
)

# The regions the console keeps blurred. Exposed and covered genitalia, anus and
# buttocks, and exposed female breasts: in intimate imagery even the covered
# parts (underwear, swimwear) are what a moderator need not see to decide.
# Not kept: faces (moderators often need them, e.g. to match a victim's report),
# feet, belly, armpits, male chests, and covered female breasts (clothed
# torsos would otherwise be boxed in most ordinary photos).
BLUR_LABELS: frozenset[str] = frozenset(
    {
        "FEMALE_GENITALIA_EXPOSED",
        "FEMALE_GENITALIA_COVERED",
        "MALE_GENITALIA_EXPOSED",
        "FEMALE_BREAST_EXPOSED",
        "BUTTOCKS_EXPOSED",
        "BUTTOCKS_COVERED",
        "ANUS_EXPOSED",
        "ANUS_COVERED",
    }
)


@dataclass(frozen=True)
class Region:
    """One detected body part. The box is relative to the picture: ``x``, ``y`` is
    the top-left corner and ``w``, ``h`` the size, all fractions in 0..1."""

    label: str
    score: float
    x: float
    y: float
    w: float
    h: float

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "score": round(self.score, 4),
            "x": round(self.x, 5),
            "y": round(self.y, 5),
            "w": round(self.w, 5),
            "h": round(self.h, 5),
        }


def model_path() -> Path:
    """The installed package's ``320n.onnx``, found without importing the package.

    (``importlib.resources.files("nudenet")`` would import it, and its
    ``__init__`` imports nudenet's own detector code; ``find_spec`` only finds it.)
    """
    spec = importlib.util.find_spec(MODEL_PACKAGE)
    if spec is None:
        raise ConfigError(f"the body-part detector needs the `nudenet` package: {INSTALL_HINT}")
    for folder in spec.submodule_search_locations or ():
        candidate = Path(folder) / MODEL_FILE
        if candidate.is_file():
            return candidate
    raise ConfigError(
        f"the installed `nudenet` package has no {MODEL_FILE} (a zipped or partial install?): {INSTALL_HINT}"
    )


def preprocess(image_bgr: np.ndarray) -> np.ndarray:
    """The model's ``(3, 320, 320)`` float32 RGB input for one picture.

    Accepts BGR uint8 ``(H, W, 3)`` (the media decoder's output), BGRA or grey.
    The picture is padded with black at the right or bottom to a square, then
    the square is resized to 320 x 320 with bilinear interpolation, as nudenet does.
    """
    picture = _to_bgr(image_bgr)
    h, w = picture.shape[:2]
    side = max(h, w)
    square = cv2.copyMakeBorder(picture, 0, side - h, 0, side - w, cv2.BORDER_CONSTANT, value=(0, 0, 0))
    resized = cv2.resize(square, (INPUT_SIZE, INPUT_SIZE), interpolation=cv2.INTER_LINEAR)
    rgb = cv2.cvtColor(resized, cv2.COLOR_BGR2RGB)
    tensor = rgb.astype(np.float32) * np.float32(1 / 255.0)
    return np.ascontiguousarray(tensor.transpose(2, 0, 1))


def _to_bgr(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2BGR)
    if image.ndim == 3 and image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"expected a BGR, BGRA or grey picture, got shape {image.shape}")


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float = NMS_IOU) -> list[int]:
    """Greedy non-maximum suppression. ``boxes`` are ``(N, 4)`` corners
    ``x1, y1, x2, y2``; returns the kept indices, best score first. A box is
    dropped when its IoU with a kept, higher-scoring box exceeds the threshold."""
    order = np.argsort(-scores, kind="stable")
    x1, y1, x2, y2 = boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3]
    areas = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    keep: list[int] = []
    while order.size:
        best, rest = int(order[0]), order[1:]
        keep.append(best)
        iw = np.clip(np.minimum(x2[best], x2[rest]) - np.maximum(x1[best], x1[rest]), 0, None)
        ih = np.clip(np.minimum(y2[best], y2[rest]) - np.maximum(y1[best], y1[rest]), 0, None)
        inter = iw * ih
        union = areas[best] + areas[rest] - inter
        iou = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        order = rest[iou <= iou_threshold]
    return keep


def decode(
    output: np.ndarray,
    width: int,
    height: int,
    threshold: float = DEFAULT_THRESHOLD,
    labels: frozenset[str] = BLUR_LABELS,
    iou_threshold: float = NMS_IOU,
) -> list[Region]:
    """Regions of one picture from its raw model output ``(4 + classes, anchors)``.

    Rows are ``cx, cy, w, h`` in model pixels (of the 320 x 320 padded square)
    followed by one score per class. ``width`` and ``height`` are the original
    picture's, which fix how much of the square is padding. Returns the regions
    with a label in ``labels`` scoring at least ``threshold``, after per-label
    NMS, best score first, boxes clipped to the picture and relative to it.
    """
    rows = np.asarray(output, dtype=np.float32).T  # (anchors, 4 + classes)
    if rows.ndim != 2 or rows.shape[1] != 4 + len(LABELS):
        raise ValueError(f"expected an output of shape (22, anchors), got {np.shape(output)}")
    class_scores = rows[:, 4:]
    class_ids = class_scores.argmax(axis=1)
    best = class_scores[np.arange(len(rows)), class_ids]
    wanted = np.array([name in labels for name in LABELS])
    mask = (best >= threshold) & wanted[class_ids]
    if not mask.any():
        return []
    rows, class_ids, best = rows[mask], class_ids[mask], best[mask]
    # Model pixels -> fractions of the original picture: the square's side is
    # max(width, height) and maps to INPUT_SIZE model pixels.
    side = float(max(width, height))
    sx, sy = side / INPUT_SIZE / width, side / INPUT_SIZE / height
    cx, cy, bw, bh = rows[:, 0], rows[:, 1], rows[:, 2], rows[:, 3]
    x1 = np.clip((cx - bw / 2) * sx, 0.0, 1.0)
    y1 = np.clip((cy - bh / 2) * sy, 0.0, 1.0)
    x2 = np.clip((cx + bw / 2) * sx, 0.0, 1.0)
    y2 = np.clip((cy + bh / 2) * sy, 0.0, 1.0)
    corners = np.stack([x1, y1, x2, y2], axis=1)
    regions: list[tuple[float, Region]] = []
    for class_id in np.unique(class_ids):
        idx = np.flatnonzero(class_ids == class_id)
        for i in (idx[k] for k in nms(corners[idx], best[idx], iou_threshold)):
            left, top, right, bottom = (float(v) for v in corners[i])
            if right <= left or bottom <= top:
                continue  # entirely in the padding
            label = LABELS[int(class_id)]
            regions.append(
                (float(best[i]), Region(label, float(best[i]), left, top, right - left, bottom - top))
            )
    regions.sort(key=lambda pair: -pair[0])
    return [region for _, region in regions]


class NudeNetDetector:
    """NudeNet 3.4's 320n YOLOv8 detector in ONNX Runtime (AGPL-3.0 weights).

    ``detect`` returns, per picture, the :data:`BLUR_LABELS` regions scoring at
    least ``threshold``. One session per process; pictures are run in batches of
    up to :data:`MAX_BATCH`.
    """

    name = "nudenet_320n"

    def __init__(
        self,
        threads: int = 0,
        threshold: float = DEFAULT_THRESHOLD,
        labels: frozenset[str] = BLUR_LABELS,
        path: Path | None = None,
    ) -> None:
        if not 0.0 < threshold <= 1.0:
            raise ConfigError(f"detector threshold must be in (0, 1], got {threshold}")
        unknown = set(labels) - set(LABELS)
        if unknown:
            raise ConfigError(f"unknown detector labels: {', '.join(sorted(unknown))}")
        self.path = path or model_path()
        self.sha256 = hashlib.sha256(self.path.read_bytes()).hexdigest()
        self.version = f"{self.name}-{self.sha256[:12]}"
        self.threshold = threshold
        self.labels = frozenset(labels)
        self.session = make_session(str(self.path), SessionOptions(intra_op_threads=threads))
        self.input_name = self.session.get_inputs()[0].name
        output = self.session.get_outputs()[0]
        self.output_name = output.name
        shape = list(output.shape or ())
        if len(shape) != 3 or (isinstance(shape[1], int) and shape[1] != 4 + len(LABELS)):
            raise ConfigError(
                f"{self.path}: output shape {shape} is not (batch, {4 + len(LABELS)} values per box, "
                f"anchors): 4 box values and {len(LABELS)} classes"
            )
        names = self.session.get_modelmeta().custom_metadata_map.get("names")
        if names is not None and any(f"'{label}'" not in names for label in LABELS):
            raise ConfigError(f"{self.path}: the model's class names differ from NudeNet 3.4's")

    def detect(self, images_bgr: Sequence[np.ndarray]) -> list[list[Region]]:
        """One list of regions per BGR uint8 picture, in order."""
        results: list[list[Region]] = []
        for start in range(0, len(images_bgr), MAX_BATCH):
            chunk = images_bgr[start : start + MAX_BATCH]
            batch = np.stack([preprocess(image) for image in chunk])
            (outputs,) = self.session.run([self.output_name], {self.input_name: batch})
            for image, output in zip(chunk, outputs, strict=True):
                h, w = image.shape[:2]
                results.append(decode(output, w, h, self.threshold, self.labels))
        return results


def load_detector(spec: str, threads: int = 0) -> NudeNetDetector | None:
    """The body-part detector named by ``CLASSIFIER_DETECTOR``: ``""`` for none
    (the default), ``nudenet`` for :class:`NudeNetDetector` (needs the optional,
    AGPL-3.0 ``nudenet`` package)."""
    name = spec.strip().lower()
    if not name:
        return None
    if name == "nudenet":
        return NudeNetDetector(threads=threads)
    raise ConfigError(f"unknown body-part detector {spec!r}: use '' (none) or 'nudenet'")
