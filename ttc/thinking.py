"""Thinking models: what a model's thinking block looks like, and the per-trace control ttc puts on it.

Detection reads the chat template stored in the GGUF (the truth for a given file), or the preset's
`thinking:` section, which overrides it:

    think tags  (Qwen3, DeepSeek-R1 distills, GLM, Kimi, Nemotron) <think> ... </think>, then the answer.
                Whether the generation prompt already opens the block (R1 distills end it with "<think>\\n")
                and whether a template variable turns thinking off (Qwen3's enable_thinking, which makes the
                template insert an empty block) are found by rendering the template, not by reading its text.
    channels    (gpt-oss) the analysis channel "<|channel|>analysis<|message|>" ... "<|end|>", then
                "<|start|>assistant<|channel|>final<|message|>" and the answer.

Markers must be tokens of the vocabulary (found by tokenizing, never by matching detokenized text). From
the markers and the user's flags (`ThinkOptions`: --think-budget, --think-min, --think-message,
--thinking on|off) `setup` makes a `ThinkSetup`: the engine's `ThinkControl` (token ids to watch and force,
per sequence), the template variables and prompt suffix, and the checks on bad combinations.

Budget 0 means no thinking: where the template can turn thinking off it does (the form the model was trained
on), else the budget message and end marker are put into the prompt, so every trace shares them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from .engine.base import Engine, SamplingParams, ThinkControl
from .errors import UsageError
from .presets import Preset, ThinkingConfig
from .prompts import problem_prompt, render_chat

THINK_START, THINK_END = "<think>", "</think>"
CHANNEL_START = "<|channel|>analysis<|message|>"
CHANNEL_END = "<|end|><|start|>assistant<|channel|>final<|message|>"
SWITCH = "enable_thinking"
PROBE = [{"role": "user", "content": "1+1"}]  # the conversation templates are rendered with to learn their form


@dataclass(frozen=True)
class ThinkSpec:
    """How one model thinks."""

    start: str  # start marker text
    end: str  # end marker text
    opened: bool  # the generation prompt opens the block itself
    switch: str | None  # the template variable that turns thinking off; None: it cannot be turned off
    form: str  # "think tags", "channels" or "preset"
    source: str  # where it was learned: "chat template" or the preset's file


@dataclass
class ThinkOptions:
    """The thinking flags; None keeps the preset's (or detected) behaviour."""

    budget: int | None = None  # --think-budget: thinking tokens per trace
    min_tokens: int | None = None  # --think-min: end markers before this many are replaced by the continuation
    message: str | None = None  # --think-message: forced at the budget before the end marker
    mode: str | None = None  # --thinking on|off

    def given(self) -> bool:
        return any(v is not None for v in (self.budget, self.min_tokens, self.message, self.mode))


@dataclass(frozen=True)
class ThinkSetup:
    """The thinking block of every trace of one run."""

    spec: ThinkSpec
    enabled: bool  # the model thinks in this run (False: thinking switched off, or budget 0)
    control: ThinkControl
    variables: dict  # chat-template variables for the prompt
    suffix: str  # appended to the rendered prompt (budget 0 without a switch: the forced cut)
    budget: int | None
    min_tokens: int

    def prompt(self, preset: Preset, engine: Engine, problem: str) -> str:
        return problem_prompt(preset, engine, problem, **self.variables) + self.suffix

    def describe(self) -> dict:
        return {
            "start": self.spec.start, "end": self.spec.end, "form": self.spec.form, "enabled": self.enabled,
            "budget": self.budget, "min_tokens": self.min_tokens,
        }  # fmt: skip


def _render(engine: Engine, **variables) -> str:
    return render_chat(engine, PROBE, add_generation_prompt=True, **variables)


def _opens(text: str, start: str, end: str) -> bool:
    """Whether `text` ends inside an open block."""
    return text.rfind(start) > text.rfind(end) if start in text else False


