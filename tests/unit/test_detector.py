"""The optional NudeNet body-part detector (moderation/classify/detector.py).

The model ships only in the optional, AGPL-3.0 ``nudenet`` package, so the
tests that run it skip without it. Loading rules and the output maths (decoding
and NMS of hand-made YOLO rows) are tested without the package. No test uses
explicit imagery: the model runs on benign scikit-image photos only.
"""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from moderation.classify import detector
from moderation.classify.detector import (
    BLUR_LABELS,
    INPUT_SIZE,
    LABELS,
    Region,
    decode,
    load_detector,
    nms,
    preprocess,
)
from moderation.errors import ConfigError

# ---------------------------------------------------------------- without the package


def test_no_detector_is_the_default():
    assert load_detector("") is None
    assert load_detector("  ") is None


def test_a_missing_package_is_a_config_error_saying_how_to_install_and_agpl(monkeypatch):
    real = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == "nudenet" else real(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    with pytest.raises(ConfigError) as info:
        load_detector("nudenet")
    message = str(info.value)
    assert "AGPL" in message and "pip install 'nudenet>=3.4,<3.5'" in message


def test_an_unknown_detector_name_is_a_config_error():
    with pytest.raises(ConfigError, match="unknown body-part detector"):
        load_detector("yolo-something")


def test_blur_labels_are_body_parts_from_the_model_list_and_never_faces():
    assert BLUR_LABELS <= set(LABELS)
    assert len(LABELS) == 18 and len(set(LABELS)) == 18
    assert not {label for label in BLUR_LABELS if label.startswith("FACE_")}
    assert {"FEMALE_GENITALIA_EXPOSED", "MALE_GENITALIA_EXPOSED", "ANUS_EXPOSED"} <= BLUR_LABELS


def test_region_as_json_has_the_console_keys():
    row = Region("BUTTOCKS_EXPOSED", 0.876543, 0.1, 0.2, 0.3, 0.4).as_json()
    assert row == {"label": "BUTTOCKS_EXPOSED", "score": 0.8765, "x": 0.1, "y": 0.2, "w": 0.3, "h": 0.4}


def _output(*rows: tuple[float, float, float, float, str, float]) -> np.ndarray:
    """A raw model output (22, anchors) from (cx, cy, w, h, label, score) rows in
    model pixels; every other class score is a small background value."""
    out = np.full((4 + len(LABELS), len(rows) + 3), 0.01, dtype=np.float32)
    out[:4, len(rows) :] = [[160], [160], [20], [20]]  # background anchors
    for i, (cx, cy, w, h, label, score) in enumerate(rows):
        out[:4, i] = (cx, cy, w, h)
        out[4 + LABELS.index(label), i] = score
    return out


def test_decode_turns_model_pixels_into_picture_fractions_for_a_wide_picture():
    # A 640 x 320 picture is padded to 640 x 640 (black at the bottom) and shrunk
    # by 2: model y 80 is picture y 160 of 320, i.e. 0.5.
    out = _output((160, 80, 64, 32, "BUTTOCKS_EXPOSED", 0.9))
    (region,) = decode(out, width=640, height=320)
    assert region.label == "BUTTOCKS_EXPOSED" and region.score == pytest.approx(0.9)
    assert (region.x, region.y, region.w, region.h) == pytest.approx((0.4, 0.4, 0.2, 0.2))


def test_decode_for_a_tall_picture():
    # 300 wide x 600 high: padded at the right to 600 x 600, scale 320/600.
    out = _output((80, 160, 32, 64, "ANUS_EXPOSED", 0.5))
    (region,) = decode(out, width=300, height=600)
    side = 600 / INPUT_SIZE
    assert region.x == pytest.approx((80 - 16) * side / 300)
    assert region.y == pytest.approx((160 - 32) * side / 600)
    assert region.w == pytest.approx(32 * side / 300)
    assert region.h == pytest.approx(64 * side / 600)


def test_decode_keeps_only_blur_labels_above_the_threshold():
    out = _output(
        (100, 100, 40, 40, "FACE_FEMALE", 0.95),  # a face: never a region
        (200, 100, 40, 40, "FEMALE_BREAST_EXPOSED", 0.24),  # just under 0.25
        (100, 200, 40, 40, "MALE_GENITALIA_EXPOSED", 0.25),  # at the threshold: kept
    )
    regions = decode(out, 320, 320)
    assert [r.label for r in regions] == ["MALE_GENITALIA_EXPOSED"]
    everything = decode(out, 320, 320, threshold=0.2, labels=frozenset(LABELS))
    assert [r.label for r in everything] == ["FACE_FEMALE", "MALE_GENITALIA_EXPOSED", "FEMALE_BREAST_EXPOSED"]


def test_decode_suppresses_overlaps_per_label_best_first():
    out = _output(
        (100, 100, 40, 40, "BUTTOCKS_EXPOSED", 0.6),
        (102, 101, 40, 40, "BUTTOCKS_EXPOSED", 0.8),  # IoU ~0.9 with the first: wins
        (250, 250, 40, 40, "BUTTOCKS_EXPOSED", 0.4),  # separate: kept
        (101, 100, 40, 40, "ANUS_EXPOSED", 0.5),  # other label, same place: kept
        (130, 100, 40, 40, "BUTTOCKS_EXPOSED", 0.7),  # IoU 0.14 with the best: kept
    )
    regions = decode(out, 320, 320)
    assert [(r.label, round(r.score, 2)) for r in regions] == [
        ("BUTTOCKS_EXPOSED", 0.8),
        ("BUTTOCKS_EXPOSED", 0.7),
        ("ANUS_EXPOSED", 0.5),
        ("BUTTOCKS_EXPOSED", 0.4),
    ]
    assert regions[0].x == pytest.approx((102 - 20) / 320)


def test_decode_clips_boxes_to_the_picture_and_drops_boxes_in_the_padding():
    out = _output(
        (5, 5, 30, 30, "BUTTOCKS_EXPOSED", 0.9),  # crosses the top-left corner
        (160, 300, 40, 20, "ANUS_EXPOSED", 0.9),  # wholly in the bottom padding
    )
    (region,) = decode(out, width=640, height=320)  # picture ends at model y 160
    assert (region.x, region.y) == (0.0, 0.0)
    assert region.w == pytest.approx(20 * 2 / 640) and region.h == pytest.approx(20 * 2 / 320)


def test_decode_of_nothing_and_of_a_bad_shape():
    assert decode(np.zeros((22, 2100), dtype=np.float32), 100, 100) == []
    with pytest.raises(ValueError):
        decode(np.zeros((21, 5), dtype=np.float32), 100, 100)


def test_nms_against_hand_computed_iou():
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [1, 1, 11, 11]], dtype=np.float32)
    scores = np.array([0.9, 0.8, 0.7], dtype=np.float32)
    # IoU(0, 1) = 50 / 150 = 0.33; IoU(0, 2) = 81 / 119 = 0.68
    assert nms(boxes, scores, 0.45) == [0, 1]
    assert nms(boxes, scores, 0.3) == [0]
    assert nms(boxes, scores, 0.7) == [0, 1, 2]


