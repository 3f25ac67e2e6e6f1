"""Reward heads applied to the backbone's hidden states: the value-head and classifier-head PRM formats.

  value-head       Skywork-o1-Open-PRM: a step's score is sigmoid(w . h + b) at its step token
  classifier-head  Qwen2.5-Math-PRM (Linear(h, h), ReLU, Linear(h, 2)) or a token classifier (Linear(h, 2)):
                   softmax over the two logits at the step tag, the score is the second (the "good" class)

The backbone runs in llama.cpp (a GGUF from `ttc prm import`), which returns the final hidden state of each
step tag in the decode that evaluates it; the head (head.npz, float32, checked against the GGUF by the
fingerprint both carry) is applied here with numpy. As in the Math-Shepherd format, every solution of a
problem shares the PRM's prefix, and in step-wise search each branch keeps its PRM cache so only a new
step's tokens are evaluated.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..engine.base import Engine, Usage
from ..errors import UsageError
from ..presets import PRMConfig
from ..prompts import fill
from .aggregate import get_aggregation
from .reward import RewardModel, StepScorer, TagScorer, single_token

HEAD_FORMATS = ("value-head", "classifier-head")
FINGERPRINT_KEY = "ttc.prm.fingerprint"


class Head:
    """Layers (w (out, in), b (out,)) with ReLU between; the output turned into one score per row."""

    def __init__(self, kind: str, layers: list[tuple[np.ndarray, np.ndarray]], fingerprint: str):
        self.kind, self.layers, self.fingerprint = kind, layers, fingerprint
        self.n_in = layers[0][0].shape[1]

    def __call__(self, h: np.ndarray) -> np.ndarray:
        """Scores in [0, 1] for hidden states h [n, n_in]: [n]."""
        x = np.asarray(h, dtype=np.float32)
        for i, (w, b) in enumerate(self.layers):
            x = x @ w.T + b
            if i < len(self.layers) - 1:
                x = np.maximum(x, 0.0)
        x = x.astype(np.float64)
        if self.kind == "value-head":
            return 1.0 / (1.0 + np.exp(-np.clip(x[:, 0], -700, 700)))
        return 1.0 / (1.0 + np.exp(np.clip(x[:, 0] - x[:, 1], -700, 700)))  # softmax(x)[:, 1]


def load_head(path: str | Path, kind: str, source: str) -> Head:
    """Read head.npz, checking that it is a head of `kind` with well-formed layers."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UsageError(f"{source}: prm.head file not found: {path} (make it with: ttc prm import)")
    try:
        data = np.load(p, allow_pickle=False)
        file_kind, fingerprint = str(data["kind"]), str(data["fingerprint"])
        layers = []
        while f"w{len(layers)}" in data:
            i = len(layers)
            layers.append((data[f"w{i}"].astype(np.float32), data[f"b{i}"].astype(np.float32)))
    except Exception as e:
        raise UsageError(f"{path}: not a head file from ttc prm import ({type(e).__name__}: {e})") from None
    if file_kind != kind:
        raise UsageError(f"{path}: a {file_kind} head, but the preset's prm.format is {kind}")
    out = 1 if kind == "value-head" else 2
    if not layers or layers[-1][0].shape[0] != out:
        raise UsageError(f"{path}: the head's last layer must have {out} output(s)")
    for i, (w, b) in enumerate(layers):
        if w.ndim != 2 or b.shape != (w.shape[0],) or (i and w.shape[1] != layers[i - 1][0].shape[0]):
            raise UsageError(f"{path}: head layer {i} has weight {w.shape} and bias {b.shape}, which do not chain")
    return Head(kind, layers, fingerprint)


