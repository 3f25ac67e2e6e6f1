"""Train the process reward model on the policy's own sampled solutions, Math-Shepherd style.

Data: the policy (read back from its GGUF, so the PRM is trained against the shipped file) samples
solutions at temperature 0.8 (and some at 1.0) to fresh training problems; each step is labelled by the
exact checker with the rule "good when it and every step before it are right". The PRM input is the
template, then each step's text + "ки" (the compact layout of formats.py: the tag stands where the step's
newline was); the loss sits on the token after each tag, "+" or "-".
A share of batches are correct solutions on which the step tokens are learned as well (`prm_example`
with learn_steps), which teaches the PRM the arithmetic it has to check.

Every `eval_every` steps the PRM's step-level AUROC is measured on validation samples; the best is kept.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import random
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from ..arith import answer_step, apply_op, check_steps, iter_problems, parse_problem, solution_steps, split_steps
from .common import (
    Clock,
    excluded_problems,
    lr_at,
    make_optimizer,
    maybe_compile,
    save_checkpoint,
    seed_everything,
    train_step,
    validation_problems,
)
from .data import IGNORE, collate, digit_flags, prm_example, tag_digit_targets
from .evaluate import solve
from .formats import BAD_ID, GOOD_ID, TAG_ID, prm_tokens
from .model import Llama


@dataclass
class PRMConfig:
    seed: int = 0
    init: str = "auto"  # warm start: a policy .pt/.gguf; "auto": the selected checkpoint named in
    #                     OUT/policy-train.json, else the policy GGUF;
    #                     "scratch": random weights of the policy's shape
    extra_layers: int = 2  # blocks appended to the warm-started model (identity at first)
    steps: int = 2000
    batch: int = 48
    lr: float = 1e-3
    warmup: int = 100
    min_lr_frac: float = 0.05
    weight_decay: float = 0.1
    sample_problems: int = 4000  # fresh problems the policy solves for training data
    samples_per_problem: int = 4  # of which one in four at temperature 1.0, the rest at 0.8
    correct_frac: float = 0.3  # share of batches that are correct solutions with the steps learned
    learn_results: bool = True  # on policy samples also learn each step's true result digits
    tag_weight: float = 1.0  # loss weight of the "+"/"-" targets at the step tags (the rest weigh 1)
    corrupt_frac: float = 0.0  # share of batches that are correct solutions with one step corrupted
    freeze_layers: int = 0  # keep the embedding and the first N blocks as initialised (a grown model's old
    #                         blocks): the new blocks on top learn to compare what the frozen ones predict
    #                         with what the solution says
    learn_tokens: bool = True  # False: only the tags are learned (no step tokens, no result digits)
    tag_digits: float = 0.0  # > 0: also learn, at each tag, the last two digits of the value the step
    #                          should show (`tag_digit_targets`), with this weight; the score reads only
    #                          P(+)/(P(+)+P(-)) there, so the digits cost it nothing and give the tag the
    #                          true result to compare the written one with
    digit_flags: bool = False  # also learn `digit_flags` at the result digits
    flag_weight: float = 3.0  # loss weight of the digit flags
    check_drill: int = 0  # before the mixture, up to N steps that drill checking (`drill_batch`): one-step
    #                       solutions, a third right, a third off by 10, a third off by 1, with the digit
    #                       flags, on their own optimizer at a constant `drill_lr` (after 20 warmup steps);
    #                       it stops once `drill_check` reaches `drill_target` (checked every 100 steps)
    drill_lr: float = 7e-4
    drill_target: float = 0.99
    stop_after: int = 0  # > 0: stop the mixture after this many steps of its `steps`-step schedule (a
    #                      later checkpoint of a longer run is never needed, so it is never trained)
    val_per_ops: int = 40  # validation problems per operator count (x4 samples) for AUROC
    eval_every: int = 250
    compile: bool = True


def grow(base: Llama, extra_layers: int) -> Llama:
    """A copy of `base` with `extra_layers` more blocks on top that start as the identity."""
    import dataclasses

    shape = dataclasses.replace(base.shape, n_layer=base.shape.n_layer + extra_layers)
    model = Llama(shape)
    with torch.no_grad():
        model.tok_embd.weight.copy_(base.tok_embd.weight)
        model.norm.weight.copy_(base.norm.weight)
        model.output.weight.copy_(base.output.weight)
        for i, b in enumerate(base.blocks):
            model.blocks[i].load_state_dict(b.state_dict())
        for b in model.blocks[base.shape.n_layer :]:
            b.wo.weight.zero_()
            b.w_down.weight.zero_()
    return model


def auroc(scores: list[float], labels: list[bool]) -> float:
    """Area under the ROC curve (ties count half): P(score of a good step > score of a bad one)."""
    pairs = sorted(zip(scores, labels))
    n_pos = sum(labels)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum, i = 0.0, 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + j + 1) / 2  # ranks are 1-based
        rank_sum += avg_rank * sum(1 for k in range(i, j) if pairs[k][1])
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


@torch.no_grad()
def prm_step_scores(model, problems: list[str], solutions: list[list[str]], batch_size: int = 128) -> list[list[float]]:
    """P(+)/(P(+)+P(-)) at each step tag, per solution (problems[i] pairs with solutions[i])."""
    model.eval()
    items = [prm_tokens(p, s) for p, s in zip(problems, solutions)]
    order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
    out: list[list[float]] = [[] for _ in items]
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        ids, _ = collate([(items[i][0], items[i][0]) for i in rows])
        logits = model(ids)
        pm = logits[:, :, [GOOD_ID, BAD_ID]].float().log_softmax(-1)[:, :, 0].exp()  # (B, T)
        for b, i in enumerate(rows):
            out[i] = pm[b, items[i][1]].tolist()
    return out


def policy_samples(policy, problems: list[str], n: int, seed: int) -> list[tuple[str, list[str]]]:
    """`n` sampled solutions per problem as (problem, steps); one in four at T=1.0, the rest at 0.8."""
    n_hot = n // 4
    cool = solve(policy, problems, 0.8, n - n_hot, seed)
    hot = solve(policy, problems, 1.0, n_hot, seed + 1) if n_hot else [[] for _ in problems]
    out = []
    for p, a, b in zip(problems, cool, hot):
        for t in a + b:
            steps = split_steps(t)
            if steps:
                out.append((p, steps[:12]))
    return out


def step_labels(samples: list[tuple[str, list[str]]]) -> list[list[bool]]:
    return [check_steps(p, s, cumulative=True) for p, s in samples]


def evaluate_prm(model, samples: list[tuple[str, list[str]]]) -> dict:
    scores = prm_step_scores(model, [p for p, _ in samples], [s for _, s in samples])
    labels = step_labels(samples)
    flat_s = [x for row in scores for x in row]
    flat_l = [x for row in labels for x in row]
    return {"step_auroc": auroc(flat_s, flat_l), "steps": len(flat_l), "bad_steps": flat_l.count(False)}


def corrupted_steps(problem: str, rng: random.Random) -> list[str]:
    """The correct steps with one mistake of the kinds the policy makes (a result off by 10 most often, off
    by 1 to 9, a wrong operand, or a wrong answer line), the steps after it carrying the wrong total on
    correctly, as the policy's own wrong solutions do. Teaches the PRM to compare what a step says with
    what it computes, on cheap, unlimited examples."""
    first, rest = parse_problem(problem)
    j = rng.randrange(len(rest) + 1)
    steps, total = [], first
    for i, (op, n) in enumerate(rest):
        kind = rng.random() if i == j else None
        shown = max(1, min(99, n + rng.choice((-10, -2, -1, 1, 2, 10)))) if kind is not None and kind < 0.15 else n
        value = apply_op(total, op, shown)
        if kind is not None and 0.15 <= kind < 0.65:
            value += rng.choice((-10, 10))
        elif kind is not None and kind >= 0.65:
            value += rng.choice((-1, 1)) * rng.randint(1, 9)
        steps.append(f"{total}{op}{shown}={value}")
        total = value
    steps.append(answer_step(total + (rng.choice((-10, -1, 1, 10)) if j == len(rest) else 0)))
    return steps


def with_extra_targets(batch: tuple, pairs: list[tuple[str, list[str]]], tags: bool = True, flags: bool = False):
    """(ids, targets) plus extra targets (B, T, 3): each tag's `tag_digit_targets` (slots 0-1, with
    `tags`) and the result digits' `digit_flags` (slot 2, with `flags`)."""
    ids, targets = batch[:2]
    extra = torch.full((*ids.shape, 3), IGNORE, dtype=torch.long)
    for b, (p, steps) in enumerate(pairs):
        if tags:
            at = (ids[b] == TAG_ID).nonzero().squeeze(1).tolist()
            for pos, digits in zip(at, tag_digit_targets(p, steps)):
                for a, tok in enumerate(digits):
                    extra[b, pos, a] = tok
        if flags:
            for pos, tok in digit_flags(p, steps):
                extra[b, pos, 2] = tok
    return ids, targets, extra


