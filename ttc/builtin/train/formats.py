"""The text layouts the built-in models are trained on; `presets/tiny-arith.yaml` must say the same.

No torch here: the tests that check the preset against these layouts run without the `train` extra.

    policy prompt   "Problem: 37+48-19\\nSolution:\\n"        then the solution, then EOS (id 257)
    revision prompt "Attempt 1:\\n<an earlier attempt>\\n...Problem: 37+48-19\\nSolution:\\n"
    PRM input       "Problem: 37+48-19\\nSolution:\\n" + "37+48=85ки85-19=66ки\\boxed{66}ки"

The PRM's score of a step is read at its tag token "ки": P("+") / (P("+") + P("-")) of the next token.
The tag takes the place of the step's newline (the compact layout), so the PRM reads exactly as many
tokens per step as the policy wrote: no space before the tag and no delimiter after it, which
Math-Shepherd's own layout (" ки\\n") would add to every step.
"""

from __future__ import annotations

from ..gguf_llama import ByteVocab

PROMPT_TEMPLATE = "Problem: {problem}\nSolution:\n"
STEP_DELIMITER = "\n"
# Earlier attempts come first and the plain prompt closes the context, so the problem sits right before
# "Solution:" exactly as in a plain prompt; with no attempts the revision prompt IS the plain prompt.
REVISION_TEMPLATE = "{attempts}Problem: {problem}\nSolution:\n"
ATTEMPT_TEMPLATE = "Attempt {index}:\n{attempt}\n"
MAX_ATTEMPTS = 4
PRM_TEMPLATE = "Problem: {problem}\nSolution:\n"
TAG_TOKEN = "ки"
STEP_TAG = TAG_TOKEN  # right after the step's text
PRM_SEPARATOR = ""  # what the PRM reads between a tag and the next step (the preset's prm.step_separator)
GOOD_TOKEN, BAD_TOKEN = "+", "-"

VOCAB = ByteVocab((TAG_TOKEN,))  # both models share it: 256 bytes, BOS, EOS, a dummy merge, "ки"
TAG_ID = VOCAB.user_token_id(TAG_TOKEN)
GOOD_ID, BAD_ID = ord(GOOD_TOKEN), ord(BAD_TOKEN)
NEWLINE_ID = ord("\n")


def policy_prompt(problem: str) -> str:
    return PROMPT_TEMPLATE.format(problem=problem)


def revision_prompt(problem: str, attempts: list[str]) -> str:
    """The revision layout: the problem, earlier attempts (oldest first, at most MAX_ATTEMPTS), a new try."""
    kept = attempts[-MAX_ATTEMPTS:] if attempts else []
    body = "".join(ATTEMPT_TEMPLATE.format(index=i + 1, attempt=a) for i, a in enumerate(kept))
    return REVISION_TEMPLATE.format(problem=problem, attempts=body)


def prm_text(problem: str, steps: list[str]) -> str:
    """PRM input: the template, then each step's text, its tag and the separator."""
    return PRM_TEMPLATE.format(problem=problem) + "".join(s + STEP_TAG + PRM_SEPARATOR for s in steps)


def prm_tokens(problem: str, steps: list[str]) -> tuple[list[int], list[int]]:
    """PRM input token ids (with BOS) and the index of each step's tag token in them."""
    ids = VOCAB.encode(prm_text(problem, steps), add_bos=True)
    return ids, [i for i, t in enumerate(ids) if t == TAG_ID]