def test_preprocess_pads_right_and_bottom_with_black_and_feeds_rgb():
    picture = np.zeros((100, 200, 3), dtype=np.uint8)
    picture[:, :] = (255, 0, 0)  # pure blue in BGR
    tensor = preprocess(picture)
    assert tensor.shape == (3, INPUT_SIZE, INPUT_SIZE) and tensor.dtype == np.float32
    assert tensor[2, 40, 160] == pytest.approx(1.0) and tensor[0, 40, 160] == 0.0  # channel 2 = blue
    assert not tensor[:, 170:, :].any()  # the lower half is padding
    assert preprocess(np.full((50, 30), 128, dtype=np.uint8)).shape == (3, INPUT_SIZE, INPUT_SIZE)
    assert preprocess(np.zeros((30, 50, 4), dtype=np.uint8)).shape == (3, INPUT_SIZE, INPUT_SIZE)


@pytest.mark.parametrize("shape", [["batch", 21, 2100], ["batch", 3, 320, 320]])
def test_a_model_with_other_outputs_is_refused(tmp_path, shape):
    import onnx
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("images", TensorProto.FLOAT, shape)
    y = helper.make_tensor_value_info("output0", TensorProto.FLOAT, shape)
    graph = helper.make_graph([helper.make_node("Identity", ["images"], ["output0"])], "g", [x], [y])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "other.onnx"
    onnx.save(model, str(path))
    with pytest.raises(ConfigError, match="values per box"):
        detector.NudeNetDetector(path=path)