DRILL_WARMUP, DRILL_CHECK_EVERY, DRILL_PROBES = 20, 100, 200


def drill_steps(problem: str, rng: random.Random) -> list[str]:
    """The problem's first step alone: right a third of the time, else its result off by 10 or by 1, the
    policy's commonest slips."""
    first, rest = parse_problem(problem)
    op, n = rest[0]
    return [f"{first}{op}{n}={apply_op(first, op, n) + rng.choice((0, 0, 10, -10, 1, -1))}"]


@functools.cache
def _drill_probes() -> tuple[tuple[str, ...], tuple[tuple[str], ...], tuple[str, ...], frozenset[str]]:
    """The fixed one-step probes of `drill_check`: problems, one-step solutions (each problem right, off by
    10 and off by 1), their kinds ("ok", "off10", "off1"), and the probed first steps' left sides."""
    rng, off = random.Random(5), random.Random(6)
    bases = []
    for _ in range(DRILL_PROBES):
        a, b, op = rng.randint(10, 99), rng.randint(10, 99), rng.choice("+-")
        bases.append((f"{a}{op}{b}+{rng.randint(1, 99)}", f"{a}{op}{b}", apply_op(a, op, b)))
    problems, solutions, kinds = [], [], []
    for p, lhs, value in bases:
        for d, kind in ((0, "ok"), (off.choice((-10, 10)), "off10"), (off.choice((-1, 1)), "off1")):
            problems.append(p)
            solutions.append((f"{lhs}={value + d}",))
            kinds.append(kind)
    return tuple(problems), tuple(solutions), tuple(kinds), frozenset(lhs for _, lhs, _ in bases)


