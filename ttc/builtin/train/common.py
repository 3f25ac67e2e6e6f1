"""Pieces both training loops share: seeding, the optimizer and schedule, one training step, checkpoints."""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict

import torch
import torch.nn.functional as F

from ..arith import generate_problems, heldout_problems
from ..gguf_llama import LlamaShape
from .data import IGNORE
from .model import Llama

VAL_SEED = 7_000_001  # validation problems for checkpoint selection (held out from training too)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    torch.manual_seed(seed)


def set_threads(n: int) -> None:
    torch.set_num_threads(n)


def validation_problems(per_ops: int, seed: int = VAL_SEED) -> list[str]:
    """`per_ops` problems for each operator count, disjoint from the shipped sample dataset."""
    held = heldout_problems()
    out = []
    for k in range(1, 9):
        out += generate_problems(per_ops, ops=k, seed=seed + k, exclude=held)
    return out


def excluded_problems(val: list[str]) -> set[str]:
    return heldout_problems() | set(val)


def lr_at(step: int, total: int, lr: float, warmup: int, min_frac: float) -> float:
    if step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_frac + (1 - min_frac) * 0.5 * (1 + math.cos(math.pi * t)))


def make_optimizer(model: Llama, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.dim() >= 2 and p.requires_grad]
    other = [p for p in model.parameters() if p.dim() < 2 and p.requires_grad]
    groups = [{"params": decay, "weight_decay": weight_decay}, {"params": other, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-8)


def maybe_compile(model: Llama, enabled: bool):
    """torch.compile makes small models several times faster on CPU; the eager model shares weights."""
    if not enabled:
        return model
    return torch.compile(model, dynamic=True)


def train_step(
    fwd,
    model: Llama,
    opt,
    ids,
    targets,
    lr: float,
    weights=None,
    negatives=None,
    ul_weight: float = 1.0,
    clip: float = 1.0,
    extra=None,
    extra_weights=(),
) -> float:
    """One AdamW step on the mean (optionally weighted) cross-entropy of the learned targets, plus
    `ul_weight` x the unlikelihood -log(1 - p(negative)) at positions with a negative target, plus
    the cross-entropy of `extra` (B, T, A), more tokens learned at the same positions, slot a weighted by
    `extra_weights[a]`."""
    model.train()
    for g in opt.param_groups:
        g["lr"] = lr
    logits = fwd(ids)
    flat = targets.reshape(-1)
    flat_logits = logits.reshape(-1, logits.shape[-1])
    ce = F.cross_entropy(flat_logits, flat, ignore_index=IGNORE, reduction="none")
    if weights is not None:
        ce = ce * weights.reshape(-1)
    total = ce.sum()
    if negatives is not None and ul_weight > 0:
        neg = negatives.reshape(-1)
        rows = (neg != IGNORE).nonzero().squeeze(1)
        if rows.numel():
            p_neg = flat_logits[rows].float().softmax(-1).gather(1, neg[rows, None]).squeeze(1)
            total = total + ul_weight * -torch.log1p(-p_neg.clamp(max=1 - 1e-6)).sum()
    if extra is not None:
        ex = extra.reshape(-1, extra.shape[-1])
        for a, w in enumerate(extra_weights):
            if w > 0:
                total = total + w * F.cross_entropy(flat_logits, ex[:, a], ignore_index=IGNORE, reduction="sum")
    loss = total / (flat != IGNORE).sum().clamp(min=1)
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
    opt.step()
    return loss.item()


def save_checkpoint(path, model: Llama, extra: dict) -> None:
    torch.save({"shape": asdict(model.shape), "state": model.state_dict(), **extra}, path)


def load_checkpoint(path) -> tuple[Llama, dict]:
    ck = torch.load(path, map_location="cpu", weights_only=False)
    model = Llama(LlamaShape(**ck["shape"]))
    model.load_state_dict(ck["state"])
    return model, ck


class Clock:
    """Wall seconds since creation when called; `cpu()` gives this process's CPU seconds (all threads)."""

    def __init__(self, wall: float = 0.0, cpu: float = 0.0):  # seconds already spent (a resumed run)
        self.t0, self.c0 = time.time() - wall, time.process_time() - cpu

    def __call__(self) -> float:
        return time.time() - self.t0

    def cpu(self) -> float:
        return time.process_time() - self.c0
