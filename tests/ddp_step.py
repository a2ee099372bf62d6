"""Run by ``tests/test_ddp.py`` under ``torchrun``: one training step of ``train.loss.Objective`` in
DistributedDataParallel, each rank on its half of the batch in ``DIR/batch.pt``. Rank 0 writes the
rank-averaged loss and the synchronised gradients to ``DIR/ddp.pt``."""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel

import artattr
from artattr.cli import exit_now
from train import dist
from train.args import make_args
from train.data import Vocab
from train.loss import Objective, TaskLoss

SETTINGS = dict(architecture="onelayer_cnn", model_args={"resize": 32, "neurons": 8}, pretrained=False,
                dropout=0.0, embed_dim=16, label_smoothing=0.1)


def build(labels: dict, targets: dict) -> tuple[Objective, torch.nn.Module]:
    """The same model and loss on every process (seeded), as ``train.fit`` builds them."""
    args = make_args(SETTINGS)
    torch.manual_seed(0)
    model = artattr.create_model(args.architecture, tasks=labels, embed_dim=args.embed_dim, dropout=args.dropout,
                                 arcface_task="style", **args.model_args)
    criterion = TaskLoss(args, Vocab(labels, {"artist": "other"}), targets)
    return Objective(model, criterion, model), model


def main(folder: Path) -> None:
    d, _ = dist.setup("cpu")
    batch = torch.load(folder / "batch.pt", weights_only=True)
    objective, _ = build(batch["labels"], batch["y"])
    half = len(batch["x"]) // d.world
    rows = slice(d.rank * half, (d.rank + 1) * half)
    ddp = DistributedDataParallel(objective, find_unused_parameters=True)
    loss, _, _ = ddp(batch["x"][rows], {t: y[rows] for t, y in batch["y"].items()})
    loss.backward()
    mean_loss = d.sum_(loss.detach().clone()) / d.world
    if d.main:
        grads = {n: p.grad for n, p in objective.named_parameters() if p.grad is not None}
        torch.save({"loss": mean_loss, "grads": grads}, folder / "ddp.pt")
    dist.teardown()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
    exit_now(0)