def detect(engine: Engine, preset: Preset) -> ThinkSpec | None:
    """The model's thinking block: from the preset's thinking section when it names markers, else from the
    chat template (only for the chat prompt format, the only one that renders it); None: it does not think."""
    cfg = preset.thinking
    where = preset.source or preset.name
    chat = preset.prompt.format == "chat" and bool(engine.info.chat_template)
    if cfg is not None and (cfg.start is not None or cfg.end is not None):
        if not cfg.start or not cfg.end:
            raise UsageError(f"{where}: thinking.start and thinking.end go together (both markers, e.g. <think>)")
        opened = cfg.opened
        if opened is None:
            probe = _render(engine) if chat else problem_prompt(preset, engine, "1+1")
            opened = _opens(probe, cfg.start, cfg.end)
        return ThinkSpec(cfg.start, cfg.end, opened, cfg.switch or None, "preset", where)
    if not chat:
        return None
    template = engine.info.chat_template or ""
    if "<|channel|>" in template and "analysis" in template:
        return ThinkSpec(CHANNEL_START, CHANNEL_END, False, None, "channels", "chat template")
    if THINK_START not in template:
        return None
    on = _render(engine)
    if THINK_END not in template and not _opens(on, THINK_START, THINK_END):
        return None  # "<think>" in some other role: no block the model writes or the prompt opens
    switch = None
    if cfg is not None and cfg.switch is not None:
        switch = cfg.switch or None
    elif SWITCH in template:
        off = _render(engine, **{SWITCH: False})
        if off != on and off.rstrip().endswith(THINK_END):
            switch = SWITCH
    opened = cfg.opened if cfg is not None and cfg.opened is not None else _opens(on, THINK_START, THINK_END)
    return ThinkSpec(THINK_START, THINK_END, opened, switch, "think tags", "chat template")


def marker_tokens(engine: Engine, text: str, what: str, model: str) -> tuple[int, ...]:
    """A marker's token ids; a marker that is not in the vocabulary (it splits into ordinary text tokens)
    is an error naming it."""
    ids = engine.tokenize(text, add_bos=False, special=True)
    # a marker is a token of its own, or starts with one (gpt-oss: <|end|><|start|>assistant...): a marker
    # that splits into characters from its first one is text the model may write anywhere, not a marker
    spell = getattr(engine, "token_text", None)  # special tokens spelled out (detokenize drops control tokens)
    first = (spell(ids[0]) if spell else engine.detokenize(ids[:1])) if ids else ""
    if not ids or (len(ids) > 1 and len(first) < 2):
        raise UsageError(
            f"thinking {what} marker {text!r} is not a token of {model}'s vocabulary (it splits into {len(ids)} "
            "text tokens); set thinking.start / thinking.end in the preset to the model's own markers"
        )
    return tuple(ids)


def note(spec: ThinkSpec, model: str) -> str:
    """The one line that says what was detected."""
    how = "the prompt opens the block" if spec.opened else "the model opens the block"
    off = f"--thinking off sets {spec.switch}=false" if spec.switch else "thinking cannot be switched off"
    return (
        f"{model} is a thinking model: {spec.start} ... {spec.end} ({spec.form}, from its {spec.source}); "
        f"{how}; {off}; --think-budget N caps each trace's thinking"
    )