class TagLayout:
    """How a head PRM reads a solution: the template filled with the problem, then each step's text tokenized
    alone, the step tag token and the separator. Shared by the in-process HeadPRM and the served one
    (ttc.prm.pooled), so both read the same tokens."""

    def __init__(self, engine: Engine, cfg: PRMConfig, delimiter: str, source: str):
        self.engine, self.cfg, self.delimiter = engine, cfg, delimiter
        self.aggregation = cfg.aggregation
        self.usage = Usage()
        get_aggregation(cfg.aggregation)
        if not cfg.step_tag:
            raise UsageError(f"{source}: prm.step_tag is empty")
        self.tag_id = single_token(engine, cfg.step_tag, "step tag", source)
        self.separator = delimiter if cfg.step_separator is None else cfg.step_separator

    def prefix(self, problem: str) -> str:
        return fill(self.cfg.template, problem=problem)

    def fixed_prefix(self) -> str:
        """The template's text before the problem (a chat template's system prompt and header: the same for
        every problem), which the engine keeps cached from one problem to the next."""
        head, sep, _ = self.cfg.template.partition("{problem}")
        return head if sep else ""

    def piece(self, step: str) -> tuple[list[int], int]:
        """Tokens of one step as the PRM reads it (text, tag, separator) and the index of the tag that scores it.

        The text (the step without its delimiter, newlines at either end and trailing spaces) is tokenized
        alone, as both references do. Newlines inside it follow each format's reference:
          a whitespace tag (Skywork's "\\n", H4's "\\n\\n")  Skywork's prepare_input splits the response on its
              step token, encodes each piece alone and puts the step token after every piece, empty ones too;
              so here each tag inside the text is the tag token between separately encoded pieces, and the
              step's score is read at its last tag (the one that sees the whole step)
          any other tag (Qwen's "<extra_0>")  Qwen2.5-Math-PRM's model card joins the steps with the tag and
              tokenizes the chat text whole: newlines stay text; a tag written inside a step is removed
              (no planted tags)."""
        tag, sep = self.cfg.step_tag, self.delimiter
        text = step[: -len(sep)] if sep and step.endswith(sep) else step
        text = text.strip("\n").rstrip()
        parts = text.split(tag) if tag.isspace() else [text.replace(tag, "")]
        ids: list[int] = []
        for part in parts:
            ids += (self.engine.tokenize(part, add_bos=False, special=False) if part else []) + [self.tag_id]
        at = len(ids) - 1
        if self.separator:
            ids += self.engine.tokenize(self.separator, add_bos=False, special=False)
        return ids, at

    def tokens(self, steps: Sequence[str]) -> tuple[list[int], list[int]]:
        """A solution's tokens after the prefix, up to its last tag, and the tag positions."""
        ids, pos = [], []
        for step in steps:
            piece, at = self.piece(step)
            pos.append(len(ids) + at)
            ids.extend(piece)
        if pos:
            del ids[pos[-1] + 1 :]
        return ids, pos


class HeadPRM(TagLayout, RewardModel):
    """A PRM whose scores come from a head on the backbone's hidden states at each step tag."""

    def __init__(
        self, engine: Engine, cfg: PRMConfig, delimiter: str, base_dir: Path | None = None, source: str = "the preset"
    ):
        if cfg.head is None:
            raise UsageError(f"{source}: prm.format {cfg.format} needs prm.head (the head file of ttc prm import)")
        head_path = Path(cfg.head).expanduser()
        if not head_path.is_absolute() and not head_path.exists() and base_dir is not None:
            head_path = base_dir / head_path
        self.head = load_head(head_path, cfg.format, source)
        in_gguf = engine.info.metadata.get(FINGERPRINT_KEY)
        if in_gguf != self.head.fingerprint or (cfg.fingerprint and cfg.fingerprint != self.head.fingerprint):
            raise UsageError(
                f"{source}: the head {head_path} (fingerprint {self.head.fingerprint}) does not belong to "
                f"{engine.info.name} (fingerprint {in_gguf}"
                + (f", preset says {cfg.fingerprint}" if cfg.fingerprint else "")
                + "); import both with one ttc prm import"
            )
        meta = engine.info.metadata
        n_embd = int(meta.get(meta.get("general.architecture", "") + ".embedding_length", 0))
        if n_embd and n_embd != self.head.n_in:
            raise UsageError(f"{source}: the head reads {self.head.n_in} features, the backbone has {n_embd}")
        TagLayout.__init__(self, engine, cfg, delimiter, source)

    def score(self, problem: str, solutions: Sequence[Sequence[str]]) -> list[list[float]]:
        built = [self.tokens(steps) for steps in solutions]
        out: list[list[float]] = [[] for _ in solutions]
        todo = [i for i, (ids, _) in enumerate(built) if ids]
        if todo:
            with self.charged():
                suffixes, positions = [built[i][0] for i in todo], [built[i][1] for i in todo]
                hs = self.engine.hidden_at(self.prefix(problem), suffixes, positions, keep=self.fixed_prefix())
            for i, h in zip(todo, hs):
                out[i] = [float(s) for s in self.head(h)]
        return out

    def scorer(self, problem: str, max_live: int, max_tokens: int) -> StepScorer:
        with self.charged():
            bs = self.engine.hidden_branches(
                self.prefix(problem), max_live=max_live, max_tokens=max_tokens * 2 + 64, keep=self.fixed_prefix()
            )
        return _HeadScorer(self, bs)


class _HeadScorer(TagScorer):
    """Step-wise scoring on hidden-state branches: the head read at each step tag."""

    def read(self, branches, texts, positions) -> list[float]:
        hs = self.bs.feed_hidden(branches, texts, positions)
        return [float(self.prm.head(h)[0]) for h in hs]
