"""Models as plugins: model cards, the generic ONNX model, ensembles and their
configuration. Uses tiny ONNX models built here, so every number is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from moderation.classify import FixedScoreClassifier, Scores, highest, load_classifier
from moderation.classify.cards import available_models, find_card, parse_card
from moderation.classify.ensemble import Ensemble, Member, parse_spec
from moderation.classify.onnx_model import OnnxModel, preprocess
from moderation.config import load_settings
from moderation.errors import ConfigError

onnx = pytest.importorskip("onnx", reason="building test models needs the onnx package")


def _mean_model(path: Path, size: int, classes: int, weights: list[list[float]]) -> None:
    """input (N, size, size, 3) -> ReduceMean over H, W -> (N, 3) @ W (3, classes) -> Softmax."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.array(weights, np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["input"], ["pooled"], axes=[1, 2], keepdims=0),
            helper.make_node("MatMul", ["pooled", "w"], ["logits"]),
            helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
        ],
        "mean_model",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", classes])],
        [w],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    onnx.save(model, str(path))


CARD = """
name = "{name}"
file = "{name}.onnx"
licence = "test"
[input]
size = 32
resize = {resize}
layout = "NHWC"
channels = "{channels}"
mean = [0.0, 0.0, 0.0]
scale = {scale}
interpolation = "bilinear"
[output]
labels = ["safe", "nude", "racy"]
sexual = {sexual}
"""


@pytest.fixture
def models_dir(tmp_path: Path) -> Path:
    # "red": the red channel drives "nude"; "blue": the blue channel does.
    _mean_model(tmp_path / "red.onnx", 32, 3, [[0, 4, 0], [0, 0, 0], [0, 0, 0]])  # RGB input: index 0 is R
    (tmp_path / "red.toml").write_text(
        CARD.format(name="red", resize=32, channels="RGB", scale=1 / 255, sexual='["nude"]')
    )
    _mean_model(tmp_path / "blue.onnx", 32, 3, [[0, 4, 0], [0, 0, 0], [0, 0, 0]])  # BGR input: index 0 is B
    (tmp_path / "blue.toml").write_text(
        CARD.format(name="blue", resize=40, channels="BGR", scale=1 / 255, sexual='["nude", "racy"]')
    )
    return tmp_path


def _bgr(b: int, g: int, r: int, size: int = 64) -> np.ndarray:
    return np.full((size, size, 3), (b, g, r), np.uint8)


def _expected(channel: float) -> float:
    logits = np.array([0.0, 4 * channel / 255, 0.0])
    p = np.exp(logits) / np.exp(logits).sum()
    return float(p[1])


def test_the_shipped_cards_parse_and_name_existing_files() -> None:
    names = available_models()
    assert "open_nsfw" in names
    for name in names:
        card = find_card(name)
        if not card.optional:
            assert card.model_path().is_file(), name
        assert (card.card_path.parent / f"{name}.md").is_file(), f"{name} needs a human model card"


def test_preprocess_follows_the_card(models_dir: Path) -> None:
    red, blue = find_card("red", models_dir), find_card("blue", models_dir)
    image = _bgr(10, 20, 250, size=100)
    rgb = preprocess(red, image)
    assert rgb.shape == (32, 32, 3) and rgb.dtype == np.float32
    np.testing.assert_allclose(rgb[0, 0], np.array([250, 20, 10]) / 255, atol=1e-6)
    bgr = preprocess(blue, image)  # resize 40, centre-crop 32
    assert bgr.shape == (32, 32, 3)
    np.testing.assert_allclose(bgr[0, 0], np.array([10, 20, 250]) / 255, atol=1e-6)


def test_a_model_scores_the_sum_of_its_sexual_labels(models_dir: Path) -> None:
    model = OnnxModel(find_card("red", models_dir))
    probs = model.classify([_bgr(0, 0, 200), _bgr(0, 0, 0)])
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(model.score_rows(probs), [_expected(200), _expected(0)], atol=1e-5)
    assert model.version.startswith("red-") and len(model.version) == len("red-") + 12
    blue = OnnxModel(find_card("blue", models_dir))
    probs = blue.classify([_bgr(255, 0, 0)])
    assert blue.score_rows(probs)[0] == pytest.approx(probs[0, 1] + probs[0, 2])


