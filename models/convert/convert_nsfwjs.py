#!/usr/bin/env python3
"""Convert the nsfwjs TF.js models MobileNetV2Mid and InceptionV3 to ONNX.

Reads the model JSON and the weight shards that the npm package ``nsfwjs`` bundles as
browserify ``.min.js`` files (``dist/models/<model>/model.min.js`` and
``group1-shard*of*.min.js``), dequantises the uint8 weights exactly as TF.js does, maps
the graph (TF.js "graph-model" for MobileNetV2Mid, Keras "layers-model" for InceptionV3)
to ONNX nodes, and writes

    models/nsfwjs_mobilenet_v2_mid.onnx
    models/nsfwjs_inception_v3.onnx

Requirements: Python 3.11, numpy, onnx (only for writing; see models/convert/README.md).
No TensorFlow is needed.

Usage (from the repository root):

    python models/convert/convert_nsfwjs.py [PACKAGE_DIR] [--out-dir models]

PACKAGE_DIR is an unpacked nsfwjs npm package (default
``models/convert/node_modules/nsfwjs``, created by ``npm ci`` in models/convert).

ONNX contract of both files: input ``input`` float32 ``(N, S, S, 3)`` NHWC RGB with values
``pixel / 255`` (S = 224 or 299), output ``probabilities`` float32 ``(N, 5)``, softmax
probabilities in nsfwjs's class order (drawing, hentai, neutral, porn, sexy). Internally
the graph transposes once to NCHW. Opset 17, IR version 8, float32 weights.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REPO_ROOT = Path(__file__).resolve().parents[2]
DEFAULT_PACKAGE = REPO_ROOT / "models" / "convert" / "node_modules" / "nsfwjs"
DEFAULT_OUT_DIR = REPO_ROOT / "models"

OPSET = 17
IR_VERSION = 8
LABELS = ["drawing", "hentai", "neutral", "porn", "sexy"]  # nsfwjs dist/cjs/nsfw_classes.js

# key -> (directory under dist/models, nsfwjs model name, input side nsfwjs uses)
MODELS = {
    "nsfwjs_mobilenet_v2_mid": ("mobilenet_v2_mid", "MobileNetV2Mid", 224),
    "nsfwjs_inception_v3": ("inception_v3", "InceptionV3", 299),
}


# --------------------------------------------------------------------------------------
# Reading the browserify bundles: a tiny parser for the JavaScript object literal inside.
# --------------------------------------------------------------------------------------


class JSLiteralParser:
    """Parses a JavaScript literal: objects, arrays, strings, numbers, !0/!1, null."""

    _num = re.compile(r"-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?")
    _ident = re.compile(r"[A-Za-z_$][\w$]*")

    def __init__(self, text: str, pos: int = 0) -> None:
        self.s = text
        self.i = pos

    def _ws(self) -> None:
        while self.i < len(self.s) and self.s[self.i] in " \t\r\n":
            self.i += 1

    def value(self) -> Any:
        self._ws()
        c = self.s[self.i]
        if c == "{":
            return self._object()
        if c == "[":
            return self._array()
        if c in "\"'":
            return self._string()
        if self.s.startswith("!0", self.i):
            self.i += 2
            return True
        if self.s.startswith("!1", self.i):
            self.i += 2
            return False
        for word, val in (("true", True), ("false", False), ("null", None), ("void 0", None)):
            if self.s.startswith(word, self.i):
                self.i += len(word)
                return val
        m = self._num.match(self.s, self.i)
        if m:
            self.i = m.end()
            txt = m.group()
            if re.fullmatch(r"-?\d+", txt):
                return int(txt)
            return float(txt)
        raise ValueError(f"unexpected JavaScript at {self.i}: {self.s[self.i : self.i + 40]!r}")

    def _string(self) -> str:
        quote = self.s[self.i]
        j = self.i + 1
        out = []
        while self.s[j] != quote:
            if self.s[j] == "\\":
                esc = self.s[j + 1]
                if esc == "u":
                    out.append(chr(int(self.s[j + 2 : j + 6], 16)))
                    j += 6
                    continue
                out.append({"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "0": "\0"}.get(esc, esc))
                j += 2
                continue
            out.append(self.s[j])
            j += 1
        self.i = j + 1
        return "".join(out)

    def _key(self) -> str:
        self._ws()
        c = self.s[self.i]
        if c in "\"'":
            return self._string()
        m = self._ident.match(self.s, self.i) or self._num.match(self.s, self.i)
        if not m:
            raise ValueError(f"bad object key at {self.i}")
        self.i = m.end()
        return m.group()

    def _expect(self, ch: str) -> None:
        self._ws()
        if self.s[self.i] != ch:
            raise ValueError(f"expected {ch!r} at {self.i}, got {self.s[self.i : self.i + 20]!r}")
        self.i += 1

    def _object(self) -> dict:
        self._expect("{")
        out: dict = {}
        self._ws()
        if self.s[self.i] == "}":
            self.i += 1
            return out
        while True:
            k = self._key()
            self._expect(":")
            out[k] = self.value()
            self._ws()
            if self.s[self.i] == ",":
                self.i += 1
                continue
            self._expect("}")
            return out

    def _array(self) -> list:
        self._expect("[")
        out: list = []
        self._ws()
        if self.s[self.i] == "]":
            self.i += 1
            return out
        while True:
            out.append(self.value())
            self._ws()
            if self.s[self.i] == ",":
                self.i += 1
                continue
            self._expect("]")
            return out


_BUNDLE_ENTRY = re.compile(r"\{1:\[function\(([\w$]+),([\w$]+),([\w$]+)\)\{\2\.exports=")


def read_bundle(path: Path) -> Any:
    """Return the value that a browserify bundle's module 1 assigns to module.exports."""
    text = path.read_text(encoding="utf-8")
    m = _BUNDLE_ENTRY.search(text)
    if not m:
        raise ValueError(f"{path}: no browserify 'module.exports=' entry found")
    return JSLiteralParser(text, m.end()).value()