# ------------------------------------------------------------------- with the package

needs_nudenet = pytest.mark.skipif(
    importlib.util.find_spec("nudenet") is None,
    reason="the optional nudenet package (AGPL-3.0) is not installed: pip install 'nudenet>=3.4,<3.5'",
)


def _photo(name: str) -> np.ndarray:
    from skimage import data

    rgb = getattr(data, name)()
    return np.ascontiguousarray(cv2.cvtColor(rgb[..., :3], cv2.COLOR_RGB2BGR))


@pytest.fixture(scope="module")
def nudenet_detector():
    pytest.importorskip("nudenet", reason="the optional nudenet package (AGPL-3.0) is not installed")
    return load_detector("nudenet")


@needs_nudenet
def test_detector_identity(nudenet_detector):
    assert nudenet_detector.name == "nudenet_320n"
    assert nudenet_detector.version == f"nudenet_320n-{nudenet_detector.sha256[:12]}"
    assert nudenet_detector.path.name == "320n.onnx"
    assert nudenet_detector.detect([]) == []


@needs_nudenet
def test_no_regions_on_benign_photos(nudenet_detector):
    names = ("astronaut", "chelsea", "rocket", "coffee")
    results = dict(zip(names, nudenet_detector.detect([_photo(n) for n in names]), strict=True))
    assert results["astronaut"] == [] and results["chelsea"] == [] and results["rocket"] == []
    # Known false positive (models/nudenet_320n.md): the coffee cup photo gets one
    # low-confidence BUTTOCKS_EXPOSED box over most of the frame (0.296 measured).
    # It only means more stays blurred until "Show all".
    assert [r.label for r in results["coffee"]] in ([], ["BUTTOCKS_EXPOSED"])
    assert all(r.score < 0.35 for r in results["coffee"])


@needs_nudenet
def test_boxes_are_relative_and_follow_the_picture_through_the_letterbox():
    # The astronaut's face (the one label a benign photo triggers) locates the box
    # maths end to end: in the photo alone, and moved to the right half of a wide
    # grey canvas, where x halves plus 0.5 and y and h stay the same.
    face = detector.NudeNetDetector(labels=frozenset({"FACE_FEMALE"}))
    photo = _photo("astronaut")
    wide = np.full((512, 1024, 3), 128, dtype=np.uint8)
    wide[:, 512:] = photo
    (alone,), (moved,) = face.detect([photo, wide])
    for r in (alone, moved):
        assert 0 <= r.x and 0 <= r.y and r.x + r.w <= 1 and r.y + r.h <= 1 and r.w > 0 and r.h > 0
    assert alone.score > 0.5
    assert 0.3 < alone.x < 0.4 and 0.1 < alone.y < 0.25 and 0.1 < alone.w < 0.3
    assert moved.x == pytest.approx(0.5 + alone.x / 2, abs=0.02)
    assert moved.w == pytest.approx(alone.w / 2, abs=0.02)
    assert moved.y == pytest.approx(alone.y, abs=0.03) and moved.h == pytest.approx(alone.h, abs=0.03)


@needs_nudenet
def test_preprocessing_matches_nudenet_except_the_channel_order():
    # nudenet 3.4.2 feeds BGR by mistake (notAI-tech/NudeNet#203); otherwise our
    # letterbox, resize and scaling equal its `_read_image` exactly. (The test
    # imports nudenet's code as a reference; the service never does.)
    from nudenet.nudenet import _read_image

    for name in ("astronaut", "coffee", "rocket"):
        photo = _photo(name)
        reference = _read_image(photo, INPUT_SIZE)[0][0]
        np.testing.assert_allclose(preprocess(photo)[::-1], reference, atol=1e-6)
