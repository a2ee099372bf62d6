"""What a training run is: :class:`FitArgs`, read from a YAML config plus ``--key value`` overrides.

``transformers.HfArgumentParser`` turns the dataclass into the command line (types, choices,
``--flag`` / ``--flag false``); the YAML file is fed through the same parser, so a value in a config
file is checked exactly like one typed on the command line, and a typo fails before any work.
"""

from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Literal

from artattr.config import TASKS


class ConfigError(ValueError):
    """A config file or override the trainer cannot use; names the key."""


class Mapping(dict):
    """A dict field that can be given as YAML/JSON text on the command line: ``--model_args '{a: 1}'``."""

    def __init__(self, value=()):
        if isinstance(value, str):
            import yaml

            value = yaml.safe_load(value) or {}
            if not isinstance(value, dict):
                raise ValueError(f"expected a mapping like '{{key: value}}', got {value!r}")
        super().__init__(value)


@dataclass
class FitArgs:
    # data: a folder with metadata.csv (WikiArt-11 shape), a CSV, an ImageFolder, or "hf:NAME[:SPLIT]"
    data: str = "../shared/data/wikiart11"
    out: str = "runs/fit"
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    split: Literal["csv", "random", "artist"] = "csv"  # random: stratified by style; artist: artist_fold == val_fold is val
    val_fold: int = 0
    val_fraction: float = 0.15
    min_artist_images: int = 50          # rarer artists are folded into "other"
    imagefolder_task: str = "style"      # the task an ImageFolder's class folders name
    limit: int = 0                       # first N train rows (and N/4 val rows): smoke tests
    # model and its input (artattr.preprocess.Preprocess, the same at training and serving)
    architecture: str = "efficientnet_lite0"
    pretrained: bool = True
    input_size: int = 224
    resize: Literal["squash", "center_crop"] = "squash"
    resample: Literal["bilinear", "bicubic", "lanczos"] = "bilinear"
    embed_dim: int = 128
    dropout: float = 0.3
    arcface_task: str = "style"
    arcface_weight: float = 0.5
    model_args: Mapping = field(default_factory=Mapping)
    # full: start from this checkpoint's weights (a model id: folder, hf-hub:ORG/NAME, "default") instead of
    # ImageNet's; its labels must be the data's. BatchNorm keeps the checkpoint's statistics.
    init: str = ""
    # recipe
    recipe: Literal["full", "cached"] = "full"  # cached: frozen-trunk feature cache, EfficientNet-Lite, CPU
    frozen_blocks: int = 5               # cached: blocks[:frozen_blocks] are frozen and cached
    freeze_epochs: int = 0               # full: train only the heads for N epochs, then the backbone at `lr`
    epochs: int = 10
    batch_size: int = 64                 # per process: torchrun with N processes trains on N x batch_size a step
    lr: float = 3e-4                     # backbone (lower: it is pretrained)
    head_lr: float = 1e-3                # heads, embeddings and loss weights
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05        # linear warmup over this share of the steps, then cosine to 0
    grad_clip: float = 1.0               # max global grad norm; 0 = off
    loss_weighting: Literal["uncertainty", "fixed"] = "uncertainty"  # learned log-variance per task | task_weights
    task_weights: Mapping = field(default_factory=Mapping)
    label_smoothing: float = 0.1
    class_weight_power: float = 0.0      # class weight (n_max / n_c) ** power: 0 = none, 1 = inverse frequency
    crop_scale: float = 0.5              # random resized crop keeps >= this share of the area; 1 = no crop
    hflip: bool = True
    color_jitter: float = 0.0            # off by default: colour is evidence of style
    wall_photos: float = 0.0             # cached: share of samples seen as a phone photo of the painting on a
                                         # wall (train.composite), cut out by the locator as uploads are
    relit_photos: float = 0.0            # cached: share of those photos taken under harder light
                                         # (train.composite.relight: gallery light, glare, a soft lens)
    photo_views: float = 0.0             # full: share of training images seen as the painting cut out of a
                                         # phone photo (train.composite.photo_view), new each epoch
    ema_decay: float = 0.0               # EMA of weights (e.g. 0.999); evaluation and checkpoints use it
    calibrate: bool = True               # fit a softmax temperature per task on val at the end
    # runtime
    device: str = "auto"                 # auto | cpu | cuda | cuda:N (under torchrun: cuda:LOCAL_RANK)
    compile: bool = False
    sync_bn: bool = False                # torchrun on GPUs: BatchNorm statistics over all processes' batches
    workers: int = 2
    u8_cache: bool = False               # decode once into a uint8 memmap (GPU: decoding would be the bottleneck)
    cache_dir: str = "~/.cache/artattr"
    time_limit: float = 0.0              # minutes; stop cleanly after the epoch that crosses it (then --resume)
    half: bool = True                    # store the final best/ weights in float16
    seed: int = 0
    # --resume (bare): OUT/trainer_state.pt; or a path to a trainer_state.pt / run folder
    resume: str = field(default="", metadata={"nargs": "?", "const": "true"})
    push_to_hub: str = ""                # ORG/NAME: upload best/ when done

    def __post_init__(self):
        self.tasks = [t.strip() for v in self.tasks for t in str(v).split(",") if t.strip()]
        self.model_args, self.task_weights = Mapping(self.model_args), Mapping(self.task_weights)
        self.resume = "" if str(self.resume).lower() in ("", "false", "none") else str(self.resume)
        if not 0 <= self.wall_photos <= 1 or (self.wall_photos and self.recipe != "cached"):
            raise ConfigError(f"wall_photos: a share from 0 to 1, for recipe 'cached' (got {self.wall_photos} "
                              f"with recipe {self.recipe!r})")
        if not 0 <= self.relit_photos <= 1 or (self.relit_photos and not self.wall_photos):
            raise ConfigError(f"relit_photos: a share from 0 to 1 of the wall photos, which need wall_photos > 0 "
                              f"(got {self.relit_photos} with wall_photos {self.wall_photos})")
        if not 0 <= self.photo_views <= 1 or (self.photo_views and (self.recipe != "full" or self.u8_cache)):
            raise ConfigError(f"photo_views: a share from 0 to 1, for recipe 'full' without u8_cache (it decodes each "
                              f"epoch anew; got {self.photo_views} with recipe {self.recipe!r}, u8_cache {self.u8_cache})")
        if self.init and self.recipe != "full":
            raise ConfigError(f"init: fine-tuning a checkpoint needs recipe 'full', not {self.recipe!r}")
        unknown = set(self.tasks) - set(TASKS)
        if unknown and not self.data.startswith("hf:"):
            raise ConfigError(f"tasks: unknown task(s) {sorted(unknown)}; choose from {TASKS}")


