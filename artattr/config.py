"""What a checkpoint says about itself (``config.json``), readable without torch.

The app's UI process reads model configs to lay out its controls but never imports torch (see
``artattr/worker.py``), so the config format lives apart from the code that builds models.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from . import __version__

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class CheckpointError(ValueError):
    """A checkpoint folder that cannot be used; the message names the file and what is wrong."""


@dataclass
class ModelConfig:
    architecture: str
    #: task name -> ordered label names (index i of the head is labels[i])
    tasks: dict[str, list[str]]
    input_size: int = 160
    #: "squash": whole image to size×size, how WikiArt-11 was made; "center_crop": short side then crop
    resize: str = "squash"
    mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))
    #: extra keyword arguments for ``create_model`` (embed_dim, arcface_task, dropout, ...)
    model_args: dict = field(default_factory=dict)
    #: per-task softmax temperature fitted on validation data, so probabilities are calibrated
    temperature: dict[str, float] = field(default_factory=dict)
    #: per-task label that means "none of the known classes" (e.g. artist "other")
    unknown_label: dict[str, str] = field(default_factory=dict)
    #: metrics measured at export ({task: {metric: value}}), shown in the card and the app
    metrics: dict = field(default_factory=dict)
    #: trust thresholds (``train/trust.py``): ``{"artwork": score below = not a painting, "unknown_artist":
    #: score above = unknown artist, "uncertain": {task: top probability below = not sure}}``
    thresholds: dict = field(default_factory=dict)
    #: per-task ``[xs, ys]``: monotone map of the top probability after the temperature (``artattr.output.recalibrate``)
    calibration: dict[str, list[list[float]]] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    artattr_version: str = __version__

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict, source: str = CONFIG_FILE) -> "ModelConfig":
        known = {f.name for f in fields(cls)}
        missing = [k for k in ("architecture", "tasks") if k not in data]
        if missing:
            raise CheckpointError(f"{source}: missing required key(s) {missing}; is this an ArtAttr checkpoint?")
        if int(data.get("format_version", 1)) > FORMAT_VERSION:
            raise CheckpointError(f"{source}: format_version {data['format_version']} is newer than this ArtAttr supports ({FORMAT_VERSION}); upgrade artattr.")
        if not isinstance(data["tasks"], dict) or not all(isinstance(v, list) and v for v in data["tasks"].values()):
            raise CheckpointError(f"{source}: 'tasks' must map each task to a non-empty list of label names.")
        _check_thresholds(data.get("thresholds", {}), data.get("calibration", {}), source)
        return cls(**{k: v for k, v in data.items() if k in known})


def _check_thresholds(thresholds, calibration, source: str) -> None:
    """Thresholds and calibration curves are probabilities; anything else in a downloaded config.json is refused."""
    def prob(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= v <= 1.0

    def curve(c) -> bool:
        return (isinstance(c, list) and len(c) == 2 and all(isinstance(xs, list) and 2 <= len(xs) <= 10_000 for xs in c)
                and len(c[0]) == len(c[1]) and all(prob(v) for xs in c for v in xs)
                and all(a <= b for xs in c for a, b in zip(xs, xs[1:])))
    if not isinstance(calibration, dict) or not all(isinstance(k, str) and curve(c) for k, c in calibration.items()):
        raise CheckpointError(f"{source}: 'calibration' must map tasks to [xs, ys], two equally long increasing "
                              "lists of probabilities.")
    uncertain = thresholds.get("uncertain", {}) if isinstance(thresholds, dict) else None
    if (not isinstance(thresholds, dict) or set(thresholds) - {"artwork", "unknown_artist", "uncertain"}
            or not all(prob(thresholds[k]) for k in ("artwork", "unknown_artist") if k in thresholds)
            or not isinstance(uncertain, dict) or not all(isinstance(k, str) and prob(v) for k, v in uncertain.items())):
        raise CheckpointError(f"{source}: 'thresholds' must be {{'artwork': p, 'unknown_artist': p, "
                              f"'uncertain': {{task: p}}}} with probabilities 0..1, not {str(thresholds)[:200]}.")


def read_config(model_dir: str | os.PathLike) -> ModelConfig:
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; an ArtAttr checkpoint folder needs {CONFIG_FILE} and {WEIGHTS_FILE}.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err}).") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object.")
    return ModelConfig.from_dict(data, source=str(path))
