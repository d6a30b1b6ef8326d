"""The nsfwjs models converted to ONNX agree with the original TF.js runtime.

tests/fixtures/nsfwjs_reference.json holds, per model, six input recipes and the
probabilities that nsfwjs 4.3.0 on @tensorflow/tfjs (pure-JS cpu backend) computed for
them (models/convert/tfjs_reference.mjs). Here the same inputs are rebuilt bit for bit
from the recipes, run through the committed ONNX files with a plain ONNX Runtime
session, and compared. The machine-readable cards (models/*.toml) must parse, name the
file, and the SHA-256 in the human card (models/*.md) must be the file's.

Model cards: models/nsfwjs_mobilenet_v2_mid.md, models/nsfwjs_inception_v3.md.
"""

from __future__ import annotations

import hashlib
import json
import re
import tomllib
from functools import cache
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

ROOT = Path(__file__).resolve().parents[2]
MODELS_DIR = ROOT / "models"
REFERENCE = json.loads((ROOT / "tests" / "fixtures" / "nsfwjs_reference.json").read_text())
MODEL_KEYS = ["nsfwjs_mobilenet_v2_mid", "nsfwjs_inception_v3"]
LABELS = ["drawing", "hentai", "neutral", "porn", "sexy"]

# Measured max |ONNX - TF.js| over the reference inputs: 7.2e-7 (MobileNetV2Mid) and
# 8.6e-7 (InceptionV3), i.e. float32 rounding. 1e-4 is two orders of magnitude above.
TOLERANCE = 1e-4

LCG_A, LCG_C = 1664525, 1013904223  # as in tfjs_reference.mjs; modulus 2^32


def pixels(recipe: dict, size: int) -> np.ndarray:
    """The RGB uint8 image (size, size, 3) of a recipe, as tfjs_reference.mjs makes it."""
    y, x = np.mgrid[0:size, 0:size]
    kind = recipe["kind"]
    if kind == "constant":
        img = np.broadcast_to(np.array(recipe["rgb"]), (size, size, 3))
    elif kind == "hgradient":
        img = np.repeat(((x * 255) // (size - 1))[..., None], 3, axis=2)
    elif kind == "vgradient":
        red = (y * 255) // (size - 1)
        img = np.stack([red, 255 - red, np.full_like(red, recipe["blue"])], axis=-1)
    elif kind == "checkerboard":
        odd = ((x // recipe["cell"]) + (y // recipe["cell"])) % 2
        img = np.repeat(np.where(odd, recipe["hi"], recipe["lo"])[..., None], 3, axis=2)
    elif kind == "lcg":
        out = bytearray(size * size * 3)
        state = recipe["seed"] & 0xFFFFFFFF
        for i in range(len(out)):
            state = (LCG_A * state + LCG_C) & 0xFFFFFFFF
            out[i] = state >> 24
        img = np.frombuffer(bytes(out), dtype=np.uint8).reshape(size, size, 3)
    else:
        raise ValueError(f"unknown recipe kind {kind}")
    return np.ascontiguousarray(img, dtype=np.uint8)


def model_input(recipe: dict, size: int) -> np.ndarray:
    # float32(pixel / 255) with the division in float64, exactly like the JS Float32Array store.
    return (pixels(recipe, size).astype(np.float64) / 255.0).astype(np.float32)[None]


@cache
def session(key: str) -> ort.InferenceSession:
    return ort.InferenceSession(str(MODELS_DIR / f"{key}.onnx"), providers=["CPUExecutionProvider"])


@cache
def card(key: str) -> dict:
    return tomllib.loads((MODELS_DIR / f"{key}.toml").read_text(encoding="utf-8"))


def test_reference_covers_both_models():
    assert sorted(REFERENCE["models"]) == sorted(MODEL_KEYS)
    assert REFERENCE["nsfwjs_version"] == "4.3.0"
    assert REFERENCE["labels"] == LABELS


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_inputs_rebuild_bit_for_bit(key):
    ref = REFERENCE["models"][key]
    for case in ref["cases"]:
        x = model_input(case["recipe"], ref["size"])
        assert hashlib.sha256(x.tobytes()).hexdigest() == case["input_sha256"], case["name"]


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_onnx_matches_tfjs(key):
    ref = REFERENCE["models"][key]
    batch = np.concatenate([model_input(c["recipe"], ref["size"]) for c in ref["cases"]])
    expected = np.array([c["probabilities"] for c in ref["cases"]], dtype=np.float64)
    (probs,) = session(key).run(["probabilities"], {"input": batch})
    assert probs.shape == expected.shape == (len(ref["cases"]), 5)
    diff = np.abs(probs.astype(np.float64) - expected)
    worst = int(diff.max(axis=1).argmax())
    assert diff.max() <= TOLERANCE, f"{ref['cases'][worst]['name']}: max |diff| {diff.max():.3g}"
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    # The argmax is stable too (the margins in the reference are far above the tolerance).
    assert (probs.argmax(axis=1) == expected.argmax(axis=1)).all()


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_onnx_io_contract(key):
    sess = session(key)
    size = card(key)["input"]["size"]
    (inp,) = sess.get_inputs()
    (out,) = sess.get_outputs()
    assert inp.name == "input" and inp.type == "tensor(float)"
    assert inp.shape[1:] == [size, size, 3] and not isinstance(inp.shape[0], int)  # dynamic batch
    assert out.name == "probabilities" and out.shape[1:] == [5]
    meta = sess.get_modelmeta()
    assert meta.custom_metadata_map["source_package"] == "nsfwjs"
    assert meta.custom_metadata_map["source_package_version"] == "4.3.0"
    assert json.loads(meta.custom_metadata_map["labels"]) == LABELS
    assert "nsfwjs" in meta.description


@pytest.mark.parametrize("key", MODEL_KEYS)
def test_cards_match_the_file(key):
    data = card(key)
    assert data["name"] == key
    assert data["licence"] == "MIT"
    model_file = MODELS_DIR / data["file"]
    assert model_file.is_file(), model_file
    md = (MODELS_DIR / data["card"]).read_text(encoding="utf-8")
    match = re.search(r"SHA-256\s*\|\s*`([0-9a-f]{64})`", md)
    assert match, f"{data['card']} has no '| SHA-256 | `...` |' row"
    assert hashlib.sha256(model_file.read_bytes()).hexdigest() == match.group(1)
    assert f"{model_file.stat().st_size:,} bytes" in md

    inp, out = data["input"], data["output"]
    assert inp["size"] == inp["resize"] == REFERENCE["models"][key]["size"]
    assert (inp["layout"], inp["channels"], inp["interpolation"]) == ("NHWC", "RGB", "bilinear_align_corners")
    assert inp["mean"] == [0.0, 0.0, 0.0] and inp["scale"] == pytest.approx(1 / 255, rel=1e-15)
    assert out["labels"] == LABELS
    assert out["sexual"] == ["hentai", "porn"]
    assert out.get("activation", "none") == "none"
    assert (MODELS_DIR / "LICENSE.nsfwjs").is_file()
