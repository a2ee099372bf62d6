"""What a checkpoint says about itself (``config.json``), readable without torch.

The app's UI process reads model configs to lay out its controls but never imports torch (see
``artattr/worker.py``), so the config format lives apart from the code that builds models.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable

from . import __version__

FORMAT_VERSION = 1
CONFIG_FILE, WEIGHTS_FILE, CARD_FILE = "config.json", "model.safetensors", "README.md"
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
#: The attribution tasks of WikiArt-style data, in the order of metadata.csv's columns and the default
#: model's config.json: the one list that training, the explorer gallery and the app take them from.
TASKS = ("style", "genre", "artist")


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
    #: Pillow filter of the resize ("bilinear", "bicubic", "lanczos"); see ``artattr.preprocess``
    resample: str = "bilinear"
    #: extra keyword arguments for ``create_model`` (embed_dim, arcface_task, dropout, ...)
    model_args: dict = field(default_factory=dict)
    #: per-task softmax temperature fitted on validation data, so probabilities are calibrated
    temperature: dict[str, float] = field(default_factory=dict)
    #: per-task label that means "none of the known classes" (e.g. artist "other")
    unknown_label: dict[str, str] = field(default_factory=dict)
    #: label names as people write them ({task: {label: name}}, e.g. "Joaquín Sorolla"); see ``name``
    display: dict[str, dict[str, str]] = field(default_factory=dict)
    #: metrics measured at export ({task: {metric: value}}), shown in the card and the app
    metrics: dict = field(default_factory=dict)
    #: trust thresholds (``train/trust.py``): ``{"artwork": score below = not a painting, "unknown_artist":
    #: score above = unknown artist, "uncertain": {task: top probability below = not sure}}``
    thresholds: dict = field(default_factory=dict)
    #: per-task ``[xs, ys]``: monotone map of the top probability after the temperature (``artattr.output.recalibrate``)
    calibration: dict[str, list[list[float]]] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION
    artattr_version: str = __version__

    def name(self, task: str, label: str) -> str:
        """What people read for a label: the checkpoint's display name, else the slug prettified."""
        return display_name(self.display, task, label)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict, source: str = CONFIG_FILE) -> "ModelConfig":
        """Validate ``data`` against ``SCHEMA`` (a config may come from a stranger's Hub repo) and build
        the config; keys this version does not know are ignored, so newer checkpoints still load."""
        missing = [k for k in ("architecture", "tasks") if k not in data]
        if missing:
            raise CheckpointError(f"{source}: missing required key(s) {missing}; is this an ArtAttr checkpoint?")
        version = data.get("format_version", 1)
        if _int(version, 1, 10**6) and version > FORMAT_VERSION:
            raise CheckpointError(f"{source}: format_version {version} is newer than this ArtAttr supports ({FORMAT_VERSION}); upgrade artattr.")
        if _depth(data) > MAX_DEPTH:
            raise CheckpointError(f"{source}: nested more than {MAX_DEPTH} levels deep; not an ArtAttr config.")
        for key, (what, ok) in SCHEMA.items():
            if key in data and not ok(data[key], data):
                raise CheckpointError(f"{source}: {key!r} must be {what}, got {_short(data[key])}.")
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


def display_name(display: dict[str, dict[str, str]], task: str, label: str) -> str:
    """``display`` (a checkpoint's ``{task: {label: name}}``) names the label, else the slug is prettified;
    the one rule the config, the gallery and every surface share."""
    return display.get(task, {}).get(label) or pretty(task, label)


def pretty(task: str, label: str) -> str:
    """A label slug made readable, for labels a checkpoint gives no display name:
    ``claude-monet`` -> ``Claude Monet``, ``Pop_Art`` -> ``Pop Art``, ``still_life`` -> ``Still life``."""
    text = " ".join(label.replace("_", " ").split())
    if task == "artist":
        return " ".join(w.replace("-", " ").title() for w in text.split())
    return text[:1].upper() + text[1:]


# ---------------------------------------------------------------------------------------------------
# What config.json may say. Every field of ModelConfig has a row in SCHEMA: (what it must be, in words
# for the error message; a check of the value, given the whole config for cross-field rules). The
# bounds are far above any real model, and low enough that a hostile file cannot exhaust memory,
# divide by zero or reach outside the checkpoint.

MAX_CONFIG_BYTES = 5_000_000
MAX_DEPTH = 6
MAX_TASKS = 32
MAX_LABELS = 10_000
MAX_NAME = 200
MAX_MODEL_INT = 16_384
MAX_EMBED_DIM = 4_096
#: model outputs that are not tasks (``artattr.models.heads.EMBEDDING_KEYS`` and ``ARTWORK_KEY``)
RESERVED_TASKS = ("embedding", "sphere", "artwork")


def _int(v: Any, lo: int, hi: int) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= hi


def _number(v: Any, lo: float = -math.inf, hi: float = math.inf) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and lo <= v <= hi


def _name(v: Any) -> bool:
    return isinstance(v, str) and 0 < len(v) <= MAX_NAME


def _map(v: Any, value_ok: Callable[[Any], bool], max_items: int = MAX_TASKS) -> bool:
    return isinstance(v, dict) and len(v) <= max_items and all(_name(k) and value_ok(x) for k, x in v.items())


