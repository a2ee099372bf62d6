"""``python -m train fit --config CONFIG.yaml [--key value ...]``: fine-tune a multi-task model.

One loop for every recipe in ``train/configs``: full fine-tuning on a GPU (bf16 autocast,
channels_last, optional ``torch.compile``; batches from :mod:`train.feeds`) or the CPU ``cached``
recipe (frozen trunk whose activations are computed once, :mod:`train.cached`). The same command
under ``torchrun --nproc_per_node=N`` trains with DistributedDataParallel (:mod:`train.dist`): each
process reads its shard, gradients and metrics are reduced over processes, only rank 0 writes.

Each epoch writes ``last/`` (and ``best/`` by mean macro-F1) in the artattr checkpoint format and
an atomically replaced ``trainer_state.pt`` (tensors and plain values only, read back with
``weights_only=True``), so ``--resume`` continues exactly where a crash, a killed process,
``time_limit`` or a full disk stopped it: every epoch reseeds its shuffling, augmentation and
dropout from ``seed``, the epoch number and the rank.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from dataclasses import asdict, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from timm.scheduler import CosineLRScheduler
from timm.utils import ModelEmaV3
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

import artattr
from artattr.checkpoint import ModelConfig, load_checkpoint, save_checkpoint
from artattr.hub import resolve
from artattr.models.heads import ARTWORK_KEY
from artattr.preprocess import Preprocess

from . import dist
from .args import ConfigError, FitArgs, make_args, parse_args  # noqa: F401  (this module's API too)
from .cached import cached_feed
from .card import card, describe
from .data import MISSING, DecodedRows, Row, Vocab, image_input, load_source, split_rows  # noqa: F401
from .display_names import display_for
from .dist import Dist, pick_device  # noqa: F401
from .feeds import Feed, augment, image_feed  # noqa: F401
from .loss import Objective, TaskLoss, class_weights, fit_temperature  # noqa: F401
from .metrics import all_metrics, mean_macro_f1

log = logging.getLogger("train")

STATE_FILE = "trainer_state.pt"
#: arguments that define the run; ``--resume`` refuses to continue with different values
RUN_KEYS = ("data", "tasks", "split", "val_fold", "val_fraction", "min_artist_images", "limit", "architecture",
            "input_size", "resize", "resample", "recipe", "frozen_blocks", "batch_size", "seed", "embed_dim",
            "arcface_task", "init")


def load_rows(args: FitArgs):
    """All rows of ``args.data`` and how to get a row's encoded image (see :func:`train.data.load_source`)."""
    return load_source(args.data, args.tasks, args.imagefolder_task), image_input


def preprocessing(args: FitArgs, model: nn.Module) -> Preprocess:
    return Preprocess(args.input_size, args.resize, tuple(model.mean), tuple(model.std), args.resample)


def model_config(args: FitArgs, vocab: Vocab, model: nn.Module, metrics: dict, temps: dict | None = None) -> ModelConfig:
    return ModelConfig(
        architecture=args.architecture, tasks=vocab.labels, input_size=args.input_size, resize=args.resize,
        resample=args.resample, mean=list(model.mean), std=list(model.std), temperature=temps or {},
        unknown_label=vocab.unknown, metrics=metrics, display=display_for(vocab.labels),
        model_args={"embed_dim": args.embed_dim, "arcface_task": args.arcface_task, "dropout": args.dropout,
                    **args.model_args})


def init_from(model: nn.Module, model_id: str, vocab: Vocab) -> None:
    """Load the weights of checkpoint ``model_id`` (see :func:`artattr.hub.resolve`) into ``model``, but for
    its artwork head, which ``python -m train trust`` fits anew on the fine-tuned features."""
    try:
        trained, config = load_checkpoint(resolve(model_id))
    except ValueError as err:  # no such folder, offline, a corrupt checkpoint: say so, not a stack trace
        raise ConfigError(f"init: {err}") from None
    if config.tasks != vocab.labels:
        raise ConfigError(f"init: {model_id} was trained on other labels than this data's "
                          f"({ {t: len(v) for t, v in config.tasks.items()} } vs { {t: len(v) for t, v in vocab.labels.items()} })")
    state = {k: v for k, v in trained.state_dict().items() if not k.startswith(f"{ARTWORK_KEY}.")}
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ConfigError(f"init: {model_id} does not fit architecture/model_args of this config: {err}") from None