def check_options(opts: ThinkOptions) -> None:
    """The checks that need no model: budgets are whole numbers >= 0, the minimum within the budget."""
    for flag, value in (("--think-budget", opts.budget), ("--think-min", opts.min_tokens)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
            raise UsageError(f"{flag} must be a whole number of tokens (0 or more), got {value!r}")
    if opts.budget is not None and opts.min_tokens is not None and opts.min_tokens > opts.budget:
        raise UsageError(
            f"--think-min {opts.min_tokens} is above --think-budget {opts.budget}: a trace cannot think at least "
            "more than it may think at most"
        )
    if opts.mode is not None and opts.mode not in ("on", "off"):
        raise UsageError(f"--thinking must be on or off, got {opts.mode!r}")
    if opts.mode == "off" and (opts.budget or opts.min_tokens):
        raise UsageError("--thinking off and a --think-budget / --think-min above 0 contradict each other")


def setup(
    spec: ThinkSpec | None, opts: ThinkOptions, cfg: ThinkingConfig | None, engine: Engine, model: str
) -> ThinkSetup | None:
    """The thinking setup of a run, or None for a model that does not think (where any thinking flag is an
    error that says how to declare markers)."""
    check_options(opts)
    if spec is None:
        if opts.given():
            flags = (("--think-budget", opts.budget), ("--think-min", opts.min_tokens),
                     ("--think-message", opts.message), ("--thinking", opts.mode))  # fmt: skip
            flag = next(f for f, v in flags if v is not None)
            raise UsageError(
                f"{flag}: {model} is not a thinking model (neither its chat template nor the preset has thinking "
                "markers); a preset's thinking: section (start, end) declares them"
            )
        return None
    cfg = cfg or ThinkingConfig()
    enabled = cfg.enabled if opts.mode is None else opts.mode == "on"
    if opts.mode == "off" and spec.switch is None:
        raise UsageError(
            f"--thinking off: {model}'s chat template always opens its thinking block and has no switch to turn "
            "it off; --think-budget 0 closes the block at once instead"
        )
    if opts.mode == "on" and not cfg.enabled and spec.switch is None:
        raise UsageError(f"--thinking on: the preset turns thinking off and {model}'s template cannot turn it on")
    budget = opts.budget
    min_tokens = opts.min_tokens or 0
    message = cfg.message if opts.message is None else opts.message
    end = marker_tokens(engine, spec.end, "end", model)
    start = marker_tokens(engine, spec.start, "start", model)
    cut = tuple(engine.tokenize(message, add_bos=False, special=False)) + end if message else end
    resume = tuple(engine.tokenize(cfg.continuation, add_bos=False, special=False)) if cfg.continuation else ()
    variables: dict = {}
    suffix = ""
    closed = False
    if not enabled or budget == 0:
        closed = True
        if spec.switch is not None:
            variables = {spec.switch: False}
        else:  # the block, opened where the model would open it, is closed at once in the prompt
            suffix = ("" if spec.opened else spec.start) + message + spec.end
    control = ThinkControl(
        end=end, start=start, opened=spec.opened and not closed, closed=closed, budget=budget, cut=cut,
        min_tokens=min_tokens, resume=resume, start_text=spec.start, end_text=spec.end,
        cut_text=(message or "") + spec.end, resume_text=cfg.continuation or "",
    )  # fmt: skip
    return ThinkSetup(spec, enabled and budget != 0, control, variables, suffix, budget, min_tokens)


def fit_max_tokens(
    think: ThinkSetup | None, params: SamplingParams, given: bool, cfg: ThinkingConfig | None
) -> tuple[SamplingParams, str | None]:
    """max_tokens counts every token of a trace, thinking included. A think budget that leaves no room for
    an answer is an error when --max-tokens was given, else max_tokens grows to the budget, the cut and the
    preset's answer room (returned with a note saying so)."""
    if think is None or think.budget is None or not think.enabled:
        return params, None
    need = think.budget + len(think.control.cut)
    if need < params.max_tokens:
        return params, None
    if given:
        raise UsageError(
            f"--think-budget {think.budget} leaves no room for an answer within --max-tokens {params.max_tokens} "
            f"(the budget message and end marker add {len(think.control.cut)} tokens): raise --max-tokens above "
            f"{need} or lower --think-budget"
        )
    room = (cfg or ThinkingConfig()).answer_tokens
    raised = dataclasses.replace(params, max_tokens=need + room)
    why = f"think budget {think.budget}, the cut's {len(think.control.cut)} tokens and {room} for the answer"
    return raised, f"max_tokens raised to {raised.max_tokens} ({why})"
