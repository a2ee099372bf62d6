"""The one checkpoint format shared by the app, the trainer and the Hub.

A checkpoint is a folder: ``config.json`` (what to build and how to feed it),
``model.safetensors`` (weights, no pickle so a downloaded model cannot run code) and a
model card ``README.md``. Other files (a gallery for the explorer, plots) may sit beside them.
"""

from __future__ import annotations

import ctypes
import os
import shutil
import tempfile
from pathlib import Path

import torch.nn as nn

from .config import (  # noqa: F401  (CheckpointError, ModelConfig and read_config are this module's API too)
    CARD_FILE, CONFIG_FILE, FORMAT_VERSION, WEIGHTS_FILE, CheckpointError, ModelConfig, read_config,
)
from .registry import create_model


def build_model(config: ModelConfig, pretrained: bool = False) -> nn.Module:
    try:
        return create_model(config.architecture, tasks=config.tasks, pretrained=pretrained, **config.model_args)
    except (TypeError, ValueError, RuntimeError, MemoryError) as err:  # model_args the architecture cannot take
        raise CheckpointError(f"{config.architecture} cannot be built from these settings ({err}).") from None


def model_card(config: ModelConfig, description: str = "") -> str:
    """A Hub-style model card: what it was trained on, how well it does, and where it fails."""
    lines = [
        "---", "library_name: artattr", "tags: [art, wikiart, image-classification, artattr]",
        "datasets: [huggan/wikiart]", "---", "",
        f"# ArtAttr model: `{config.architecture}`", "",
        description or "Multi-task attribution model (artist, style, genre) for photos of paintings.", "",
        "## Tasks", "",
    ]
    for task, labels in config.tasks.items():
        lines.append(f"- **{task}**: {len(labels)} classes" + (f" (`{config.unknown_label[task]}` = not a known class)" if task in config.unknown_label else "")
                     + ": " + ", ".join(config.name(task, label) for label in labels if label != config.unknown_label.get(task)))
    per_task = {t: m for t, m in config.metrics.items() if isinstance(m, dict) and t != "trust"}
    if per_task:
        keys = sorted({k for m in per_task.values() for k in m})
        lines += ["", "## Metrics", "", "| task | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
        for task, m in per_task.items():
            lines.append(f"| {task} | " + " | ".join(_fmt(m.get(k)) for k in keys) + " |")
    lines += _trust_card(config)
    lines += [
        "", "## Input", "",
        f"{config.input_size}×{config.input_size} px RGB ({config.resize}), normalised with mean {config.mean} and std {config.std}.",
        "", "## Intended use and limitations", "",
        "An aid for art historians, not an authentication: it ranks likely artists, movements and genres",
        "from the look of a photo. It knows only the classes listed in `config.json`, learned from WikiArt",
    ]
    lines += [
        "reproductions (mostly Western art, 15th–20th century); photos with frames, glare or heavy crops,",
        "forgeries and works by unlisted artists will still get confident-looking answers. Use the heatmaps",
        "and similar works to check why, and treat low top probabilities as 'uncertain'.",
    ] if not config.thresholds else [
        "reproductions (mostly Western art, 15th–20th century). It says when a picture does not look like a",
        "painting, when the artist is probably none it knows, and which answers it is not sure of, at the rates",
        "above: estimates, wrong for some pictures both ways. Close-up textures (gravel, grass) look like",
        "abstract paintings to it and are often not flagged; paintings by painters it never saw are called",
        "unknown far less often than those by the painters outside its list it was trained on (the held-out",
        "folds above); forgeries, copies and pastiches are not detected.",
        "Use the heatmaps and similar works to check why.",
    ]
    return "\n".join(lines) + "\n"


def _trust_card(config: ModelConfig) -> list[str]:
    """The card's section on the flags (``train/trust.py`` puts the numbers in ``metrics["trust"]``)."""
    trust = config.metrics.get("trust")
    if not config.thresholds or not isinstance(trust, dict):
        return []
    try:
        na, uv, uf = trust["not_artwork"], trust["unknown_artist_val"], trust["unknown_artist_folds"]
        lines = ["", "## Answers you can trust", "",
                 f"Measured on data the fitted parts never saw ({trust['how']}).", "",
                 "| task | ECE | answered (not flagged 'uncertain') | accuracy of answered |", "|---|---:|---:|---:|"]
        lines += [f"| {t} | {trust['ece'][t]:.3f} | {trust['coverage'][t]:.1%} | {trust['answered_accuracy'][t]:.1%} |"
                  for t in trust["ece"]]
        lines += ["", f"- **Not a painting**: {na['photos_flagged_unseen_classes']:.1%} of everyday photos of unseen class "
                  f"groups flagged; false alarms on {na['val_paintings_flagged']:.1%} of val paintings, "
                  f"{na['val_museum_photos_flagged']:.1%} of paintings rendered as museum photos (frame, wall, angle, glare; "
                  "synthetic, not real museum shots).",
                  f"- **Unknown artist**: {uv['unknown_flagged']:.1%} of val paintings by artists outside the known list "
                  f"flagged, {uv['known_flagged']:.1%} of known-artist ones (AUROC {uv['auroc']:.3f}); painters from "
                  f"held-out artist folds: {uf['unknown_flagged']:.1%} flagged, {uf['known_flagged']:.1%} of known "
                  f"(AUROC {uf['auroc']:.3f})."]
    except (KeyError, TypeError, ValueError):  # a hand-edited config.json: the card skips the section
        return []
    return lines


def _fmt(v) -> str:
    return "" if v is None else (f"{v:.3f}" if isinstance(v, float) else str(v))


def save_checkpoint(model: nn.Module, config: ModelConfig, out_dir: str | os.PathLike, description: str = "",
                    half: bool = False, extra_files: dict[str, str | os.PathLike] | None = None) -> Path:
    """Write a checkpoint atomically: readers see the old one or the new one, whatever kills the writer.

    ``out_dir`` is a symlink to a versioned sibling folder (``.NAME.XXXXXXXX``). The new version is
    written in full, then a symlink to it replaces the old one in one ``os.replace`` (a rename, atomic
    on POSIX), then the old version is deleted; what a killed writer left is deleted by the next save.
    A plain folder (an older checkpoint) is swapped for the symlink in one ``renameat2`` exchange.
    Files are written world-readable (0644), as a checkpoint is meant to be shared.
    """
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    current = os.readlink(out) if out.is_symlink() else None
    for stale in out.parent.glob(f".{out.name}.*"):
        if stale.name != current:
            _remove(stale)
    new = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        state = {k: (v.half() if half and v.is_floating_point() else v).detach().contiguous().cpu()
                 for k, v in model.state_dict().items()}
        save_file(state, str(new / WEIGHTS_FILE), metadata={"format": "pt", "artattr_format": str(FORMAT_VERSION)})
        (new / CONFIG_FILE).write_text(config.to_json() + "\n")
        (new / CARD_FILE).write_text(model_card(config, description))
        keep = dict(extra_files or {})
        if out.is_dir():  # files others put beside the weights (gallery, plots) survive a re-save
            for p in out.iterdir():
                if p.name not in (CONFIG_FILE, WEIGHTS_FILE, CARD_FILE) and p.name not in keep:
                    keep[p.name] = p
        for name, src in keep.items():
            (shutil.copytree if Path(src).is_dir() else shutil.copy2)(src, new / name)
        for p in [new, *new.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)
        link = new.with_name(new.name + ".link")
        link.symlink_to(new.name, target_is_directory=True)
        if out.is_symlink() or not out.exists():
            os.replace(link, out)
        else:
            _exchange(link, out)  # ``link`` now names the old folder
    except BaseException:
        _remove(new)
        raise
    replaced = out.parent / current if current else link  # the old version, or the old plain folder
    if replaced.name.startswith(f".{out.name}."):  # never a folder of someone else's that out pointed to
        _remove(replaced)
    return out


def _exchange(a: Path, b: Path) -> None:
    """Swap two paths atomically (Linux ``renameat2(RENAME_EXCHANGE)``): here a plain checkpoint folder
    and the symlink replacing it, so no moment exists without a checkpoint at ``b``."""
    libc = ctypes.CDLL(None, use_errno=True)
    at_fdcwd, rename_exchange = -100, 2
    if libc.renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"cannot swap {b} for a symlink: {os.strerror(err)}")