def test_an_ensemble_combines_by_weighted_mean_or_max(models_dir: Path) -> None:
    red = OnnxModel(find_card("red", models_dir))
    blue = OnnxModel(find_card("blue", models_dir))
    image = _bgr(0, 0, 255)  # red only
    red_score = _expected(255)
    blue_score = float(blue.score_rows(blue.classify([image]))[0])
    mean = Ensemble([Member(red, 3.0), Member(blue, 1.0)], "mean")
    (verdict,) = mean.classify([image])
    assert verdict.score == pytest.approx(0.75 * red_score + 0.25 * blue_score, abs=1e-5)
    assert [m.model for m in verdict.models] == ["red", "blue"]
    assert verdict.models[0].labels["nude"] == pytest.approx(red_score, abs=1e-5)
    assert verdict.versions == f"{red.version}+{blue.version}"
    (top,) = Ensemble([Member(red, 3.0), Member(blue, 1.0)], "max").classify([image])
    assert top.score == pytest.approx(max(red_score, blue_score), abs=1e-5)


def test_a_batch_scores_like_single_pictures(models_dir: Path) -> None:
    ensemble = Ensemble([Member(OnnxModel(find_card("red", models_dir)), 1.0)])
    images = [_bgr(0, 0, v, size=50 + v) for v in (0, 90, 180, 255)]
    batch = [s.score for s in ensemble.classify(images)]
    single = [ensemble.classify([i])[0].score for i in images]
    np.testing.assert_allclose(batch, single, atol=1e-5)
    assert len(set(np.round(batch, 3))) == 4


def test_highest_takes_the_most_suspicious_picture() -> None:
    low, high = FixedScoreClassifier(0.1).classify([_bgr(0, 0, 0)])[0], Scores(0.9, ())
    assert highest([low, high, low]) is high


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        ("open_nsfw", [("open_nsfw", 1.0)]),
        ("opennsfw", [("open_nsfw", 1.0)]),
        (" a=2 , b ", [("a", 2.0), ("b", 1.0)]),
    ],
)
def test_classifier_specs_parse(spec: str, expected: list[tuple[str, float]]) -> None:
    assert parse_spec(spec) == expected


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("", "names no model"),
        ("a=x", "not a number"),
        ("a=0", "greater than 0"),
        ("a,a", "listed twice"),
    ],
)
def test_bad_classifier_specs_are_refused(spec: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_spec(spec)


def test_an_unknown_model_names_the_ones_available(models_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown classifier model 'nope'.*blue, red"):
        find_card("nope", models_dir)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('channels = "RGB"', 'channels = "YUV"'), "channels must be RGB or BGR"),
        (('sexual = ["nude"]', 'sexual = ["porn"]'), "not among the labels"),
        (("resize = 32", "resize = 16"), "size <= resize"),
        (("[output]", "[outputs]"), "missing 'output'"),
        (("size = 32", "size = = 32"), "not valid TOML"),
    ],
)
def test_bad_cards_are_refused_with_the_reason(
    models_dir: Path, change: tuple[str, str], message: str
) -> None:
    path = models_dir / "red.toml"
    path.write_text(path.read_text().replace(*change))
    with pytest.raises(ConfigError, match=message):
        parse_card(path)


def test_a_card_whose_labels_do_not_match_the_model_is_refused(models_dir: Path) -> None:
    path = models_dir / "red.toml"
    path.write_text(path.read_text().replace('["safe", "nude", "racy"]', '["safe", "nude"]'))
    with pytest.raises(ConfigError, match="3 classes, the card lists 2"):
        OnnxModel(parse_card(path))


def test_the_combine_rule_is_validated_with_the_settings() -> None:
    with pytest.raises(ConfigError, match="CLASSIFIER_COMBINE"):
        load_settings({"CLASSIFIER_COMBINE": "median"})


def test_fixed_scores_for_dry_runs() -> None:
    classifier = load_classifier("fixed:0.4")
    assert [s.score for s in classifier.classify([_bgr(0, 0, 0)] * 2)] == [0.4, 0.4]