def _labels(v: Any) -> bool:
    return isinstance(v, list) and 0 < len(v) <= MAX_LABELS and all(map(_name, v)) and len(set(v)) == len(v)


def _tasks(v: Any, data: dict) -> bool:
    return _map(v, _labels) and len(v) > 0 and not set(v) & set(RESERVED_TASKS)


def _json_value(v: Any, bound: float | None = None) -> bool:
    """A bounded JSON value; with ``bound``, numbers are finite and within ±bound (they become layer sizes)."""
    if isinstance(v, dict):
        return _map(v, lambda x: _json_value(x, bound), MAX_LABELS)
    if isinstance(v, list):
        return len(v) <= MAX_LABELS and all(_json_value(x, bound) for x in v)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return bound is None or _number(v, -bound, bound)
    return v is None or isinstance(v, bool) or isinstance(v, str) and len(v) <= MAX_NAME


def _curve(v: Any) -> bool:
    """``[xs, ys]``: two equally long non-decreasing lists of probabilities (a calibration map)."""
    return (isinstance(v, list) and len(v) == 2 and all(isinstance(xs, list) and 2 <= len(xs) <= MAX_LABELS for xs in v)
            and len(v[0]) == len(v[1]) and all(_number(x, 0, 1) for xs in v for x in xs)
            and all(a <= b for xs in v for a, b in zip(xs, xs[1:])))


def _thresholds(v: Any, data: dict) -> bool:
    return (isinstance(v, dict) and set(v) <= {"artwork", "unknown_artist", "uncertain"}
            and all(_number(v[k], 0, 1) for k in ("artwork", "unknown_artist") if k in v)
            and _map(v.get("uncertain", {}), lambda p: _number(p, 0, 1)))


def _model_args(v: Any, data: dict) -> bool:
    return (_map(v, lambda x: _json_value(x, MAX_MODEL_INT), 64) and ("embed_dim" not in v or _int(v["embed_dim"], 0, MAX_EMBED_DIM))
            and v.get("arcface_task") in (None, "", *(data["tasks"] if isinstance(data.get("tasks"), dict) else ())))


SCHEMA: dict[str, tuple[str, Callable[[Any, dict], bool]]] = {
    "architecture": ("a model name (letters, digits, '_', '.', '-')",
                     lambda v, d: isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", v) is not None),
    "tasks": (f"a map of 1-{MAX_TASKS} task names (not {' or '.join(RESERVED_TASKS)}) to lists of "
              f"1-{MAX_LABELS} distinct label names", _tasks),
    "input_size": ("an integer from 16 to 1024", lambda v, d: _int(v, 16, 1024)),
    "resize": ("'squash' or 'center_crop'", lambda v, d: v in ("squash", "center_crop")),
    "resample": ("'bilinear', 'bicubic' or 'lanczos'", lambda v, d: v in ("bilinear", "bicubic", "lanczos")),
    "mean": ("a list of 3 finite numbers", lambda v, d: isinstance(v, list) and len(v) == 3 and all(_number(x, -10, 10) for x in v)),
    "std": ("a list of 3 numbers from 0.001 to 10", lambda v, d: isinstance(v, list) and len(v) == 3 and all(_number(x, 1e-3, 10) for x in v)),
    "model_args": (f"a map of argument names to JSON values (numbers within ±{MAX_MODEL_INT}, embed_dim up to "
                   f"{MAX_EMBED_DIM}, arcface_task one of the tasks)", _model_args),
    "temperature": ("a map of task names to numbers from 0.01 to 100", lambda v, d: _map(v, lambda t: _number(t, 0.01, 100))),
    "unknown_label": ("a map of task names to label names", lambda v, d: _map(v, _name)),
    "display": ("a map of task names to maps of label names to display names",
                lambda v, d: _map(v, lambda names: _map(names, _name, MAX_LABELS))),
    "metrics": ("a map of names to numbers, strings or maps of them", lambda v, d: _map(v, _json_value, MAX_LABELS)),
    "thresholds": ("{'artwork': p, 'unknown_artist': p, 'uncertain': {task: p}} with probabilities from 0 to 1",
                   _thresholds),
    "calibration": ("a map of task names to [xs, ys], two equally long non-decreasing lists of probabilities",
                    lambda v, d: _map(v, _curve)),
    "format_version": (f"an integer from 1 to {FORMAT_VERSION}", lambda v, d: _int(v, 1, FORMAT_VERSION)),
    "artattr_version": ("a version string", lambda v, d: _name(v)),
}


def _depth(v: Any) -> int:
    if isinstance(v, dict):
        v = list(v.values())
    return 1 + max(map(_depth, v), default=0) if isinstance(v, list) else 0


def _short(v: Any) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def read_config(model_dir: str | os.PathLike) -> ModelConfig:
    path = Path(model_dir) / CONFIG_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: not found; an ArtAttr checkpoint folder needs {CONFIG_FILE} and {WEIGHTS_FILE}.")
    if path.stat().st_size > MAX_CONFIG_BYTES:
        raise CheckpointError(f"{path}: larger than {MAX_CONFIG_BYTES // 1_000_000} MB; not an ArtAttr config.")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"{path}: not valid JSON ({err}).") from None
    except RecursionError:
        raise CheckpointError(f"{path}: nested too deeply; not an ArtAttr config.") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object.")
    return ModelConfig.from_dict(data, source=str(path))