# --------------------------------------------------------------------------------------
# Weights: same decoding as tfjs-core io_utils.decodeWeights.
# --------------------------------------------------------------------------------------

_DTYPE_BYTES = {"float32": 4, "int32": 4, "uint8": 1, "uint16": 2, "bool": 1}


def load_weights(model_dir: Path, manifest: list[dict]) -> dict[str, np.ndarray]:
    weights: dict[str, np.ndarray] = {}
    for group in manifest:
        data = b"".join(base64.b64decode(read_bundle(model_dir / f"{p}.min.js")) for p in group["paths"])
        offset = 0
        for spec in group["weights"]:
            shape = [int(d) for d in spec["shape"]]
            count = int(np.prod(shape)) if shape else 1
            q = spec.get("quantization")
            if spec["dtype"] != "float32":
                raise NotImplementedError(f"weight {spec['name']}: dtype {spec['dtype']}")
            if q:
                qdtype = q["dtype"]
                if qdtype not in ("uint8", "uint16"):
                    raise NotImplementedError(f"weight {spec['name']}: quantization {qdtype}")
                nbytes = count * _DTYPE_BYTES[qdtype]
                raw = np.frombuffer(
                    data, dtype="<u1" if qdtype == "uint8" else "<u2", count=count, offset=offset
                )
                # TF.js: values[i] = v * scale + min, evaluated in float64 and stored in a Float32Array.
                vals = (raw.astype(np.float64) * float(q["scale"]) + float(q["min"])).astype(np.float32)
            else:
                nbytes = count * 4
                vals = np.frombuffer(data, dtype="<f4", count=count, offset=offset).astype(np.float32)
            offset += nbytes
            weights[spec["name"]] = vals.reshape(shape)
        if offset != len(data):
            raise ValueError(f"{model_dir}: {len(data) - offset} unread weight bytes")
    return weights


# --------------------------------------------------------------------------------------
# ONNX building helpers. Tensors are tracked with their logical NHWC shape (batch = None)
# and their current physical layout ("NHWC", "NCHW" or "flat" for 2-D/scalars).
# --------------------------------------------------------------------------------------


class Value:
    def __init__(self, name: str, shape: list, layout: str) -> None:
        self.name, self.shape, self.layout = name, shape, layout


