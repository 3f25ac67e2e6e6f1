"""Turning a problem into the policy's prompt, as the preset says: a raw template, or the model's own chat
template read from its GGUF metadata (rendered in a sandboxed Jinja environment by llama-cpp-python's
formatter). Templates are filled with `str.replace`, never `str.format`, so that braces in a problem
(LaTeX is full of them) are left alone.
"""

from __future__ import annotations

from .engine.base import Engine
from .errors import UsageError
from .presets import Preset


def fill(template: str, **values: str) -> str:
    out = template
    for key, value in values.items():
        out = out.replace("{" + key + "}", value)
    return out


def render_chat(
    engine: Engine, messages: list[dict[str, str]], add_generation_prompt: bool = True, **variables
) -> str:
    """The model's chat template applied to `messages`, with the assistant turn opened when asked;
    `variables` are the template's own switches (Qwen3: enable_thinking=False)."""
    template = engine.info.chat_template
    if not template:
        raise UsageError(
            f"the preset asks for the chat format but {engine.info.name} has no chat template in its GGUF "
            "metadata; use prompt.format: raw with a template"
        )
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter

    meta = engine.info.metadata
    tokens = _token_texts(engine)
    bos = tokens.get(meta.get("tokenizer.ggml.bos_token_id", ""), "")
    eos = tokens.get(meta.get("tokenizer.ggml.eos_token_id", ""), "")
    try:
        formatter = Jinja2ChatFormatter(
            template, eos_token=eos, bos_token=bos, add_generation_prompt=add_generation_prompt
        )
        return formatter(messages=messages, **variables).prompt
    except Exception as e:
        raise UsageError(f"{engine.info.name}: its chat template failed to render ({type(e).__name__}: {e})") from None


def _token_texts(engine: Engine) -> dict[str, str]:
    """Texts of the BOS/EOS tokens named in the metadata (by id, as strings)."""
    out = {}
    for key in ("tokenizer.ggml.bos_token_id", "tokenizer.ggml.eos_token_id"):
        tid = engine.info.metadata.get(key)
        if tid is not None and hasattr(engine, "token_text"):
            out[tid] = engine.token_text(int(tid))
    return out


def problem_prompt(preset: Preset, engine: Engine, problem: str, **variables) -> str:
    """The prompt that asks the policy to solve `problem` (`variables`: chat-template switches)."""
    user = fill(preset.prompt.template, problem=problem)
    if preset.prompt.format == "raw":
        return user
    if preset.prompt.format == "chat":
        messages = [{"role": "system", "content": preset.prompt.system}] if preset.prompt.system else []
        messages.append({"role": "user", "content": user})
        return render_chat(engine, messages, **variables)
    raise UsageError(f"{preset.source}: prompt.format must be 'raw' or 'chat', got '{preset.prompt.format}'")