def autocast(device: torch.device):
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.inference_mode()
def predict_logits(feed: Feed, model: nn.Module, n: int, tasks: list[str], d: Dist = Dist()) -> tuple[dict, np.ndarray]:
    """Val logits of every row (float32, CPU; each process scores its shard, then they are summed)
    and which rows were readable."""
    model.eval()
    net = feed.module(model)
    device = next(model.parameters()).device
    logits = None
    seen, ok = torch.zeros(n), torch.zeros(n)
    for x, idx, good in feed.batches(0, False):
        with autocast(device):
            out = net(x)
        if logits is None:
            logits = {t: torch.zeros(n, out[t].shape[1]) for t in tasks}
        for t in tasks:
            logits[t][idx] = out[t].float().cpu()
        seen[idx], ok[idx] = 1.0, good.float()
    for t in tasks:
        logits[t] = d.sum_(logits[t]) / d.sum_(seen.clone()).clamp(min=1)[:, None]
    return logits, (d.sum_(ok) > 0).numpy()


def _masked(targets: dict[str, torch.Tensor], ok: np.ndarray) -> dict[str, np.ndarray]:
    return {t: np.where(ok, y.numpy(), MISSING) for t, y in targets.items()}


def run(args: FitArgs) -> Path:
    """Train, checkpoint every epoch, and return the ``best/`` checkpoint folder."""
    d, device = dist.setup(args.device)
    try:
        return _run(args, d, device)
    finally:
        dist.teardown()