class Builder:
    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self._used: set[str] = set()

    def unique(self, base: str) -> str:
        name, k = base, 1
        while name in self._used:
            k += 1
            name = f"{base}__{k}"
        self._used.add(name)
        return name

    def const(self, base: str, arr: np.ndarray) -> str:
        name = self.unique(base)
        self.inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    def node(self, op: str, inputs: list[str], base: str, **attrs: Any) -> str:
        out = self.unique(base)
        self.nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    def nchw(self, v: Value) -> str:
        if v.layout == "NCHW":
            return v.name
        if v.layout != "NHWC":
            raise ValueError(f"{v.name}: need a 4-D tensor, layout {v.layout}")
        return self.node("Transpose", [v.name], v.name + "/to_nchw", perm=[0, 3, 1, 2])

    def nhwc(self, v: Value) -> str:
        if v.layout == "NHWC":
            return v.name
        if v.layout != "NCHW":
            raise ValueError(f"{v.name}: need a 4-D tensor, layout {v.layout}")
        return self.node("Transpose", [v.name], v.name + "/to_nhwc", perm=[0, 2, 3, 1])


def same_pads(size: int, k: int, s: int, d: int) -> tuple[int, int, int]:
    """TensorFlow 'SAME' padding: (out, pad_before, pad_after); the extra pixel goes after."""
    out = math.ceil(size / s)
    eff = (k - 1) * d + 1
    total = max((out - 1) * s + eff - size, 0)
    return out, total // 2, total - total // 2


def spatial(h: int, w: int, k: tuple[int, int], s: tuple[int, int], d: tuple[int, int], padding: str):
    """Output (H, W) and ONNX pads [top, left, bottom, right] for TF padding SAME/VALID."""
    if padding == "SAME":
        oh, pt, pb = same_pads(h, k[0], s[0], d[0])
        ow, pl, pr = same_pads(w, k[1], s[1], d[1])
        return oh, ow, [pt, pl, pb, pr]
    if padding == "VALID":
        oh = (h - ((k[0] - 1) * d[0] + 1)) // s[0] + 1
        ow = (w - ((k[1] - 1) * d[1] + 1)) // s[1] + 1
        return oh, ow, [0, 0, 0, 0]
    raise NotImplementedError(f"padding {padding}")


def conv(
    b: Builder,
    x: Value,
    kernel_hwio: np.ndarray,
    bias: np.ndarray | None,
    strides,
    dilations,
    padding: str,
    depthwise: bool,
    base: str,
) -> Value:
    _, h, w, cin = x.shape
    kh, kw = kernel_hwio.shape[:2]
    oh, ow, pads = spatial(h, w, (kh, kw), strides, dilations, padding)
    if depthwise:  # TF [kh, kw, cin, mult] -> ONNX [cin * mult, 1, kh, kw], group = cin
        mult = kernel_hwio.shape[3]
        weight = kernel_hwio.transpose(2, 3, 0, 1).reshape(cin * mult, 1, kh, kw)
        group, cout = cin, cin * mult
    else:  # TF [kh, kw, cin, cout] -> ONNX [cout, cin, kh, kw]
        weight = kernel_hwio.transpose(3, 2, 0, 1)
        group, cout = 1, kernel_hwio.shape[3]
    inputs = [b.nchw(x), b.const(base + "/weight", weight)]
    if bias is not None:
        inputs.append(b.const(base + "/bias", bias))
    out = b.node(
        "Conv",
        inputs,
        base,
        kernel_shape=[kh, kw],
        strides=list(strides),
        dilations=list(dilations),
        pads=pads,
        group=group,
    )
    return Value(out, [None, oh, ow, cout], "NCHW")


def pool(b: Builder, x: Value, kind: str, k, s, padding: str, base: str) -> Value:
    _, h, w, c = x.shape
    oh, ow, pads = spatial(h, w, k, s, (1, 1), padding)
    attrs: dict[str, Any] = {"kernel_shape": list(k), "strides": list(s), "pads": pads}
    if kind == "avg":
        attrs["count_include_pad"] = 0  # TF/TF.js average only over the in-bounds pixels
    out = b.node("AveragePool" if kind == "avg" else "MaxPool", [b.nchw(x)], base, **attrs)
    return Value(out, [None, oh, ow, c], "NCHW")


