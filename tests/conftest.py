"""Shared fixtures: tiny random-weight GGUF models written with `gguf` and loaded through llama.cpp."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from ttc.engine.llama.buffers import install_plain_cpu_buffers

try:  # the tests' own llama_cpp.Llama objects (references for ttc's engine) load models as the engine does
    import llama_cpp

    install_plain_cpu_buffers(llama_cpp)
except ImportError:
    pass

from ttc.builtin.gguf_llama import ByteVocab, GGUFSpec, LlamaShape, random_llama_tensors, write_llama_gguf

REPO = Path(__file__).resolve().parents[1]
DATASETS = REPO.parent / "shared" / "datasets"

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


PRESET_TEXT = """\
name: test-random
description: a random tiny model for CLI tests
model: {model}
prompt:
  format: raw
  template: "Problem: {{problem}}\\nSolution:\\n"
step_delimiter: "\\n"
answer:
  format: boxed
  last_number_fallback: true
sampling:
  temperature: {temperature}
  max_tokens: {max_tokens}
"""


def preset_text(model, temperature: float = 0.8, max_tokens: int = 12) -> str:
    """A preset on a (random) model file, for tests of the command line."""
    return PRESET_TEXT.format(model=model, temperature=temperature, max_tokens=max_tokens)


def ttc_env(**extra: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(REPO), **extra}
    env.pop("TTC_DEBUG", None)
    return env


def run_ttc(*args: str, stdin: bytes | None = None, timeout: float = 180, **env_extra: str):
    """`python -m ttc ARGS` in a subprocess, as a user runs it."""
    return subprocess.run(
        [sys.executable, "-m", "ttc", *args],
        input=stdin if stdin is not None else b"",
        capture_output=True,
        timeout=timeout,
        env=ttc_env(**env_extra),
        cwd=REPO,
    )


def one_line_error(r, code: int, *needles: str) -> str:
    """Assert a failure with exit `code`, one line on stderr holding each needle, and no traceback."""
    err = r.stderr.decode()
    assert r.returncode == code, (r.returncode, err)
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1, err
    for n in needles:
        assert n in err, err
    return err


def make_tiny_gguf(
    path: Path,
    *,
    n_embd: int = 64,
    n_layer: int = 2,
    n_head: int = 4,
    n_ff: int = 128,
    n_ctx: int = 4096,
    seed: int = 0,
    scale: float = 4.0,
    user_tokens: tuple[str, ...] = (),
    chat_template: str | None = None,
    matrix_dtype: str = "f32",
) -> Path:
    """Write a random llama model with the byte-level vocabulary; `scale` sharpens its distributions."""
    vocab = ByteVocab(user_tokens=user_tokens)
    shape = LlamaShape(
        n_vocab=vocab.size, n_embd=n_embd, n_layer=n_layer, n_head=n_head, n_head_kv=n_head, n_ff=n_ff, n_ctx=n_ctx
    )
    tensors = random_llama_tensors(shape, seed=seed, scale=scale)
    spec = GGUFSpec(name=path.stem, vocab=vocab, chat_template=chat_template, matrix_dtype=matrix_dtype)
    return write_llama_gguf(path, shape, tensors, spec)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory) -> Path:
    return make_tiny_gguf(tmp_path_factory.mktemp("models") / "tiny.gguf")


@pytest.fixture(scope="session")
def engine(tiny_gguf):
    from ttc.engine.llama import LlamaEngine

    eng = LlamaEngine(str(tiny_gguf), n_threads=2)
    yield eng
    eng.close()


class JSONHandler(BaseHTTPRequestHandler):
    """The request handler of a fake server: reads JSON bodies, answers JSON, logs nothing."""

    def body(self) -> dict:
        return json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")

    def send_json(self, status: int, data, headers: dict | None = None) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *a):
        pass


class LoopbackServer:
    """A fake server of the tests: `serve(handler)` runs an http.server handler class on 127.0.0.1 in a
    daemon thread; `url` is its OpenAI-style base (ending in /v1)."""

    def serve(self, handler: type[BaseHTTPRequestHandler]) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