def _remove(path: Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def load_checkpoint(model_dir: str | os.PathLike) -> tuple[nn.Module, ModelConfig]:
    """Build the model a checkpoint folder describes and load its weights (as float32, eval mode).

    No pickle anywhere (safetensors + validated JSON), and a model whose weights or outputs are not
    finite numbers is refused here, so no caller ever shows NaN probabilities."""
    import torch
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    model_dir = Path(model_dir).resolve()  # one version throughout, even if a save switches it meanwhile
    config = read_config(model_dir)
    weights = model_dir / WEIGHTS_FILE
    if not weights.is_file():
        raise CheckpointError(f"{weights}: not found.")
    try:
        state = load_file(str(weights))
    except (SafetensorError, OSError, ValueError) as err:
        raise CheckpointError(f"{weights}: corrupt or truncated safetensors file ({err}).") from None
    try:
        model = build_model(config)
    except CheckpointError as err:
        raise CheckpointError(f"{model_dir / CONFIG_FILE}: {err}") from None
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{weights}: does not match architecture {config.architecture!r} with tasks "
            f"{ {t: len(v) for t, v in config.tasks.items()} } (missing {missing[:3]}, unexpected {unexpected[:3]})."
        )
    for key, tensor in state.items():
        if tensor.shape != expected[key].shape:
            raise CheckpointError(f"{weights}: tensor {key} has shape {tuple(tensor.shape)}, expected {tuple(expected[key].shape)}.")
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{weights}: tensor {key} contains NaN or infinite values.")
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    model.eval()
    with torch.inference_mode():  # weights can be finite and still overflow: try one grey image
        out = model(torch.zeros(1, 3, config.input_size, config.input_size))
    if not all(torch.isfinite(out[t]).all() for t in config.tasks):
        raise CheckpointError(f"{weights}: the model's outputs are not finite numbers (overflowing weights).")
    return model, config
