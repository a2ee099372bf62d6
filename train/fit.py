"""``python -m train fit --config CONFIG.yaml [--key value ...]``: fine-tune a multi-task model.

One loop for every recipe in ``train/configs``: full fine-tuning on a GPU (bf16 autocast,
channels_last, optional ``torch.compile``) or the CPU ``cached`` recipe (frozen trunk whose
activations are computed once, see :mod:`train.cached`). Images are decoded to uint8 in
DataLoader workers and augmented in batches on the device, so two CPU cores keep a model fed;
``u8_cache: true`` decodes once into a memory-mapped uint8 array for GPUs that outrun JPEG decoding.

Each epoch writes ``last/`` (and ``best/`` by mean macro-F1) in the artattr checkpoint format and
an atomically replaced ``trainer_state.pt``, so ``--resume`` continues exactly where a crash,
``time_limit`` or a full disk stopped it: every epoch reseeds its shuffling, augmentation and
dropout from ``seed`` and the epoch number.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
import warnings
import zlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import artattr
from artattr.checkpoint import ModelConfig, load_checkpoint, save_checkpoint
from artattr.images import load_image

from .cached import cache_features, lite_parts
from .data import MISSING, TASKS, ImageRows, Row, Vocab, read_rows, split_rows
from .metrics import all_metrics, mean_macro_f1
from .display_names import display_for

log = logging.getLogger("train")

STATE_FILE = "trainer_state.pt"
#: arguments that define the run; ``--resume`` refuses to continue with different values
RUN_KEYS = ("data", "tasks", "split", "val_fold", "val_fraction", "min_artist_images", "limit", "architecture",
            "input_size", "recipe", "frozen_blocks", "batch_size", "seed", "embed_dim", "arcface_task")


@dataclass
class FitArgs:
    # data: a folder with metadata.csv (WikiArt-11 shape), an ImageFolder, or "hf:huggan/wikiart"
    data: str = "../shared/data/wikiart11"
    out: str = "runs/fit"
    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    split: str = "csv"                   # csv | random (stratified by style) | artist (artist_fold == val_fold is val)
    val_fold: int = 0
    val_fraction: float = 0.15
    min_artist_images: int = 50          # rarer artists are folded into "other"
    imagefolder_task: str = "style"      # the task an ImageFolder's class folders name
    limit: int = 0                       # first N train rows (and N/4 val rows): smoke tests
    # model
    architecture: str = "efficientnet_lite0"
    pretrained: bool = True
    input_size: int = 224
    embed_dim: int = 128
    dropout: float = 0.3
    arcface_task: str = "style"
    arcface_weight: float = 0.5
    model_args: dict = field(default_factory=dict)
    # recipe
    recipe: str = "full"                 # full | cached (frozen-trunk feature cache, EfficientNet-Lite, CPU)
    frozen_blocks: int = 5               # cached: blocks[:frozen_blocks] are frozen and cached
    freeze_epochs: int = 0               # full: train only the heads for N epochs, then the backbone at `lr`
    epochs: int = 10
    batch_size: int = 64
    lr: float = 3e-4                     # backbone (lower: it is pretrained)
    head_lr: float = 1e-3                # heads, embeddings and loss weights
    weight_decay: float = 0.05
    warmup_fraction: float = 0.05        # linear warmup over this share of the steps, then cosine to 0
    grad_clip: float = 1.0               # max global grad norm; 0 = off
    loss_weighting: str = "uncertainty"  # uncertainty (learned log-variance per task) | fixed (task_weights)
    task_weights: dict = field(default_factory=dict)
    label_smoothing: float = 0.1
    class_weight_power: float = 0.0      # class weight (n_max / n_c) ** power: 0 = none, 1 = inverse frequency
    crop_scale: float = 0.5              # random resized crop keeps >= this share of the area; 1 = no crop
    hflip: bool = True
    color_jitter: float = 0.0            # off by default: colour is evidence of style
    ema_decay: float = 0.0               # EMA of weights (e.g. 0.999); evaluation and checkpoints use it
    calibrate: bool = True               # fit a softmax temperature per task on val at the end
    # runtime
    device: str = "auto"                 # auto | cpu | cuda | cuda:N
    compile: bool = False
    workers: int = 2
    u8_cache: bool = False               # decode once into a uint8 memmap (GPU: decoding would be the bottleneck)
    cache_dir: str = "~/.cache/artattr"
    time_limit: float = 0.0              # minutes; stop cleanly after the epoch that crosses it (then --resume)
    half: bool = True                    # store the final best/ weights in float16
    seed: int = 0
    resume: bool | str = False           # true: OUT/trainer_state.pt; or a path to a trainer_state.pt / run folder
    push_to_hub: str = ""                # ORG/NAME: upload best/ when done


class ConfigError(ValueError):
    """A config file or override the trainer cannot use; names the key."""


def parse_args(argv: list[str]) -> FitArgs:
    """``--config FILE`` (YAML) then ``--key value`` overrides; a bare ``--flag`` means true."""
    import yaml

    cfg: dict = {}
    source = "command line"
    rest: list[tuple[str, object]] = []
    i = 0
    while i < len(argv):
        token = argv[i]
        if not token.startswith("--"):
            raise ConfigError(f"unexpected argument {token!r}; options look like --key value")
        key, eq, value = token[2:].partition("=")
        if not eq:
            if i + 1 < len(argv) and not argv[i + 1].startswith("--"):
                value, i = argv[i + 1], i + 1
            else:
                value = "true"
        i += 1
        if key == "config":
            path = Path(value)
            if not path.is_file():
                raise ConfigError(f"config file {path} not found")
            loaded = yaml.safe_load(path.read_text()) or {}
            if not isinstance(loaded, dict):
                raise ConfigError(f"{path}: expected a mapping of key: value")
            cfg.update(loaded)
            source = str(path)
        else:
            rest.append((key.replace("-", "_"), yaml.safe_load(value)))
    cfg = {k: (source, v) for k, v in cfg.items()}
    cfg.update({k: ("command line", v) for k, v in rest})
    return make_args({k: v for k, (_, v) in cfg.items()}, {k: s for k, (s, _) in cfg.items()})


def make_args(values: dict, sources: dict | None = None) -> FitArgs:
    """FitArgs from a plain dict, checking every key and type so a typo fails before any work."""
    known = {f.name: f for f in fields(FitArgs)}
    defaults = FitArgs()
    out = {}
    for key, value in values.items():
        where = (sources or {}).get(key, "config")
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            raise ConfigError(f"{where}: unknown key {key!r}" + (f"; did you mean {close[0]!r}?" if close else
                                                                  f". Known keys: {', '.join(known)}"))
        out[key] = _coerce(key, value, getattr(defaults, key), where)
    args = FitArgs(**out)
    for key, choices in (("split", ("csv", "random", "artist")), ("recipe", ("full", "cached")),
                         ("loss_weighting", ("uncertainty", "fixed"))):
        if getattr(args, key) not in choices:
            raise ConfigError(f"{key} must be one of {choices}, not {getattr(args, key)!r}")
    unknown_tasks = set(args.tasks) - set(TASKS)
    if unknown_tasks and not args.data.startswith("hf:"):
        raise ConfigError(f"tasks: unknown task(s) {sorted(unknown_tasks)}; choose from {TASKS}")
    return args


def _coerce(key: str, value, default, where: str):
    if key == "resume" and isinstance(value, (str, bool)):
        return value
    if isinstance(default, bool):
        if isinstance(value, bool):
            return value
    elif isinstance(default, int):
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif isinstance(default, float):
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)  # YAML reads "1e-3" as a string
            except ValueError:
                pass
    elif isinstance(default, list):
        if isinstance(value, list):
            return value
        if isinstance(value, str):
            return [v.strip() for v in value.split(",") if v.strip()]
    elif isinstance(default, dict):
        if isinstance(value, dict):
            return value
    elif isinstance(default, str):
        if value is None:
            return ""
        if not isinstance(value, (list, dict)):
            return str(value)
    raise ConfigError(f"{where}: {key} must be {type(default).__name__}, got {value!r}")


# ---------------------------------------------------------------------------------------------- data

def _read_path(row: Row) -> str:
    return row.path


class _HFReader:
    """Encoded image bytes of row ``int(row.path)`` of a ``datasets`` table (memory-mapped, fork-safe)."""

    def __init__(self, ds):
        self.ds = ds

    def __call__(self, row: Row):
        image = self.ds[int(row.path)]["image"]
        return image["bytes"] if image.get("bytes") else image["path"]


def load_rows(args: FitArgs) -> tuple[list[Row], Callable[[Row], object]]:
    """All rows of the data source and how to get the encoded image of a row."""
    if args.data.startswith("hf:"):
        return _hf_rows(args.data[3:], args.tasks)
    root = Path(args.data).expanduser()
    if (root / "metadata.csv").is_file():
        return read_rows(root), _read_path
    if root.is_dir():
        return _imagefolder_rows(root, args.imagefolder_task), _read_path
    raise ValueError(f"data {args.data!r}: not a folder with metadata.csv, not an ImageFolder, not 'hf:NAME'")


def _imagefolder_rows(root: Path, task: str) -> list[Row]:
    """``root/CLASS/*.jpg`` (random split) or ``root/{train,val}/CLASS/*.jpg`` (its own split)."""
    exts = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".gif", ".tif", ".tiff"}
    splits = [s for s in ("train", "val") if (root / s).is_dir()]
    rows = []
    for split in splits or [""]:
        for cls in sorted(p for p in (root / split).iterdir() if p.is_dir()):
            for f in sorted(cls.rglob("*")):
                if f.suffix.lower() in exts:
                    rows.append(Row(path=str(f), labels={t: (cls.name if t == task else "") for t in TASKS}, split=split))
    if not rows:
        raise ValueError(f"{root}: no images in class sub-folders (expected ROOT/CLASS/image.jpg)")
    return rows


def _hf_rows(name: str, tasks: list[str]) -> tuple[list[Row], Callable[[Row], object]]:
    """Rows of a ``datasets`` image table with ClassLabel columns (``huggan/wikiart``: artist, genre, style).

    Label names come from the dataset features; "Unknown Artist"/"Unknown Genre" are missing labels.
    There is no artist_fold column, so one is derived from the artist name (stable across runs).
    """
    import datasets

    try:
        ds = datasets.load_dataset(name, split="train")
    except ConnectionError as err:
        raise ValueError(f"hf:{name}: cannot download it ({err}); run once with network access (it is then cached "
                         "under ~/.cache/huggingface) and set HF_DATASETS_OFFLINE=1, or pass a local folder.") from None
    except FileNotFoundError as err:
        raise ValueError(f"hf:{name}: no such dataset ({err})") from None
    label_cols = [t for t in tasks if t in ds.features]
    if "image" not in ds.features or not label_cols:
        raise ValueError(f"hf:{name}: expected an 'image' column and label columns {tasks}; has {list(ds.features)}")
    names = {t: ds.features[t].names for t in label_cols}
    values = ds.select_columns(label_cols).to_dict()
    rows = []
    for i in range(len(ds)):
        labels = {t: "" for t in tasks}
        for t in label_cols:
            label = names[t][values[t][i]]
            labels[t] = "" if label.lower().startswith("unknown") else label
        artist = labels.get("artist", "")
        rows.append(Row(path=str(i), labels=labels, artist_fold=zlib.crc32(artist.encode()) % 5 if artist else -1))
    return rows, _HFReader(ds.cast_column("image", datasets.Image(decode=False)))


class DecodedRows(Dataset):
    """uint8 (3, S, S) images squashed like :meth:`artattr.Predictor.resize`; augmentation and
    normalisation happen later, batched on the device. Unreadable files give ``ok=False``."""

    def __init__(self, rows: list[Row], size: int, read: Callable[[Row], object] = _read_path):
        self.rows, self.size, self.read = rows, size, read

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int):
        try:
            img = load_image(self.read(self.rows[i]), draft_size=self.size * 2)
        except (ValueError, OSError):
            return torch.zeros(3, self.size, self.size, dtype=torch.uint8), i, False
        if img.size != (self.size, self.size):
            img = img.resize((self.size, self.size), Image.BILINEAR, reducing_gap=3.0)
        return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1), i, True


def augment(x: torch.Tensor, gen: torch.Generator, crop_scale: float, hflip: bool, jitter: float) -> torch.Tensor:
    """Per-image random resized crop (area >= crop_scale, aspect 3/4..4/3), mirror and colour jitter
    for a float batch in [0, 1], as one ``grid_sample`` on the batch's device."""
    b = x.shape[0]
    u = torch.rand(b, 6, generator=gen)
    area = crop_scale + (1 - crop_scale) * u[:, 0]
    ratio = torch.exp((u[:, 1] * 2 - 1) * math.log(4 / 3))
    w = torch.sqrt(area * ratio).clamp(max=1.0)
    h = torch.sqrt(area / ratio).clamp(max=1.0)
    cx = (u[:, 2] * 2 - 1) * (1 - w)
    cy = (u[:, 3] * 2 - 1) * (1 - h)
    flip = torch.where(u[:, 4] < 0.5, -1.0, 1.0) if hflip else torch.ones(b)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0], theta[:, 0, 2], theta[:, 1, 1], theta[:, 1, 2] = w * flip, cx, h, cy
    grid = F.affine_grid(theta.to(x.device, x.dtype), list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    if jitter:
        f = 1 + (torch.rand(b, 3, 1, 1, 1, generator=gen) * 2 - 1).to(x.device, x.dtype) * jitter
        x = x * f[:, 0]                                               # brightness
        mean = x.mean((1, 2, 3), keepdim=True)
        x = (x - mean) * f[:, 1] + mean                               # contrast
        gray = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        x = (x - gray) * f[:, 2] + gray                               # saturation
        x = x.clamp(0, 1)
    return x


def _u8_cache(rows: list[Row], read, size: int, workers: int, cache_dir: str, desc: str) -> tuple[np.ndarray, np.ndarray]:
    """Decode ``rows`` once into ``(N, 3, S, S)`` uint8 memmap plus readable flags, reused across runs."""
    key = hashlib.sha1(json.dumps([[r.path for r in rows], size]).encode()).hexdigest()[:16]
    folder = Path(cache_dir).expanduser() / f"u8-{key}"
    if not (folder / "ok.npy").is_file():
        tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        images = np.lib.format.open_memmap(tmp / "images.npy", mode="w+", dtype=np.uint8, shape=(len(rows), 3, size, size))
        ok = np.zeros(len(rows), dtype=bool)
        loader = DataLoader(DecodedRows(rows, size, read), batch_size=256, num_workers=workers)
        for x, idx, good in tqdm(loader, desc=f"decoding {desc} to uint8", unit="batch"):
            images[idx.numpy()] = x.numpy()
            ok[idx.numpy()] = good.numpy()
        images.flush()
        np.save(tmp / "ok.npy", ok)
        del images
        try:
            tmp.rename(folder)
        except OSError:  # another run finished the same cache first
            shutil.rmtree(tmp, ignore_errors=True)
    return np.load(folder / "images.npy", mmap_mode="r"), np.load(folder / "ok.npy")


# ---------------------------------------------------------------------------------------------- feeds

@dataclass
class Feed:
    """Where batches come from and how they enter the model, for one recipe.

    ``batches(epoch, train)`` yields ``(x, idx, ok)``: the model input on the device (augmented when
    ``train``), the row indices and the readable flags (CPU); ``forward(net, x)`` runs the model.
    """

    batches: Callable[[int, bool], Iterator]
    forward: Callable[[nn.Module, torch.Tensor], dict]
    steps: int                                     # training batches per epoch
    backbone: Callable[[nn.Module], list]          # parameters trained at `lr` (the rest at `head_lr`)
    set_mode: Callable[[nn.Module, int], None]     # train/eval flags for an epoch


def _epoch_gen(seed: int, epoch: int, stream: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed((seed * 1_000_003 + epoch) * 8 + stream)


def image_feed(args: FitArgs, train_rows, val_rows, read, mean, std, device: torch.device) -> Feed:
    n, bs = len(train_rows), args.batch_size
    drop_last = n > bs  # BatchNorm cannot train on a last batch of one
    mean_t = torch.tensor(mean, device=device).view(1, 3, 1, 1)
    std_t = torch.tensor(std, device=device).view(1, 3, 1, 1)
    caches = {}
    if args.u8_cache:
        caches = {True: _u8_cache(train_rows, read, args.input_size, args.workers, args.cache_dir, "train"),
                  False: _u8_cache(val_rows, read, args.input_size, args.workers, args.cache_dir, "val")}

    def uint8_batches(rows: list[Row], train: bool, gen: torch.Generator):
        if caches:
            images, ok = caches[train]
            order = torch.randperm(len(rows), generator=gen) if train else torch.arange(len(rows))
            stop = len(rows) - (len(rows) % bs if train and drop_last else 0)
            for i in range(0, stop, bs):
                idx = order[i: i + bs].sort().values  # sorted: sequential reads from the memmap
                yield torch.from_numpy(images[idx.numpy()]), idx, torch.from_numpy(ok[idx.numpy()])
        else:
            yield from DataLoader(DecodedRows(rows, args.input_size, read), batch_size=bs, shuffle=train, generator=gen,
                                  num_workers=args.workers, drop_last=train and drop_last,
                                  pin_memory=device.type == "cuda", prefetch_factor=4 if args.workers else None)

    def batches(epoch: int, train: bool):
        aug = _epoch_gen(args.seed, epoch, 1)
        for x, idx, ok in uint8_batches(train_rows if train else val_rows, train, _epoch_gen(args.seed, epoch)):
            x = x.to(device, non_blocking=True).float().div_(255)
            if train and (args.crop_scale < 1 or args.hflip or args.color_jitter):
                x = augment(x, aug, args.crop_scale, args.hflip, args.color_jitter)
            yield ((x - mean_t) / std_t).contiguous(memory_format=torch.channels_last), idx, ok

    def forward(net: nn.Module, x: torch.Tensor) -> dict:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            return net(x)

    def set_mode(net: nn.Module, epoch: int) -> None:
        frozen = epoch < args.freeze_epochs
        net.train()
        net.backbone.requires_grad_(not frozen)
        if frozen:
            net.backbone.eval()  # keep the pretrained BatchNorm statistics while only the heads learn

    return Feed(batches, forward, n // bs if drop_last else 1, lambda net: list(net.backbone.parameters()), set_mode)


def cached_feed(args: FitArgs, train_rows, val_rows, vocab: Vocab, model: nn.Module, device: torch.device) -> Feed:
    """The CPU recipe: blocks[:frozen_blocks] run once per image (and its mirror image), the rest trains."""
    if not args.architecture.startswith("efficientnet_lite"):
        raise ConfigError(f"recipe 'cached' needs an EfficientNet-Lite architecture, not {args.architecture!r}")
    if args.data.startswith("hf:"):
        raise ConfigError("recipe 'cached' reads image files; use a metadata.csv folder or an ImageFolder")
    trunk, _ = lite_parts(model, args.frozen_blocks)
    trunk.eval().requires_grad_(False)
    key = hashlib.sha1(json.dumps([args.data, args.architecture, args.input_size, args.frozen_blocks, args.split,
                                   args.limit, len(train_rows)]).encode()).hexdigest()[:12]
    cache = Path(args.cache_dir).expanduser() / key
    tr = cache_features(trunk, ImageRows(train_rows, vocab, args.input_size, model.mean, model.std), cache / "train.pt", True, "train")
    va = cache_features(trunk, ImageRows(val_rows, vocab, args.input_size, model.mean, model.std), cache / "val.pt", False, "val")
    n, bs = len(train_rows), args.batch_size

    def batches(epoch: int, train: bool):
        if not train:
            for i in range(0, len(val_rows), 256):
                idx = torch.arange(i, min(i + 256, len(val_rows)))
                yield va["feats"][idx].to(device), idx, va["ok"][idx]
            return
        gen = _epoch_gen(args.seed, epoch)
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = perm[i: i + bs]
            flip = torch.rand(len(idx), generator=gen) < 0.5
            yield torch.where(flip[:, None, None, None], tr["flips"][idx], tr["feats"][idx]).to(device), idx, tr["ok"][idx]

    def top(net: nn.Module) -> nn.Module:
        return lite_parts(net, args.frozen_blocks)[1]

    def forward(net: nn.Module, f: torch.Tensor) -> dict:
        return net.forward_head(top(net)(f.float().contiguous(memory_format=torch.channels_last)))

    return Feed(batches, forward, math.ceil(n / bs),
                lambda net: list(top(net).parameters()), lambda net, epoch: net.train())


# ---------------------------------------------------------------------------------------------- loss

def class_weights(targets: torch.Tensor, n: int, power: float) -> torch.Tensor:
    """(n_max / n_c) ** power per class, scaled so the average weight of a training example is 1."""
    counts = torch.bincount(targets[targets >= 0], minlength=n).float().clamp(min=1)
    w = (counts.max() / counts) ** power
    return w / (w * counts).sum() * counts.sum()


def fit_temperature(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """One scalar T minimising validation NLL (Guo et al. 2017): probabilities that mean what they say."""
    keep = targets >= 0
    logits, targets = logits[keep].float(), targets[keep]
    if not len(targets):
        return 1.0
    log_t = torch.zeros(1, requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=100)

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), targets)
        loss.backward()
        return loss

    opt.step(closure)
    return float(log_t.detach().exp().clamp(0.05, 20.0))


class TaskLoss(nn.Module):
    """Masked multi-task loss. ``uncertainty``: sum_t exp(-s_t) * L_t + s_t with a learned log-variance
    s_t per task (Kendall et al. 2018), so a noisy 129-way artist head cannot drown style; ``fixed``:
    sum_t w_t * L_t. ArcFace terms on ``model.arcface`` are added with ``arcface_weight``."""

    def __init__(self, args: FitArgs, vocab: Vocab, targets: dict[str, torch.Tensor]):
        super().__init__()
        self.args, self.tasks = args, list(vocab.labels)
        self.log_vars = nn.ParameterDict({t: nn.Parameter(torch.zeros(())) for t in self.tasks}) \
            if args.loss_weighting == "uncertainty" else None
        for t in self.tasks:
            w = class_weights(targets[t], len(vocab.labels[t]), args.class_weight_power) if args.class_weight_power else None
            self.register_buffer(f"weight_{t}", w, persistent=False)

    def forward(self, out: dict, y: dict[str, torch.Tensor], model: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
        """(objective, sum of plain cross-entropies for the learning curves)."""
        total = plain = out[self.tasks[0]].new_zeros((), dtype=torch.float32)
        for t in self.tasks:
            if not (y[t] >= 0).any():
                continue
            logits = out[t].float()
            loss = F.cross_entropy(logits, y[t], weight=getattr(self, f"weight_{t}"), ignore_index=MISSING,
                                   label_smoothing=self.args.label_smoothing)
            plain = plain + F.cross_entropy(logits.detach(), y[t], ignore_index=MISSING)
            if self.log_vars is not None:
                total = total + torch.exp(-self.log_vars[t]) * loss + self.log_vars[t]
            else:
                total = total + float(self.args.task_weights.get(t, 1.0)) * loss
        task = getattr(model, "arcface_task", None)
        if task and self.args.arcface_weight and (y[task] >= 0).any():
            for key, head in model.arcface.items():
                total = total + self.args.arcface_weight * F.cross_entropy(head(out[key].float(), y[task]), y[task],
                                                                           ignore_index=MISSING)
        return total, plain


# ---------------------------------------------------------------------------------------------- loop

def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _warm_cos(step: int, total: int, warmup: int) -> float:
    return min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(1.0, step / max(total, 1))))


def _rng_state() -> dict:
    name, keys, pos, has_gauss, gauss = np.random.get_state()  # as a list: weights_only loads no numpy arrays
    return {"torch": torch.get_rng_state(), "numpy": (name, keys.tolist(), pos, has_gauss, gauss), "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def _atomic_save(obj, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def load_state(path: Path) -> dict:
    """A trainer state written by ``_atomic_save``: tensors, numbers, strings, lists and dicts only.
    ``weights_only=True`` unpickles nothing else, so a hostile file cannot run code."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError for code, RuntimeError/EOFError for a damaged file
        raise ConfigError(f"--resume: {path} is not a trainer state this version can read safely "
                          f"({type(err).__name__}: {str(err).splitlines()[0][:200] if str(err) else ''})") from None


def _model_config(args: FitArgs, vocab: Vocab, model: nn.Module, metrics: dict, temps: dict | None = None) -> ModelConfig:
    return ModelConfig(
        architecture=args.architecture, tasks=vocab.labels, input_size=args.input_size, resize="squash",
        mean=list(model.mean), std=list(model.std), temperature=temps or {}, unknown_label=vocab.unknown,
        model_args={"embed_dim": args.embed_dim, "arcface_task": args.arcface_task, "dropout": args.dropout,
                    **args.model_args},
        metrics=metrics, display=display_for(vocab.labels))


@torch.inference_mode()
def predict_logits(feed: Feed, net: nn.Module, n: int, tasks: list[str]) -> tuple[dict[str, torch.Tensor], np.ndarray]:
    """Val logits of every row (float32, CPU) and which rows were readable."""
    net.eval()
    chunks, idxs, oks = [], [], []
    for x, idx, ok in feed.batches(0, False):
        out = feed.forward(net, x)
        chunks.append({t: out[t].float().cpu() for t in tasks})
        idxs.append(idx)
        oks.append(ok)
    order = torch.cat(idxs)
    logits = {}
    for t in tasks:
        cat = torch.cat([c[t] for c in chunks])
        logits[t] = torch.empty_like(cat).index_copy_(0, order, cat)
    ok = torch.empty(n, dtype=torch.bool).index_copy_(0, order, torch.cat(oks))
    return logits, ok.numpy()


def _masked(targets: dict[str, torch.Tensor], ok: np.ndarray) -> dict[str, np.ndarray]:
    return {t: np.where(ok, y.numpy(), MISSING) for t, y in targets.items()}


def run(args: FitArgs) -> Path:
    """Train, checkpoint every epoch, and return the ``best/`` checkpoint folder."""
    from .evaluate import write_report
    from .plots import learning_curves

    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    device = pick_device(args.device)
    torch.manual_seed(args.seed)
    rows, read = load_rows(args)
    train_rows, val_rows = split_rows(rows, args.split, val_fold=args.val_fold, val_fraction=args.val_fraction, seed=args.seed)
    if args.limit:
        train_rows, val_rows = train_rows[: args.limit], val_rows[: max(args.limit // 4, 8)]
    if not train_rows or not val_rows:
        raise ConfigError(f"split {args.split!r} of {args.data} gives {len(train_rows)} train and {len(val_rows)} val "
                          "rows; use split: random or artist when the data has no split column")
    vocab = Vocab.build(train_rows, args.tasks, args.min_artist_images)
    empty = [t for t, names in vocab.labels.items() if not names]
    if empty:
        raise ConfigError(f"task(s) {empty} have no labels in the training rows; drop them from `tasks`")
    y_train, y_val = vocab.targets(train_rows), vocab.targets(val_rows)
    tasks = list(vocab.labels)

    model = artattr.create_model(args.architecture, tasks=vocab.labels, pretrained=args.pretrained,
                                 embed_dim=args.embed_dim, arcface_task=args.arcface_task or None,
                                 dropout=args.dropout, **args.model_args)
    feed = (cached_feed(args, train_rows, val_rows, vocab, model, device) if args.recipe == "cached"
            else image_feed(args, train_rows, val_rows, read, model.mean, model.std, device))
    model.to(device).to(memory_format=torch.channels_last)  # faster convolutions on GPUs and CPUs alike
    criterion = TaskLoss(args, vocab, y_train).to(device)
    backbone_ids = {id(p) for p in feed.backbone(model)}
    heads = [p for n, p in model.named_parameters() if id(p) not in backbone_ids and not n.startswith("backbone.")]
    groups = [{"params": feed.backbone(model), "lr": args.lr}, {"params": heads, "lr": args.head_lr}]
    if criterion.log_vars is not None:
        groups.append({"params": list(criterion.parameters()), "lr": args.head_lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, weight_decay=args.weight_decay)
    total = args.epochs * feed.steps
    warmup = max(1, int(total * args.warmup_fraction))
    start = args.freeze_epochs * feed.steps if args.recipe == "full" else 0
    head_sched = lambda s: _warm_cos(s, total, warmup)  # noqa: E731
    backbone_sched = lambda s: 0.0 if s < start else _warm_cos(s - start, total - start, warmup)  # noqa: E731
    sched = torch.optim.lr_scheduler.LambdaLR(opt, [backbone_sched] + [head_sched] * (len(groups) - 1))
    net = torch.compile(model) if args.compile else model
    ema = copy.deepcopy(model).eval().requires_grad_(False) if args.ema_decay else None

    history, best, first_epoch, bad_paths = [], -1.0, 0, set()
    state_path = _state_path(args, out)
    if state_path is not None:
        state = load_state(state_path)
        changed = {k: (state["args"].get(k), getattr(args, k)) for k in RUN_KEYS if state["args"].get(k) != getattr(args, k)}
        if changed:
            raise ConfigError(f"--resume: {state_path} was trained with different settings {changed}; "
                              "resume with the same config or start a new `out` folder")
        model.load_state_dict(state["model"])
        criterion.load_state_dict(state["loss"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        if ema is not None and state.get("ema"):
            ema.load_state_dict(state["ema"])
        history, best, first_epoch, bad_paths = state["history"], state["best"], state["epoch"] + 1, set(state["bad_paths"])
        _set_rng_state(state["rng"])
        print(f"resuming {state_path} after epoch {first_epoch} of {args.epochs}")
    print(f"{args.architecture} on {device}: train {len(train_rows)}, val {len(val_rows)}, "
          f"tasks { {t: len(v) for t, v in vocab.labels.items()} }, recipe {args.recipe}")

    for epoch in range(first_epoch, args.epochs):
        torch.manual_seed(args.seed * 1_000_003 + epoch)  # dropout: same numbers whether resumed or not
        feed.set_mode(model, epoch)
        t0, seen, sums = time.time(), 0, {"loss": 0.0, "ce": 0.0}
        probs = {t: np.zeros((len(train_rows), len(vocab.labels[t])), dtype=np.float32) for t in tasks}
        trained = np.zeros(len(train_rows), dtype=bool)
        bar = tqdm(feed.batches(epoch, True), total=feed.steps, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch")
        for x, idx, ok in bar:
            if not ok.all():
                _log_bad(train_rows, idx[~ok].tolist(), bad_paths)
                x, idx = x[ok.to(x.device)], idx[ok]
            if len(idx) < 2:
                continue
            y = {t: y_train[t][idx].to(device) for t in tasks}
            out_ = feed.forward(net, x)
            loss, plain = criterion(out_, y, model)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            opt.step()
            sched.step()
            if ema is not None:
                _ema_update(ema, model, args.ema_decay)
            seen += len(idx)
            sums["loss"] += loss.item() * len(idx)
            sums["ce"] += plain.item() * len(idx)
            for t in tasks:
                probs[t][idx.numpy()] = torch.softmax(out_[t].detach().float(), -1).cpu().numpy()
            trained[idx.numpy()] = True
            bar.set_postfix(loss=f"{sums['loss'] / seen:.3f}", img_s=f"{seen / (time.time() - t0):.0f}")
        bar.close()
        train_secs = time.time() - t0
        eval_net = ema if ema is not None else model
        logits, ok_val = predict_logits(feed, eval_net, len(val_rows), tasks)
        _log_bad(val_rows, np.flatnonzero(~ok_val).tolist(), bad_paths)
        yv = _masked(y_val, ok_val)
        val_metrics = all_metrics({t: torch.softmax(logits[t], -1).numpy() for t in tasks}, yv, vocab.labels, vocab.unknown)
        train_metrics = all_metrics({t: p[trained] for t, p in probs.items()},
                                    {t: y[trained] for t, y in _masked(y_train, trained).items()}, vocab.labels, vocab.unknown)
        score = mean_macro_f1(val_metrics)
        history.append({
            "epoch": epoch + 1, "train_loss": sums["loss"] / max(seen, 1), "train_ce": sums["ce"] / max(seen, 1),
            "val_ce": float(sum(F.cross_entropy(logits[t], torch.from_numpy(yv[t]), ignore_index=MISSING)
                                for t in tasks if (yv[t] >= 0).any())),
            "train": train_metrics, "val": val_metrics, "mean_macro_f1": score, "lr": sched.get_last_lr()[1],
            "img_per_s": seen / max(train_secs, 1e-9), "seconds": time.time() - t0,
            "loss_weights": ({t: math.exp(-v.item()) for t, v in criterion.log_vars.items()} if criterion.log_vars else None),
        })
        print(f"epoch {epoch + 1}: loss {history[-1]['train_loss']:.4f}, val mean macro-F1 {score:.4f}, "
              + ", ".join(f"{t} top1 {val_metrics[t]['top1']:.3f}" for t in tasks)
              + f", {history[-1]['img_per_s']:.0f} img/s")
        config = _model_config(args, vocab, model, val_metrics)
        save_checkpoint(eval_net, config, out / "last")
        if score > best:
            best = score
            save_checkpoint(eval_net, config, out / "best")
        _atomic_save({"epoch": epoch, "args": asdict(args), "model": model.state_dict(), "loss": criterion.state_dict(),
                      "ema": ema.state_dict() if ema is not None else None, "optimizer": opt.state_dict(),
                      "scheduler": sched.state_dict(), "history": history, "best": best,
                      "bad_paths": sorted(bad_paths), "rng": _rng_state()}, out / STATE_FILE)
        if args.time_limit and time.time() - t_start > args.time_limit * 60 and epoch + 1 < args.epochs:
            print(f"time limit of {args.time_limit} min reached after epoch {epoch + 1}; continue with --resume")
            return out / "best"

    skipped = len(bad_paths)
    if skipped:
        print(f"skipped {skipped} unreadable image(s) (logged above)")
    best_model, _ = load_checkpoint(out / "best")
    best_model.to(device).to(memory_format=torch.channels_last)
    logits, ok_val = predict_logits(feed, best_model, len(val_rows), tasks)
    yv = _masked(y_val, ok_val)
    temps = {t: fit_temperature(logits[t], torch.from_numpy(yv[t])) for t in tasks} if args.calibrate else {}
    probs = {t: torch.softmax(logits[t] / temps.get(t, 1.0), -1).numpy() for t in tasks}
    (out / "history.json").write_text(json.dumps({"args": asdict(args), "history": history}, indent=1))
    learning_curves(history, out / "learning_curves.png")
    metrics, report_files = write_report(out, probs, yv, vocab.labels, vocab.unknown,
                                         extra={"skipped_unreadable": skipped, "epochs": len(history)})
    known = all_metrics(probs, yv, vocab.labels, vocab.unknown)
    best_dir = save_checkpoint(best_model.cpu(), _model_config(args, vocab, model, known, temps), out / "best", half=args.half,
                               description=_describe(args),
                               extra_files={p.name: p for p in report_files + [out / "learning_curves.png", out / "history.json"]})
    print(f"best checkpoint: {best_dir} (val mean macro-F1 {mean_macro_f1(metrics):.4f}, "
          f"{(time.time() - t_start) / 60:.1f} min)")
    if args.push_to_hub:
        from .push import push

        print(f"pushed to hf-hub:{args.push_to_hub}@{push(best_dir, args.push_to_hub)}")
    return best_dir


def _state_path(args: FitArgs, out: Path) -> Path | None:
    if args.resume is False or args.resume == "":
        return None
    path = out / STATE_FILE if args.resume is True else Path(str(args.resume))
    path = path / STATE_FILE if path.is_dir() else path
    if not path.is_file():
        raise ConfigError(f"--resume: no {STATE_FILE} at {path}")
    return path


def _log_bad(rows: list[Row], indices: list[int], seen: set[str]) -> None:
    """Log each unreadable file once per run; the count goes into the report."""
    for i in indices:
        if rows[i].path not in seen:
            seen.add(rows[i].path)
            log.warning("skipping unreadable image %s", rows[i].path)


@torch.no_grad()
def _ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, m in zip(ema.state_dict().values(), model.state_dict().values()):
        if e.is_floating_point():
            e.lerp_(m, 1 - decay)
        else:
            e.copy_(m)


def _describe(args: FitArgs) -> str:
    how = (f"blocks {args.frozen_blocks}+ and heads trained on a frozen-trunk feature cache" if args.recipe == "cached"
           else "fully fine-tuned" + (f" after {args.freeze_epochs} head-only epoch(s)" if args.freeze_epochs else ""))
    return (f"{args.architecture} ({'ImageNet' if args.pretrained else 'random init'}) {how} on `{args.data}` "
            f"({args.split} split) for {args.epochs} epochs at {args.input_size} px: {args.loss_weighting} task weighting, "
            f"label smoothing {args.label_smoothing}, class weight power {args.class_weight_power}, "
            f"ArcFace ({args.arcface_task}, weight {args.arcface_weight}) embeddings"
            + (f", EMA {args.ema_decay}" if args.ema_decay else "") + ". Metrics are on the val rows with calibrated "
            "probabilities; `artist_known` counts only paintings by artists the model has as classes "
            f"(>= {args.min_artist_images} training images), the rest are labelled `other`.")


def main(argv: list[str] | None = None) -> int:
    import sys

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")  # early epochs, small val sets
    argv = sys.argv[1:] if argv is None else argv
    if argv in ([], ["-h"], ["--help"]):
        print("usage: python -m train fit --config train/configs/NAME.yaml [--key value ...]\n\nkeys (defaults):")
        for f in fields(FitArgs):
            print(f"  --{f.name} {getattr(FitArgs(), f.name)!r}")
        return 0 if argv else 2
    try:
        args = parse_args(argv)
        print(run(args))
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