def drill_problem(rng: random.Random, skip: set[str]) -> str:
    """A two-operator problem whose first two operands have two digits (the step the drill shows carries
    across a ten, or borrows, most of the time); never one in `skip` (held-out and validation problems),
    and never one whose first step is one of `drill_check`'s probes."""
    probed = _drill_probes()[3]
    while True:
        a, b, c = rng.randint(10, 99), rng.randint(10, 99), rng.randint(1, 99)
        lhs = f"{a}{rng.choice('+-')}{b}"
        p = f"{lhs}{rng.choice('+-')}{c}"
        if p not in skip and lhs not in probed:
            return p


def drill_batch(size: int, rng: random.Random, skip: set[str]):
    """(ids, targets, extra) of `size` drills: the tag learns "+" or "-", the result digits are learned up
    to the first wrong one, and each written digit learns its `digit_flags`. Balanced and one step long,
    these teach checking (`drill_check` from about 0.5 to 1.0), which the mixture of policy samples
    alone does not."""
    pairs = [(p, drill_steps(p, rng)) for p in (drill_problem(rng, skip) for _ in range(size))]
    return with_extra_targets(collate([prm_example(p, s, learn_results=True) for p, s in pairs]), pairs, False, True)


def drill_check(model) -> dict[str, float]:
    """The tag's AUROC on fixed one-step probes (each right, off by 10 and off by 1; no drill shows their
    first steps), separately for off-by-10 and off-by-1: whether the PRM checks a single step. Learning
    this is a sudden transition after a plateau of hundreds of steps whose length varies from run to run,
    which is why the drill runs until this says it happened rather than for a fixed count."""
    problems, solutions, kinds, _ = _drill_probes()
    scores = [s[0] for s in prm_step_scores(model, list(problems), [list(x) for x in solutions])]
    out = {}
    for kind in ("off10", "off1"):
        idx = [i for i, k in enumerate(kinds) if k in ("ok", kind)]
        out[kind] = round(auroc([scores[i] for i in idx], [kinds[i] == "ok" for i in idx]), 4)
    return out


