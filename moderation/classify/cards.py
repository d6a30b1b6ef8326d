"""Model cards: the machine-readable half of ``models/<name>.toml``.

A card names the ONNX file and says exactly how to turn decoded pixels into
the tensor the model was trained on, and which output labels count as sexual
content. Adding a model to the service is adding a card (and its file); the
human half of each card is the ``.md`` file it names.
"""

from __future__ import annotations

import importlib.resources
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from moderation.errors import ConfigError

# The repository's models/ folder (an editable install or the container image).
DEFAULT_MODELS_DIR = Path(__file__).resolve().parents[2] / "models"
PACKAGE_PREFIX = "package:"
# area: INTER_AREA when shrinking (PIL-like antialiasing), else bilinear;
# bilinear: OpenCV's half-pixel-centre bilinear;
# bilinear_align_corners: corner pixels map to corner pixels (TensorFlow's
# resizeBilinear with alignCorners=true, as nsfwjs calls it).
INTERPOLATIONS = ("area", "bilinear", "bilinear_align_corners")


@dataclass(frozen=True)
class InputSpec:
    size: int  # square side the model takes
    resize: int  # resize to resize x resize, then centre-crop `size`
    layout: str  # NHWC | NCHW
    channels: str  # RGB | BGR
    mean: tuple[float, float, float]  # subtracted from 0..255 values, in `channels` order
    scale: float  # multiplied after the mean
    interpolation: str  # area (INTER_AREA when shrinking) | bilinear | bilinear_align_corners
    jpeg_roundtrip: bool  # re-encode the crop as JPEG q75 first (open_nsfw's reference did)


@dataclass(frozen=True)
class OutputSpec:
    labels: tuple[str, ...]  # in output index order
    sexual: tuple[str, ...]  # summed into the score
    activation: str  # none (outputs are probabilities) | softmax


@dataclass(frozen=True)
class ModelCard:
    name: str
    file: str  # relative to the card, or package:<module>/<resource>
    licence: str
    card_path: Path
    input: InputSpec
    output: OutputSpec
    optional: bool = False  # licence or extra install needed; never on by default

    def model_path(self) -> Path:
        if self.file.startswith(PACKAGE_PREFIX):
            module, _, resource = self.file[len(PACKAGE_PREFIX) :].partition("/")
            try:
                return Path(str(importlib.resources.files(module).joinpath(resource)))
            except ModuleNotFoundError:
                raise ConfigError(
                    f"model {self.name}: the Python package {module!r} is not installed"
                ) from None
        return (self.card_path.parent / self.file).resolve()

    @property
    def sexual_indices(self) -> tuple[int, ...]:
        return tuple(self.output.labels.index(label) for label in self.output.sexual)


def _require(data: dict[str, Any], key: str, where: str) -> Any:
    if key not in data:
        raise ConfigError(f"model card {where}: missing {key!r}")
    return data[key]


def parse_card(path: Path) -> ModelCard:
    where = str(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"model card not found: {path}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"model card {where} is not valid TOML: {exc}") from None
    inp = _require(data, "input", where)
    out = _require(data, "output", where)
    spec = InputSpec(
        size=int(_require(inp, "size", where)),
        resize=int(inp.get("resize", inp["size"])),
        layout=str(inp.get("layout", "NHWC")).upper(),
        channels=str(inp.get("channels", "RGB")).upper(),
        mean=tuple(float(v) for v in inp.get("mean", [0.0, 0.0, 0.0])),  # type: ignore[arg-type]
        scale=float(inp.get("scale", 1.0)),
        interpolation=str(inp.get("interpolation", "area")),
        jpeg_roundtrip=bool(inp.get("jpeg_roundtrip", False)),
    )
    labels = tuple(str(v) for v in _require(out, "labels", where))
    sexual = tuple(str(v) for v in _require(out, "sexual", where))
    output = OutputSpec(labels=labels, sexual=sexual, activation=str(out.get("activation", "none")))
    _check(where, spec, output)
    return ModelCard(
        name=str(_require(data, "name", where)),
        file=str(_require(data, "file", where)),
        licence=str(data.get("licence", "")),
        card_path=path.resolve(),
        input=spec,
        output=output,
        optional=bool(data.get("optional", False)),
    )


def _check(where: str, spec: InputSpec, output: OutputSpec) -> None:
    if spec.layout not in {"NHWC", "NCHW"}:
        raise ConfigError(f"model card {where}: layout must be NHWC or NCHW, not {spec.layout}")
    if spec.channels not in {"RGB", "BGR"}:
        raise ConfigError(f"model card {where}: channels must be RGB or BGR, not {spec.channels}")
    if len(spec.mean) != 3:
        raise ConfigError(f"model card {where}: mean needs 3 values")
    if spec.resize < spec.size or spec.size < 8:
        raise ConfigError(f"model card {where}: need 8 <= size <= resize")
    if spec.interpolation not in INTERPOLATIONS:
        raise ConfigError(f"model card {where}: interpolation must be one of {', '.join(INTERPOLATIONS)}")
    if output.activation not in {"none", "softmax"}:
        raise ConfigError(f"model card {where}: activation must be none or softmax")
    unknown = set(output.sexual) - set(output.labels)
    if unknown or not output.sexual:
        raise ConfigError(f"model card {where}: sexual labels {sorted(unknown)} are not among the labels")


def find_card(spec: str, models_dir: Path = DEFAULT_MODELS_DIR) -> ModelCard:
    """A model by name (``models/<name>.toml``) or by the path of its card."""
    if spec.endswith(".toml") or "/" in spec:
        return parse_card(Path(spec))
    path = models_dir / f"{spec}.toml"
    if not path.is_file():
        known = ", ".join(available_models(models_dir)) or "none"
        raise ConfigError(f"unknown classifier model {spec!r} (models in {models_dir}: {known})")
    return parse_card(path)


def available_models(models_dir: Path = DEFAULT_MODELS_DIR) -> list[str]:
    return sorted(p.stem for p in models_dir.glob("*.toml"))