def activation(b: Builder, x: Value, act: str, base: str) -> Value:
    act = act.lower()
    if act in ("linear", "identity"):
        return x
    if act == "relu":
        out = b.node("Relu", [x.name], base)
    elif act == "relu6":
        out = b.node(
            "Clip",
            [
                x.name,
                b.const(base + "/min", np.array(0, np.float32)),
                b.const(base + "/max", np.array(6, np.float32)),
            ],
            base,
        )
    elif act == "sigmoid":
        out = b.node("Sigmoid", [x.name], base)
    elif act == "softmax":
        if x.layout != "flat":
            raise NotImplementedError("softmax on a 4-D tensor")
        out = b.node("Softmax", [x.name], base, axis=-1)
    else:
        raise NotImplementedError(f"activation {act}")
    return Value(out, x.shape, x.layout)


def dense(b: Builder, x: Value, kernel: np.ndarray, bias: np.ndarray | None, base: str) -> Value:
    if x.layout != "flat":
        raise ValueError(f"{base}: dense on a non-flat tensor")
    inputs = [x.name, b.const(base + "/kernel", kernel)]
    if bias is not None:
        inputs.append(b.const(base + "/bias", bias))
    out = b.node("Gemm", inputs, base)
    return Value(out, [None, kernel.shape[1]], "flat")


# --------------------------------------------------------------------------------------
# TF.js graph-model (MobileNetV2Mid)
# --------------------------------------------------------------------------------------


def _attr_list(node: dict, key: str) -> list[int]:
    return [int(i) for i in node.get("attr", {}).get(key, {}).get("list", {}).get("i", [])]


def _attr_str(node: dict, key: str, default: str = "") -> str:
    s = node.get("attr", {}).get(key, {}).get("s")
    return base64.b64decode(s).decode() if s is not None else default


def _attr_strs(node: dict, key: str) -> list[str]:
    return [
        base64.b64decode(s).decode() for s in node.get("attr", {}).get(key, {}).get("list", {}).get("s", [])
    ]