def _batches(cfg: PRMConfig, samples, stream, rng: random.Random):
    """Endless mixture batches: policy samples (labels at tags) or correct solutions (steps learned too)
    or corrupted ones; with `tag_digits` or `digit_flags`, each batch also carries those targets."""
    learn = cfg.learn_results and cfg.learn_tokens  # result digits on policy samples and corrupted solutions
    while True:
        if rng.random() < cfg.correct_frac:
            pairs = [(p, solution_steps(p)) for p in (next(stream) for _ in range(cfg.batch))]
            batch = collate([prm_example(p, s, learn_steps=cfg.learn_tokens) for p, s in pairs])
        elif rng.random() < cfg.corrupt_frac / max(1e-9, 1 - cfg.correct_frac):
            pairs = [(p, corrupted_steps(p, rng)) for p in (next(stream) for _ in range(cfg.batch))]
            batch = collate([prm_example(p, s, learn_results=learn) for p, s in pairs])
        else:
            pairs = [samples[rng.randrange(len(samples))] for _ in range(cfg.batch)]
            batch = collate([prm_example(p, s, learn_results=learn) for p, s in pairs])
        if cfg.tag_digits > 0 or cfg.digit_flags:
            batch = with_extra_targets(batch, pairs, tags=cfg.tag_digits > 0, flags=cfg.digit_flags)
        yield batch