def _parser():
    from transformers import HfArgumentParser

    class Parser(HfArgumentParser):
        def error(self, message):  # argparse would print usage and exit; the caller decides
            raise ConfigError(message)

    return Parser(FitArgs, allow_abbrev=False, prog="python -m train fit")


def _tokens(key: str, value) -> list[str]:
    """A YAML value as the command-line tokens that mean it."""
    if isinstance(value, bool):
        return [f"--{key}", str(value).lower()]
    if isinstance(value, list):
        return [f"--{key}", *map(str, value)] if value else []
    if isinstance(value, dict):
        return [f"--{key}", json.dumps(value)]
    return [f"--{key}", "" if value is None else str(value)]


def _check_keys(keys, where: str) -> None:
    known = [f.name for f in fields(FitArgs)]
    for key in keys:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(f"{where}: unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                                 f". Known keys: {', '.join(known)}"))


def parse_args(argv: list[str]) -> FitArgs:
    """``--config FILE`` (YAML) then ``--key value`` overrides (later wins); a bare ``--flag`` means true."""
    import yaml

    tokens: list[str] = []
    rest = list(argv)
    while "--config" in rest or any(a.startswith("--config=") for a in rest):
        i = next(i for i, a in enumerate(rest) if a == "--config" or a.startswith("--config="))
        path = Path(rest[i].partition("=")[2] or (rest[i + 1] if i + 1 < len(rest) else ""))
        del rest[i: i + (1 if "=" in rest[i] else 2)]
        if not path.is_file():
            raise ConfigError(f"config file {path} not found")
        loaded = yaml.safe_load(path.read_text()) or {}
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of key: value")
        _check_keys(loaded, str(path))
        tokens += [t for k, v in loaded.items() for t in _tokens(k, v)]
    _check_keys([a[2:].partition("=")[0].replace("-", "_") for a in rest if a.startswith("--")], "command line")
    try:
        (args,) = _parser().parse_args_into_dataclasses(tokens + rest, look_for_args_file=False)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return args


def make_args(values: dict) -> FitArgs:
    """FitArgs from a plain dict, checked like a config file (tests, notebooks, benchmarks)."""
    _check_keys(values, "config")
    try:
        (args,) = _parser().parse_args_into_dataclasses([t for k, v in values.items() for t in _tokens(k, v)],
                                                        look_for_args_file=False)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    return args