def convert_graph_model(
    b: Builder, model: dict, weights: dict[str, np.ndarray], size: int
) -> tuple[str, str]:
    vals: dict[str, Value] = {}
    consts: dict[str, np.ndarray] = {}
    graph_input = output = None

    def get(ref: str) -> Value:
        ref = ref.split(":")[0] if ref.split(":")[-1].isdigit() else ref
        if ref in vals:
            return vals[ref]
        if ref in consts:
            arr = consts[ref]
            v = Value(b.const(ref, arr), list(arr.shape), "flat")
            vals[ref] = v
            return v
        raise KeyError(ref)

    for node in model["modelTopology"]["node"]:
        op, name, inputs = (
            node["op"],
            node["name"],
            [i for i in node.get("input", []) if not i.startswith("^")],
        )
        if op == "Const":
            consts[name] = weights[name]
            continue
        if op == "Placeholder":
            dims = [int(d["size"]) for d in node["attr"]["shape"]["shape"]["dim"]]
            if dims[1:] != [size, size, 3]:
                raise ValueError(f"placeholder shape {dims}, expected [-1, {size}, {size}, 3]")
            graph_input = "input"
            b._used.add(graph_input)
            vals[name] = Value(graph_input, [None, size, size, 3], "NHWC")
            continue
        if op in ("_FusedConv2D", "FusedDepthwiseConv2dNative", "Conv2D", "DepthwiseConv2dNative"):
            if _attr_str(node, "data_format", "NHWC") != "NHWC":
                raise NotImplementedError(f"{name}: data_format")
            x, kernel = get(inputs[0]), consts[inputs[1]]
            fused = _attr_strs(node, "fused_ops")
            extra = inputs[2:]
            bias = None
            if fused and fused[0] == "BiasAdd":
                bias = consts[extra[0]]
                fused = fused[1:]
            elif fused:
                raise NotImplementedError(f"{name}: fused ops {fused}")
            strides = _attr_list(node, "strides")[1:3]
            dil = _attr_list(node, "dilations")[1:3] or [1, 1]
            y = conv(
                b,
                x,
                kernel,
                bias,
                strides,
                dil,
                _attr_str(node, "padding"),
                depthwise="Depthwise" in op,
                base=name,
            )
            for act in fused:
                y = activation(b, y, act, name + "/" + act)
            vals[name] = y
            continue
        if op in ("Mul", "Sub", "AddV2", "Add", "RealDiv"):
            a, c = get(inputs[0]), get(inputs[1])
            onnx_op = {"Mul": "Mul", "Sub": "Sub", "AddV2": "Add", "Add": "Add", "RealDiv": "Div"}[op]
            scalar_a, scalar_c = a.layout == "flat" and not a.shape, c.layout == "flat" and not c.shape
            if scalar_a or scalar_c:
                main = c if scalar_a else a
                out = b.node(onnx_op, [a.name, c.name], name)
                vals[name] = Value(out, main.shape, main.layout)
            elif a.layout == c.layout == "flat":
                vals[name] = Value(b.node(onnx_op, [a.name, c.name], name), a.shape, "flat")
            else:  # two 4-D tensors: do it in NCHW
                vals[name] = Value(b.node(onnx_op, [b.nchw(a), b.nchw(c)], name), a.shape, "NCHW")
            continue
        if op in ("Relu", "Relu6"):
            vals[name] = activation(b, get(inputs[0]), op, name)
            continue
        if op in ("AvgPool", "MaxPool"):
            k, s = _attr_list(node, "ksize")[1:3], _attr_list(node, "strides")[1:3]
            vals[name] = pool(
                b, get(inputs[0]), "avg" if op == "AvgPool" else "max", k, s, _attr_str(node, "padding"), name
            )
            continue
        if op == "Squeeze":
            x = get(inputs[0])
            dims = _attr_list(node, "squeeze_dims")
            if sorted(dims) != [1, 2] or x.shape[1:3] != [1, 1]:
                raise NotImplementedError(f"{name}: squeeze {dims} of {x.shape}")
            axes = b.const(name + "/axes", np.array([2, 3] if x.layout == "NCHW" else [1, 2], dtype=np.int64))
            vals[name] = Value(b.node("Squeeze", [x.name, axes], name), [None, x.shape[3]], "flat")
            continue
        if op in ("_FusedMatMul", "MatMul"):
            attrs = node.get("attr", {})
            if attrs.get("transpose_a", {}).get("b") or attrs.get("transpose_b", {}).get("b"):
                raise NotImplementedError(f"{name}: transposed matmul")
            fused = _attr_strs(node, "fused_ops")
            bias = None
            if fused and fused[0] == "BiasAdd":
                bias = consts[inputs[2]]
                fused = fused[1:]
            y = dense(b, get(inputs[0]), consts[inputs[1]], bias, name)
            for act in fused:
                y = activation(b, y, act, name + "/" + act)
            vals[name] = y
            continue
        if op == "Softmax":
            vals[name] = activation(b, get(inputs[0]), "softmax", name)
            continue
        if op == "Identity":
            vals[name] = get(inputs[0])
            output = name
            continue
        raise NotImplementedError(f"graph op {op} ({name})")

    outputs = model.get("userDefinedMetadata", {}).get("signature", {}).get("outputs", {})
    out_name = next(iter(outputs)).split(":")[0] if outputs else output
    if graph_input is None or out_name is None:
        raise ValueError("graph has no input or output")
    return graph_input, vals[out_name].name


# --------------------------------------------------------------------------------------
# TF.js layers-model / Keras functional model (InceptionV3)
# --------------------------------------------------------------------------------------


