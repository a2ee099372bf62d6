"""The masked multi-task objective and the calibration fitted after training.

Every task's head sees only the rows that have its label (missing genre, artist not in the
vocabulary → -1, masked), so one table with partial labels trains all heads at once.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .data import MISSING, Vocab


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
    sum_t w_t * L_t. ArcFace terms on ``model.arcface`` are added with ``arcface_weight``. ``args`` is a
    :class:`train.args.FitArgs` (or anything with its loss fields)."""

    def __init__(self, args, vocab: Vocab, targets: dict[str, torch.Tensor]):
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


class Objective(nn.Module):
    """``net`` (what maps a batch to the model's outputs) and its loss as one module, so that under
    torchrun one ``DistributedDataParallel`` wrapper syncs the gradients of every trained parameter:
    backbone, heads, ArcFace heads and the learned task weights alike."""

    def __init__(self, net: nn.Module, criterion: TaskLoss, model: nn.Module):
        super().__init__()
        self.net, self.criterion, self.model = net, criterion, model

    def forward(self, x: torch.Tensor, y: dict[str, torch.Tensor]):
        out = self.net(x)
        loss, plain = self.criterion(out, y, self.model)
        return loss, plain, out