def _run(args: FitArgs, d: Dist, device: torch.device) -> Path:
    t_start = time.time()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)  # the same initial heads on every process
    rows = load_source(args.data, args.tasks, args.imagefolder_task)
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

    model = artattr.create_model(args.architecture, tasks=vocab.labels, pretrained=args.pretrained and not args.init,
                                 embed_dim=args.embed_dim, arcface_task=args.arcface_task or None,
                                 dropout=args.dropout, **args.model_args)
    if args.init:
        init_from(model, args.init, vocab)
    if args.sync_bn and d.world > 1:
        model = nn.SyncBatchNorm.convert_sync_batchnorm(model)
    prep = preprocessing(args, model)
    feed = (cached_feed(args, train_rows, val_rows, vocab, model, prep, device, d) if args.recipe == "cached"
            else image_feed(args, train_rows, val_rows, prep, device, d))
    model.to(device).to(memory_format=torch.channels_last)  # faster convolutions on GPUs and CPUs alike
    criterion = TaskLoss(args, vocab, y_train).to(device)
    backbone_ids = {id(p) for p in feed.backbone(model)}
    heads = [p for n, p in model.named_parameters() if id(p) not in backbone_ids and not n.startswith("backbone.")]
    groups = [{"params": feed.backbone(model), "lr": args.lr}, {"params": heads, "lr": args.head_lr}]
    if criterion.log_vars is not None:
        groups.append({"params": list(criterion.parameters()), "lr": args.head_lr, "weight_decay": 0.0})
    opt = torch.optim.AdamW(groups, weight_decay=args.weight_decay)
    total = args.epochs * feed.steps
    sched = CosineLRScheduler(opt, t_initial=total, warmup_t=max(1, int(total * args.warmup_fraction)),
                              warmup_lr_init=0.0, t_in_epochs=False)
    net = feed.module(model)
    objective = Objective(torch.compile(net) if args.compile else net, criterion, model)
    ema = ModelEmaV3(model, decay=args.ema_decay) if args.ema_decay else None

    history, best, first_epoch, bad_paths = [], -1.0, 0, set()
    step_fn, ddp_for = objective, None
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
        if ema is not None and state.get("ema"):
            ema.module.load_state_dict(state["ema"])
        history, best, first_epoch, bad_paths = state["history"], state["best"], state["epoch"] + 1, set(state["bad_paths"])
        if d.main:
            print(f"resuming {state_path} after epoch {first_epoch} of {args.epochs}")
    if d.main:
        print(f"{args.architecture} on {device} x {d.world} process(es): train {len(train_rows)}, val {len(val_rows)}, "
              f"tasks { {t: len(v) for t, v in vocab.labels.items()} }, recipe {args.recipe}")

    for epoch in range(first_epoch, args.epochs):
        torch.manual_seed((args.seed * 1_000_003 + epoch) * 4099 + d.rank)  # dropout: the same whether resumed or not
        feed.set_mode(model, epoch)
        trainable = [p.requires_grad for p in objective.parameters()]
        if d.world > 1 and trainable != ddp_for:  # DDP syncs the parameters that train when it is built
            step_fn, ddp_for = None, trainable
            step_fn = DistributedDataParallel(objective, device_ids=[device.index] if device.type == "cuda" else None,
                                              find_unused_parameters=True)  # a task may have no labels in a batch
        t0, sums = time.time(), torch.zeros(3, dtype=torch.float64)  # loss, plain CE, images
        probs = {t: np.zeros((len(train_rows), len(vocab.labels[t])), dtype=np.float32) for t in tasks}
        trained = np.zeros(len(train_rows), dtype=np.float32)
        bar = tqdm(feed.batches(epoch, True), total=feed.steps, desc=f"epoch {epoch + 1}/{args.epochs}", unit="batch",
                   disable=not d.main)
        for step, (x, idx, ok) in enumerate(bar):
            if not ok.all():
                _log_bad(train_rows, idx[~ok].tolist(), bad_paths)
                x, idx = x[ok.to(x.device)], idx[ok]
            if d.min(len(idx)) < 2:  # every process skips together, or DDP would wait forever
                continue
            y = {t: y_train[t][idx].to(device) for t in tasks}
            with autocast(device):
                loss, plain, out_ = step_fn(x, y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            if args.grad_clip:
                nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
            sched.step_update(epoch * feed.steps + step + 1)
            opt.step()
            if ema is not None:
                ema.update(model)
            value = loss.item()
            if not math.isfinite(value):  # every later step would be NaN too, and the best checkpoint unloadable
                raise FloatingPointError(f"the training loss became {value} at epoch {epoch + 1}, step {step + 1}: "
                                         "lower lr/head_lr or turn off compile/bf16 to find the layer; --resume "
                                         "restarts after the last finished epoch")
            sums += torch.tensor([value * len(idx), plain.item() * len(idx), len(idx)], dtype=torch.float64)
            for t in tasks:
                probs[t][idx.numpy()] = torch.softmax(out_[t].detach().float(), -1).cpu().numpy()
            trained[idx.numpy()] = 1.0
            bar.set_postfix(loss=f"{sums[0] / sums[2]:.3f}", img_s=f"{sums[2] / (time.time() - t0):.0f}")
        bar.close()
        train_secs = time.time() - t0
        d.sum_(sums)
        probs = {t: d.sum_array(p) for t, p in probs.items()}
        trained = d.sum_array(trained) > 0
        eval_model = ema.module if ema is not None else model
        logits, ok_val = predict_logits(feed, eval_model, len(val_rows), tasks, d)
        _log_bad(val_rows, np.flatnonzero(~ok_val).tolist(), bad_paths)
        yv = _masked(y_val, ok_val)
        val_metrics = all_metrics({t: torch.softmax(logits[t], -1).numpy() for t in tasks}, yv, vocab.labels, vocab.unknown)
        train_metrics = all_metrics({t: p[trained] for t, p in probs.items()},
                                    {t: y[trained] for t, y in _masked(y_train, trained).items()}, vocab.labels, vocab.unknown)
        score = mean_macro_f1(val_metrics)
        seen = max(float(sums[2]), 1.0)
        history.append({
            "epoch": epoch + 1, "train_loss": float(sums[0]) / seen, "train_ce": float(sums[1]) / seen,
            "val_ce": float(sum(F.cross_entropy(logits[t], torch.from_numpy(yv[t]), ignore_index=MISSING)
                                for t in tasks if (yv[t] >= 0).any())),
            "train": train_metrics, "val": val_metrics, "mean_macro_f1": score, "lr": opt.param_groups[1]["lr"],
            "img_per_s": seen / max(train_secs, 1e-9), "seconds": time.time() - t0, "processes": d.world,
            "loss_weights": ({t: math.exp(-v.item()) for t, v in criterion.log_vars.items()} if criterion.log_vars else None),
        })
        bad_paths = _all_bad(bad_paths, d)
        if d.main:
            print(f"epoch {epoch + 1}: loss {history[-1]['train_loss']:.4f}, val mean macro-F1 {score:.4f}, "
                  + ", ".join(f"{t} top1 {val_metrics[t]['top1']:.3f}" for t in tasks)
                  + f", {history[-1]['img_per_s']:.0f} img/s")
            config = model_config(args, vocab, model, val_metrics)
            save_checkpoint(eval_model, config, out / "last")
            if score > best:
                save_checkpoint(eval_model, config, out / "best")
            _atomic_save({"epoch": epoch, "args": _plain(asdict(args)), "model": model.state_dict(),
                          "loss": criterion.state_dict(), "ema": ema.module.state_dict() if ema is not None else None,
                          "optimizer": opt.state_dict(), "history": history, "best": max(best, score),
                          "bad_paths": sorted(bad_paths)}, out / STATE_FILE)
            print(f"saved {out / STATE_FILE} after epoch {epoch + 1}", flush=True)
        best = max(best, score)
        d.barrier()
        if d.agree(bool(args.time_limit) and time.time() - t_start > args.time_limit * 60) and epoch + 1 < args.epochs:
            if d.main:
                print(f"time limit of {args.time_limit} min reached after epoch {epoch + 1}; continue with --resume")
            return out / "best"
    return _finish(args, d, feed, vocab, model, val_rows, y_val, history, bad_paths, t_start)


def _finish(args: FitArgs, d: Dist, feed: Feed, vocab: Vocab, model: nn.Module, val_rows: list[Row],
            y_val: dict, history: list, bad_paths: set, t_start: float) -> Path:
    """Temperatures on the best epoch's val logits, the report, plots and card; push if asked."""
    from .evaluate import write_report
    from .plots import learning_curves

    out, tasks = Path(args.out), list(vocab.labels)
    skipped = len(bad_paths)
    if skipped and d.main:
        print(f"skipped {skipped} unreadable image(s) (logged above)")
    best_model, _ = load_checkpoint(out / "best")
    best_model.to(next(model.parameters()).device).to(memory_format=torch.channels_last)
    logits, ok_val = predict_logits(feed, best_model, len(val_rows), tasks, d)
    if not d.main:
        return out / "best"
    yv = _masked(y_val, ok_val)
    temps = {t: fit_temperature(logits[t], torch.from_numpy(yv[t])) for t in tasks} if args.calibrate else {}
    probs = {t: torch.softmax(logits[t] / temps.get(t, 1.0), -1).numpy() for t in tasks}
    (out / "history.json").write_text(json.dumps({"args": asdict(args), "history": history}, indent=1))
    learning_curves(history, out / "learning_curves.png")
    metrics, report_files = write_report(out, probs, yv, vocab.labels, vocab.unknown,
                                         extra={"skipped_unreadable": skipped, "epochs": len(history)})
    config = model_config(args, vocab, model, all_metrics(probs, yv, vocab.labels, vocab.unknown), temps)
    card(config, describe(args), args.data, Path(args.out).name).save(out / "README.md")
    best_dir = save_checkpoint(best_model.cpu(), config, out / "best", half=args.half,
                               extra_files={p.name: p for p in report_files + [out / "learning_curves.png",
                                                                                out / "history.json", out / "README.md"]})
    print(f"best checkpoint: {best_dir} (val mean macro-F1 {mean_macro_f1(metrics):.4f}, "
          f"{(time.time() - t_start) / 60:.1f} min)")
    if args.push_to_hub:
        from .push import push

        print(f"pushed to hf-hub:{args.push_to_hub}@{push(best_dir, args.push_to_hub)}")
    return best_dir


def _plain(value):
    """Dicts, lists and scalars only: what ``torch.load(weights_only=True)`` reads back."""
    return json.loads(json.dumps(value))


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


def _state_path(args: FitArgs, out: Path) -> Path | None:
    if not args.resume:
        return None
    path = out / STATE_FILE if args.resume.lower() == "true" else Path(args.resume)
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


def _all_bad(bad: set[str], d: Dist) -> set[str]:
    if d.world == 1:
        return bad
    parts: list = [None] * d.world
    torch.distributed.all_gather_object(parts, sorted(bad))
    return set().union(*parts)


def main(argv: list[str] | None = None) -> int:
    import sys

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    warnings.filterwarnings("ignore", message="y_pred contains classes not in y_true")  # early epochs, small val sets
    argv = sys.argv[1:] if argv is None else argv
    if argv in ([], ["-h"], ["--help"]):
        print("usage: python -m train fit --config train/configs/NAME.yaml [--key value ...]\n"
              "       torchrun --nproc_per_node=N -m train fit --config ...   (DDP, see README)\n\nkeys (defaults):")
        for f in fields(FitArgs):
            print(f"  --{f.name} {getattr(FitArgs(), f.name)!r}")
        return 0 if argv else 2
    try:
        best = run(parse_args(argv))
        if os.environ.get("RANK", "0") == "0":
            print(best)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except FloatingPointError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