def convert_layers_model(
    b: Builder, model: dict, weights: dict[str, np.ndarray], size: int
) -> tuple[str, str]:
    cfg = model["modelTopology"]["model_config"]
    if cfg["class_name"] not in ("Model", "Functional"):
        raise NotImplementedError(f"Keras {cfg['class_name']}")
    cfg = cfg["config"]
    vals: dict[str, Value] = {}
    graph_input = None

    for layer in cfg["layers"]:
        cls, c, name = layer["class_name"], layer["config"], layer["name"]
        if len(layer["inbound_nodes"]) > 1:
            raise NotImplementedError(f"{name}: shared layer")
        ins = [vals[i[0]] for i in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []

        def w(key: str, layer: str = name) -> np.ndarray:
            return weights[f"{layer}/{key}"]

        if cls == "InputLayer":
            shape = c["batch_input_shape"]
            if shape[1:] != [size, size, 3]:
                raise ValueError(f"input shape {shape}, expected [None, {size}, {size}, 3]")
            graph_input = "input"
            b._used.add(graph_input)
            vals[name] = Value(graph_input, [None, size, size, 3], "NHWC")
        elif cls == "Conv2D":
            if c.get("data_format", "channels_last") != "channels_last" or c.get("groups", 1) != 1:
                raise NotImplementedError(f"{name}: conv config")
            y = conv(
                b,
                ins[0],
                w("kernel"),
                w("bias") if c["use_bias"] else None,
                c["strides"],
                c.get("dilation_rate", [1, 1]),
                c["padding"].upper(),
                depthwise=False,
                base=name,
            )
            vals[name] = activation(b, y, c["activation"], name + "/" + c["activation"])
        elif cls == "BatchNormalization":
            x = ins[0]
            if c["axis"] not in (3, -1) or len(x.shape) != 4:
                raise NotImplementedError(f"{name}: axis {c['axis']}")
            ch = x.shape[3]
            gamma = w("gamma") if c.get("scale", True) else np.ones(ch, np.float32)
            beta = w("beta") if c.get("center", True) else np.zeros(ch, np.float32)
            out = b.node(
                "BatchNormalization",
                [
                    b.nchw(x),
                    b.const(name + "/gamma", gamma),
                    b.const(name + "/beta", beta),
                    b.const(name + "/moving_mean", w("moving_mean")),
                    b.const(name + "/moving_variance", w("moving_variance")),
                ],
                name,
                epsilon=float(c["epsilon"]),
            )
            vals[name] = Value(out, x.shape, "NCHW")
        elif cls == "Activation":
            vals[name] = activation(b, ins[0], c["activation"], name)
        elif cls in ("MaxPooling2D", "AveragePooling2D"):
            vals[name] = pool(
                b,
                ins[0],
                "max" if cls.startswith("Max") else "avg",
                c["pool_size"],
                c["strides"] or c["pool_size"],
                c["padding"].upper(),
                name,
            )
        elif cls == "Concatenate":
            if c["axis"] not in (3, -1) or any(len(v.shape) != 4 for v in ins):
                raise NotImplementedError(f"{name}: concat axis {c['axis']}")
            out = b.node("Concat", [b.nchw(v) for v in ins], name, axis=1)
            shp = list(ins[0].shape)
            shp[3] = sum(v.shape[3] for v in ins)
            vals[name] = Value(out, shp, "NCHW")
        elif cls == "GlobalAveragePooling2D":
            x = ins[0]
            out = b.node("GlobalAveragePool", [b.nchw(x)], name)
            out = b.node("Flatten", [out], name + "/flatten", axis=1)
            vals[name] = Value(out, [None, x.shape[3]], "flat")
        elif cls == "Flatten":
            x = ins[0]
            if len(x.shape) == 4:
                src = b.nchw(x) if x.shape[1:3] == [1, 1] else b.nhwc(x)  # channels_last element order
                n = x.shape[1] * x.shape[2] * x.shape[3]
                vals[name] = Value(b.node("Flatten", [src], name, axis=1), [None, n], "flat")
            else:
                vals[name] = x
        elif cls == "Dense":
            y = dense(b, ins[0], w("kernel"), w("bias") if c["use_bias"] else None, name)
            vals[name] = activation(b, y, c["activation"], name + "/" + c["activation"])
        elif cls == "Dropout":
            vals[name] = ins[0]  # inference: identity
        else:
            raise NotImplementedError(f"Keras layer {cls} ({name})")

    ((out_layer, _, _),) = cfg["output_layers"]
    if graph_input is None:
        raise ValueError("model has no InputLayer")
    return graph_input, vals[out_layer].name


# --------------------------------------------------------------------------------------


def convert(package_dir: Path, key: str, out_dir: Path) -> Path:
    pkg = json.loads((package_dir / "package.json").read_text())
    subdir, nsfwjs_name, size = MODELS[key]
    model_dir = package_dir / "dist" / "models" / subdir
    model = read_bundle(model_dir / "model.min.js")
    weights = load_weights(model_dir, model["weightsManifest"])

    b = Builder()
    fmt = model.get("format") or (
        "layers-model" if "model_config" in model["modelTopology"] else "graph-model"
    )
    if fmt == "graph-model":
        inp, out = convert_graph_model(b, model, weights, size)
        source_output = "Softmax (graph node StatefulPartitionedCall/sequential/prediction/Softmax)"
    else:
        inp, out = convert_layers_model(b, model, weights, size)
        source_output = "Softmax (activation of Keras layer dense_3)"
    last = b.nodes[-1]
    if last.op_type != "Softmax" or last.output[0] != out:
        raise ValueError(f"{key}: the TF.js graph does not end in Softmax; add one explicitly")
    # Rename the final tensor to the public output name.
    last.output[0] = "probabilities"

    graph = helper.make_graph(
        b.nodes,
        f"{key}",
        [helper.make_tensor_value_info(inp, TensorProto.FLOAT, ["N", size, size, 3])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["N", len(LABELS)])],
        initializer=b.inits,
    )
    version = pkg["version"]
    doc = (
        f"nsfwjs {nsfwjs_name} from the npm package {pkg['name']} {version} "
        f"(https://github.com/infinitered/nsfwjs, MIT licence), converted from its TF.js {fmt} "
        f"(dist/models/{subdir}) by models/convert/convert_nsfwjs.py. Input 'input': float32 "
        f"(N, {size}, {size}, 3) NHWC RGB, pixel/255 in [0, 1]. Output 'probabilities': float32 (N, 5) "
        f"softmax over {', '.join(LABELS)} (the softmax is part of the source model)."
    )
    onnx_model = helper.make_model(
        graph,
        producer_name="convert_nsfwjs.py",
        producer_version="1",
        doc_string=doc,
        opset_imports=[helper.make_opsetid("", OPSET)],
    )
    onnx_model.ir_version = IR_VERSION
    onnx_model.model_version = 1
    meta = {
        "source_package": pkg["name"],
        "source_package_version": version,
        "source_model": nsfwjs_name,
        "source_path": f"dist/models/{subdir}",
        "source_format": fmt,
        "source_converted_by": str(model.get("convertedBy") or "not recorded"),
        "source_keras_version": str(model["modelTopology"].get("keras_version", "n/a")),
        "source_tensorflow_version": str(model.get("generatedBy") or "not recorded"),
        "upstream": "https://github.com/infinitered/nsfwjs",
        "licence": "MIT",
        "labels": json.dumps(LABELS),
        "input_size": str(size),
        "input_layout": "NHWC",
        "input_channels": "RGB",
        "input_normalisation": "pixel / 255 (values in [0, 1])",
        "output": f"probabilities; source output is {source_output}",
        "weights": "float32, dequantised from the uint8-quantised TF.js weights (v * scale + min)",
    }
    helper.set_model_props(onnx_model, meta)
    onnx.checker.check_model(onnx_model, full_check=True)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{key}.onnx"
    path.write_bytes(onnx_model.SerializeToString())
    return path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "package_dir",
        nargs="?",
        type=Path,
        default=DEFAULT_PACKAGE,
        help="unpacked nsfwjs npm package (default: %(default)s)",
    )
    ap.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR, help="where to write the .onnx files")
    ap.add_argument("--model", choices=sorted(MODELS), action="append", help="convert only this model")
    args = ap.parse_args(argv)
    pkg = json.loads((args.package_dir / "package.json").read_text())
    if pkg.get("name") != "nsfwjs":
        ap.error(f"{args.package_dir} is not the nsfwjs package")
    if pkg.get("version") != "4.3.0":
        print(
            f"warning: converting nsfwjs {pkg.get('version')}, the model cards describe 4.3.0",
            file=sys.stderr,
        )
    for key in args.model or list(MODELS):
        path = convert(args.package_dir, key, args.out_dir)
        print(f"wrote {path} ({path.stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
