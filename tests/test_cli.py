"""The command line as a user meets it: stdout holds data only, stdin mode keeps order, --json parses, and
every kind of bad input gets one line on stderr, the right exit code and no traceback."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest import one_line_error, preset_text, run_ttc


@pytest.fixture(scope="module")
def preset(tmp_path_factory, tiny_gguf) -> Path:
    path = tmp_path_factory.mktemp("presets") / "test-random.yaml"
    path.write_text(preset_text(tiny_gguf))
    return path


def test_stdout_holds_only_the_answer(preset):
    r = run_ttc("solve", "12+7", "--preset", str(preset), "--strategy", "greedy", "--budget", "1")
    assert r.returncode == 0, r.stderr.decode()
    assert len(r.stdout.decode().splitlines()) == 1


def test_json_parses_and_carries_the_record(preset):
    r = run_ttc("solve", "12+7", "--preset", str(preset), "--strategy", "majority", "--budget", "4", "--json")
    assert r.returncode == 0, r.stderr.decode()
    rec = json.loads(r.stdout)
    for key in ("answer", "strategy", "budget", "candidates", "spent", "model", "seed"):
        assert key in rec
    assert rec["strategy"] == "majority" and rec["budget"] == 4 and len(rec["candidates"]) == 4
    for key in ("generations", "tokens_generated", "prompt_tokens", "prm_tokens", "wall_s", "flops"):
        assert key in rec["spent"]
    assert rec["spent"]["generations"] == 4
    assert rec["spent"]["tokens_generated"] == sum(c["tokens"] for c in rec["candidates"])
    assert all({"answer", "text", "scores"} <= set(c) for c in rec["candidates"])


def test_stdin_mode_keeps_order(preset):
    problems = ["12+7", "3-1", "", "40+2"]
    args = ("--preset", str(preset), "--strategy", "greedy", "--budget", "1", "--temperature", "0")
    r = run_ttc("solve", "-", *args, stdin="\n".join(problems).encode() + b"\n")
    assert r.returncode == 0, r.stderr.decode()
    lines = r.stdout.decode().split("\n")[:-1]
    assert len(lines) == len(problems)
    for p, line in zip(problems, lines):
        if not p:
            assert line == ""
            continue
        alone = run_ttc("solve", p, *args)
        assert alone.stdout.decode().rstrip("\n") == line


def test_same_seed_same_answer(preset):
    args = ("solve", "5+5", "--preset", str(preset), "--budget", "3", "--seed", "4", "--json")
    a, b = json.loads(run_ttc(*args).stdout), json.loads(run_ttc(*args).stdout)
    assert [c["text"] for c in a["candidates"]] == [c["text"] for c in b["candidates"]]


@pytest.mark.parametrize("problem", ["", "   "])
def test_empty_problem(preset, problem):
    one_line_error(run_ttc("solve", problem, "--preset", str(preset)), 2, "empty")


@pytest.mark.parametrize("data,needle", [(b"  \n\t\n", "no problem"), (b"1+1\n\xff\xfe2+2\n", "UTF-8")])
def test_bad_stdin(preset, data, needle):
    one_line_error(run_ttc("solve", "-", "--preset", str(preset), stdin=data), 2, needle)


def test_missing_model_file(preset):
    one_line_error(
        run_ttc("solve", "1+1", "--preset", str(preset), "--model", "/nope/model.gguf"), 2, "/nope/model.gguf"
    )


def test_a_file_that_is_not_gguf(preset, tmp_path):
    bad = tmp_path / "notes.gguf"
    bad.write_text("hello, I am not a model\n")
    one_line_error(run_ttc("solve", "1+1", "--preset", str(preset), "--model", str(bad)), 1, "not a GGUF")


def test_a_truncated_gguf(preset, tmp_path, tiny_gguf):
    cut = tmp_path / "cut.gguf"
    data = tiny_gguf.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    one_line_error(run_ttc("solve", "1+1", "--preset", str(preset), "--model", str(cut)), 1, "truncated")


@pytest.mark.parametrize("budget", ["0", "-3", "abc", "2.5"])
def test_bad_budget(preset, budget):
    one_line_error(run_ttc("solve", "1+1", "--preset", str(preset), "--budget", budget), 2, "budget")


def test_unknown_strategy_suggests_the_closest(preset):
    one_line_error(run_ttc("solve", "1+1", "--preset", str(preset), "--strategy", "majorty"), 2, "'majority'")


def test_unknown_preset():
    one_line_error(run_ttc("solve", "1+1", "--preset", "no-such-preset"), 2, "no-such-preset")


def test_preset_with_unknown_key(tmp_path, tiny_gguf):
    p = tmp_path / "bad.yaml"
    p.write_text(preset_text(tiny_gguf) + "temprature: 0.5\n")
    one_line_error(run_ttc("solve", "1+1", "--preset", str(p)), 2, "temprature", str(p))


def test_preset_with_a_wrong_type(tmp_path, tiny_gguf):
    p = tmp_path / "bad.yaml"
    p.write_text(preset_text(tiny_gguf).replace("max_tokens: 12", "max_tokens: lots"))
    one_line_error(run_ttc("solve", "1+1", "--preset", str(p)), 2, "sampling.max_tokens", str(p))


def test_a_prompt_longer_than_the_context(preset):
    one_line_error(run_ttc("solve", "1+" * 3000 + "1", "--preset", str(preset)), 2, "context")


@pytest.mark.parametrize(
    "pred",
    [
        "__import__('os').system('touch {marker}')",
        "The answer is \\boxed{{__import__('os').system('touch {marker}')}}",
    ],
)
def test_grade_never_runs_model_text(tmp_path, pred):
    marker = tmp_path / "pwned"
    t0 = time.monotonic()
    r = run_ttc("grade", pred.format(marker=marker), "5")
    assert time.monotonic() - t0 < 5 + 10  # interpreter start-up on a loaded machine, plus the 5 s bound
    assert r.returncode == 1
    assert not marker.exists()
    assert "Traceback" not in r.stderr.decode()


def test_grade_exit_codes():
    assert run_ttc("grade", "The answer is \\boxed{\\frac{1}{2}}", "0.5").returncode == 0
    assert run_ttc("grade", "#### 7", "8").returncode == 1


def test_grade_jsonl_prints_accuracy(tmp_path):
    f = tmp_path / "preds.jsonl"
    rows = [{"pred": "\\boxed{2}", "gold": "2"}, {"pred": "3", "gold": "4"}, {"pred": "x=5", "gold": "5"}]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    r = run_ttc("grade", "--jsonl", str(f), "--pred-key", "pred", "--gold-key", "gold", "--json")
    assert r.returncode == 0, r.stderr.decode()
    out = json.loads(r.stdout)
    assert out == {"accuracy": pytest.approx(2 / 3), "correct": 2, "n": 3}


def test_presets_show_names_the_file_and_list_includes_it(preset):
    r = run_ttc("presets", "show", str(preset))
    assert r.returncode == 0 and "test-random" in r.stdout.decode()
    r = run_ttc("presets", "show", "nonexistent-xyz")
    one_line_error(r, 2, "nonexistent-xyz")


def test_version():
    r = run_ttc("--version")
    assert r.returncode == 0 and r.stdout.decode().startswith("ttc ")


def test_compare_prints_a_table_on_stderr_and_records_on_stdout(preset):
    r = run_ttc(
        "compare", "12+7", "--preset", str(preset), "--budget", "4", "--answer", "19",
        "--strategies", "greedy,majority,adaptive", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    rows = json.loads(r.stdout)
    assert [x["strategy"] for x in rows] == ["greedy", "majority", "adaptive"]
    assert all(x["correct"] in (True, False) for x in rows)
    assert "majority" in r.stderr.decode() and "gen tokens" in r.stderr.decode()


def test_strategy_options_reach_the_strategy(preset):
    r = run_ttc("solve", "12+7", "--preset", str(preset), "--strategy", "adaptive", "--budget", "8",
                "--opt", "wave=2", "--opt", "confidence=0.99", "--json")  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    d = json.loads(r.stdout)["details"]
    assert d["wave"] == 2 and d["confidence"] == 0.99
    one_line_error(run_ttc("solve", "1+1", "--preset", str(preset), "--opt", "novalue"), 2, "key=value")


def test_a_strategy_variant_carries_its_options_and_its_label(preset):
    r = run_ttc("solve", "12+7", "--preset", str(preset), "--strategy", "adaptive:wave=2", "--budget", "4", "--json")
    assert r.returncode == 0, r.stderr.decode()
    rec = json.loads(r.stdout)
    assert rec["strategy"] == "adaptive:wave=2" and rec["details"]["wave"] == 2
    one_line_error(run_ttc("solve", "1+1", "--preset", str(preset), "--strategy", "beam:width"), 2, "key=value")


def test_a_successful_solve_writes_nothing_on_stderr(tmp_path):
    """llama.cpp's own warnings (here: a unified KV larger than a 512-token training context) stay quiet."""
    from conftest import make_tiny_gguf

    small = make_tiny_gguf(tmp_path / "ctx512.gguf", n_ctx=512)
    p = tmp_path / "p.yaml"
    p.write_text(preset_text(small, max_tokens=8))
    r = run_ttc("solve", "1+2", "--preset", str(p), "--strategy", "majority", "--budget", "64")  # 64 x 9 cells
    assert r.returncode == 0, r.stderr.decode()
    assert r.stderr.decode() in ("", "ttc: no answer found for '1+2'\n")


def test_a_problem_of_one_60000_character_run_is_one_line_not_a_crash():
    # llama.cpp's tokenizer recursed once per character of such a run and overflowed the thread's stack (SIGSEGV)
    r = run_ttc("solve", "--strategy", "greedy", "9" * 60_000)
    one_line_error(r, 2, "context of")