def train_prm(cfg: PRMConfig, policy: Llama, init: Llama | None, out: Path, log=print) -> dict:
    """Train a PRM on samples of `policy`, starting from `init` grown by `cfg.extra_layers` (None: from
    scratch, the policy's shape); keeps the checkpoint with the best validation AUROC."""
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg.seed)
    clock = Clock()
    val = validation_problems(cfg.val_per_ops)
    exclude = excluded_problems(val)
    stream = iter_problems(seed=cfg.seed * 1000 + 11, exclude=exclude)
    problems = [next(stream) for _ in range(cfg.sample_problems)]
    log(f"prm: sampling {cfg.samples_per_problem} policy solutions for {len(problems)} problems ...")
    samples = policy_samples(policy, problems, cfg.samples_per_problem, seed=cfg.seed * 1000 + 12)
    labels = step_labels(samples)
    n_bad = sum(row.count(False) for row in labels)
    n_all = sum(len(row) for row in labels)
    log(f"prm: {len(samples)} samples, {n_all} steps, {n_bad} bad ({100 * n_bad / n_all:.1f}%) [{clock():.0f}s]")
    val_samples = policy_samples(policy, val, 4, seed=cfg.seed * 1000 + 13)
    if init is None:
        model = Llama(dataclasses.replace(policy.shape, n_layer=policy.shape.n_layer + cfg.extra_layers))
    else:
        model = grow(init, cfg.extra_layers)
    if cfg.freeze_layers:
        for p in [model.tok_embd.weight, *(q for b in model.blocks[: cfg.freeze_layers] for q in b.parameters())]:
            p.requires_grad_(False)
    fwd = maybe_compile(model, cfg.compile)
    rng = random.Random(cfg.seed)
    n_steps = min(cfg.steps, cfg.stop_after) if cfg.stop_after > 0 else cfg.steps
    log(f"prm: {model.n_params():,} parameters, {cfg.check_drill} drill + {n_steps} steps")
    log(f"prm: config {json.dumps(asdict(cfg))}")
    history, tokens = [], 0

    def evaluate(tag: str, step: int) -> None:
        ev = evaluate_prm(model, val_samples)
        ck = out / f"prm-{tag}{step}.pt"
        save_checkpoint(ck, model, {"config": asdict(cfg), "phase": tag, "step": step, "val": ev})
        history.append({"phase": tag, "step": step, **ev, "path": str(ck)})
        log(f"  eval {tag} {step}: step AUROC {ev['step_auroc']:.4f} on {ev['steps']} steps ({ev['bad_steps']} bad)")

    if cfg.check_drill:
        opt = make_optimizer(model, cfg.drill_lr, cfg.weight_decay)
        drill_weights = (0.0, 0.0, cfg.flag_weight)
        for step in range(cfg.check_drill):
            ids, targets, extra = drill_batch(cfg.batch, rng, exclude)
            tokens += ids.numel()
            lr = lr_at(step, cfg.check_drill, cfg.drill_lr, DRILL_WARMUP, 1.0)  # constant after the warmup
            loss = train_step(fwd, model, opt, ids, targets, lr, None, extra=extra, extra_weights=drill_weights)
            if (step + 1) % DRILL_CHECK_EVERY == 0 or step == cfg.check_drill - 1:
                check = drill_check(model)
                log(f"  drill {step + 1} loss {loss:.4f} one-step AUROC {check} [{clock():.0f}s]")
                if min(check.values()) >= cfg.drill_target:
                    break
        drill_report = {"steps": step + 1, **check}
        evaluate("drill", step + 1)
    opt = make_optimizer(model, cfg.lr, cfg.weight_decay)
    batches = _batches(cfg, samples, stream, rng)
    extra_weights = (cfg.tag_digits, cfg.tag_digits, cfg.flag_weight if cfg.digit_flags else 0.0)  # slots as batched
    for step in range(n_steps):
        ids, targets, *extra = next(batches)
        tokens += ids.numel()
        lr = lr_at(step, cfg.steps, cfg.lr, cfg.warmup, cfg.min_lr_frac)
        weights = None
        if cfg.tag_weight != 1.0:
            weights = torch.where(ids == TAG_ID, cfg.tag_weight, 1.0)
        loss = train_step(
            fwd, model, opt, ids, targets, lr, weights, extra=extra[0] if extra else None, extra_weights=extra_weights
        )
        if step % 50 == 0:
            log(f"  step {step} loss {loss:.4f} lr {lr:.2e} {tokens / max(clock(), 1e-9):.0f} tok/s [{clock():.0f}s]")
        if (step + 1) % cfg.eval_every == 0 or step == n_steps - 1:
            evaluate("step", step + 1)
    best = max(history, key=lambda h: (h["step_auroc"] if h["step_auroc"] == h["step_auroc"] else -1, h["step"]))
    log(f"prm: selected {best['phase']} {best['step']} (AUROC {best['step_auroc']:.4f})")
    log(f"prm: trained in {clock():.0f}s wall, {clock.cpu():.0f}s CPU, {tokens:,} tokens")
    report = {"selected": best, "history": history, "tokens": tokens}
    if cfg.check_drill:
        report["drill"] = drill_report
    report.update(train_seconds=clock(), cpu_seconds=clock.cpu())
    (out / "prm-train.json").write_text(json.dumps(report, indent=1))
    return report


__all__ = ["PRMConfig", "auroc", "evaluate_prm", "grow", "prm_step_scores", "train_prm", "policy_samples"]
