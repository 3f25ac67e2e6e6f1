"""`ttc bench` as a user meets it, in a subprocess on a tiny random model: real dataset shapes run end to end,
a kill -9 and --resume lose and repeat nothing, every bad input is one line on stderr with the right exit
code, and a full disk never leaves a corrupted samples file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import REPO, one_line_error, preset_text, run_ttc, ttc_env

FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def preset(tmp_path_factory, tiny_gguf) -> Path:
    path = tmp_path_factory.mktemp("presets") / "bench-random.yaml"
    path.write_text(preset_text(tiny_gguf, temperature=1.0, max_tokens=8))
    return path


def bench_args(preset: Path, data: Path, out: Path, *more: str) -> list[str]:
    return ["bench", str(data), "--preset", str(preset), "--out", str(out), "--threads", "1", *more]


def keys_of(path: Path) -> list[tuple]:
    return [(r["id"], r["strategy"], r["budget"]) for r in map(json.loads, path.read_text().splitlines())]


def test_math500_lines_run_end_to_end_with_summaries_by_level_and_subject(preset, tmp_path):
    out = tmp_path / "math"
    data = FIXTURES / "math500_head.jsonl"
    r = run_ttc(*bench_args(preset, data, out, "--budgets", "1,2", "--json"))
    assert r.returncode == 0, r.stderr.decode()
    summary = json.loads(r.stdout)  # stdout is the summary alone
    assert summary["dataset"]["shape"] == "math" and summary["records"] == 4 * 2
    assert set(summary["by_difficulty"]) == {"level", "subject"}
    assert json.loads((out / "summary.json").read_text()) == summary
    err = r.stderr.decode()
    assert "accuracy by level" in err and "\x1b[" not in err  # tables, and no live display off a terminal
    assert "loop/engine" in err and summary["overhead"]["engine_wall_s"] > 0
    rec = json.loads((out / "samples.jsonl").read_text().splitlines()[0])
    assert rec["id"].startswith("test/") and rec["gold_answer"] and rec["ttc_version"] and rec["bench"]["model_file"]


def test_gsm8k_lines_are_graded_against_the_number_after_hashes_and_quiet_says_nothing(preset, tmp_path):
    out = tmp_path / "gsm"
    r = run_ttc(*bench_args(preset, FIXTURES / "gsm8k_head.jsonl", out, "--budgets", "1", "--quiet"))
    assert r.returncode == 0 and r.stderr == b"" and r.stdout == b""
    recs = [json.loads(x) for x in (out / "samples.jsonl").read_text().splitlines()]
    assert [x["id"] for x in recs] == ["1", "2", "3", "4"] and recs[0]["gold_answer"] == "18"


def test_a_malformed_line_is_reported_with_its_number_and_the_run_goes_on(preset, tmp_path):
    data = tmp_path / "d.jsonl"
    lines = (FIXTURES / "arith_head.jsonl").read_text().splitlines()
    data.write_text("\n".join(lines[:2] + ["{not json"] + lines[2:3]) + "\n")
    r = run_ttc(*bench_args(preset, data, tmp_path / "out", "--budgets", "1"))
    assert r.returncode == 0, r.stderr.decode()
    assert f"{data}:3: not valid JSON" in r.stderr.decode()
    assert len(keys_of(tmp_path / "out" / "samples.jsonl")) == 3
    one_line_error(run_ttc(*bench_args(preset, data, tmp_path / "strict", "--strict")), 2, f"{data}:3:", "JSON")


def test_kill_9_mid_run_then_resume_keeps_every_record_and_repeats_none(preset, tmp_path):
    data = tmp_path / "arith200.jsonl"
    data.write_text("".join((REPO / "ttc" / "data" / "arith500.jsonl").read_text().splitlines(True)[:200]))
    out = tmp_path / "run"
    samples = out / "samples.jsonl"
    args = bench_args(preset, data, out, "--budgets", "1,2,4", "--max-tokens", "16")
    proc = subprocess.Popen([sys.executable, "-m", "ttc", *args], env=ttc_env(), cwd=REPO, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if samples.exists() and samples.read_bytes().count(b"\n") >= 150:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    before = samples.read_bytes()
    whole = before[: before.rfind(b"\n") + 1]
    assert 150 <= whole.count(b"\n") < 600
    r = run_ttc(*bench_args(preset, data, out, "--budgets", "1,2,4", "--max-tokens", "16", "--resume", "--json"))
    assert r.returncode == 0, r.stderr.decode()
    after = samples.read_bytes()
    assert after.startswith(whole)  # every record written before the kill is kept, unchanged
    keys = keys_of(samples)
    assert len(keys) == 600 == len(set(keys))
    summary = json.loads(r.stdout)
    assert summary["records"] == 600 and summary["overhead"]["records_skipped"] == whole.count(b"\n")


@pytest.mark.parametrize(
    "setup,args,code,needles",
    [
        (None, ["--budgets", "1"], 2, ["dataset not found"]),
        ("empty", ["--budgets", "1"], 2, ["is empty"]),
        ("dir", ["--budgets", "1"], 2, ["is a folder"]),
        ("junk", ["--budgets", "1"], 2, ["no valid problem", "not valid JSON"]),
        ("keys", ["--problem-key", "question"], 2, ["no 'question' key"]),
        ("dupes", ["--strict"], 2, [":2: duplicate id 'arith-000' (first on line 1)"]),
        ("good", ["--budgets", "0,4"], 2, ["--budgets"]),
        ("good", ["--budgets", "1,x"], 2, ["--budgets"]),
        ("good", ["--strategies", "majorty"], 2, ["'majority'"]),
        ("good", ["--limit", "0"], 2, ["--limit"]),
        ("good", ["--out-is-a-file"], 2, ["is a file"]),
        ("good", ["--out-under-a-file"], 2, ["cannot create"]),
        ("good", ["--out-not-empty"], 2, ["not empty", "--resume", "--force"]),
    ],
)
def test_bad_input_is_one_line_and_the_right_exit_code(preset, tmp_path, setup, args, code, needles):
    data = tmp_path / "data.jsonl"
    good = (FIXTURES / "arith_head.jsonl").read_text()
    if setup == "empty":
        data.write_text("")
    elif setup == "dir":
        data.mkdir()
    elif setup == "junk":
        data.write_text("hello\nworld\n")
    elif setup in ("keys", "good"):
        data.write_text(good)
    elif setup == "dupes":
        data.write_text(good.splitlines(True)[0] * 2)
    out = tmp_path / "out"
    if "--out-is-a-file" in args:
        out.write_text("x")
    elif "--out-under-a-file" in args:
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "out"
    elif "--out-not-empty" in args:
        out.mkdir()
        (out / "samples.jsonl").write_text("")
    args = [a for a in args if not a.startswith("--out-")]
    err = one_line_error(run_ttc(*bench_args(preset, data, out, *args)), code, *needles)
    assert "ttc: error" in err


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_an_unwritable_out_folder_is_one_line(preset, tmp_path):
    out = tmp_path / "ro"
    out.mkdir(mode=0o555)
    r = run_ttc(*bench_args(preset, FIXTURES / "arith_head.jsonl", tmp_path / "ro"))
    one_line_error(r, 2, str(out), "Permission denied", "--out")


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs Linux /proc")
def test_an_out_folder_that_cannot_be_created_is_one_line(preset):
    r = run_ttc(*bench_args(preset, FIXTURES / "arith_head.jsonl", Path("/proc/self/ttc-bench-out")))
    one_line_error(r, 2, "/proc/self/ttc-bench-out", "cannot create")


def test_a_full_disk_ends_with_one_line_and_only_whole_records_then_resume_completes(preset, tmp_path):
    out = tmp_path / "run"
    args = bench_args(preset, FIXTURES / "arith_head.jsonl", out, "--budgets", "1,2,4")
    code = (
        "import resource, sys; resource.setrlimit(resource.RLIMIT_FSIZE, (12000, 12000)); "
        f"from ttc.cli import main; sys.exit(main({args!r}))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, env=ttc_env(), cwd=REPO, timeout=180)
    one_line_error(r, 1, "samples.jsonl", "file size limit", "--resume")
    data = (out / "samples.jsonl").read_bytes()
    assert data.endswith(b"\n") and all(json.loads(x) for x in data.splitlines())
    partial = data.count(b"\n")
    assert 0 < partial < 15
    r = run_ttc(*args, "--resume")
    assert r.returncode == 0, r.stderr.decode()
    keys = keys_of(out / "samples.jsonl")
    assert len(keys) == 15 == len(set(keys)) and (out / "samples.jsonl").read_bytes().startswith(data)


def test_plot_writes_the_png(preset, tmp_path):
    pytest.importorskip("matplotlib")
    out = tmp_path / "run"
    r = run_ttc(*bench_args(preset, FIXTURES / "arith_head.jsonl", out, "--budgets", "1,2,4", "--plot"))
    assert r.returncode == 0, r.stderr.decode()
    png = out / "accuracy_vs_budget.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and "wrote" in r.stderr.decode()


def test_plot_without_matplotlib_gives_a_one_line_install_hint(preset, tmp_path):
    fake = tmp_path / "nompl" / "matplotlib"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("raise ImportError('matplotlib is not installed (test)')\n")
    out = tmp_path / "run"
    args = bench_args(preset, FIXTURES / "arith_head.jsonl", out, "--budgets", "1", "--plot")
    r = run_ttc(*args, PYTHONPATH=f"{fake.parent}{os.pathsep}{REPO}")
    assert r.returncode == 0, r.stderr.decode()
    hints = [x for x in r.stderr.decode().splitlines() if x.startswith("ttc:") and "matplotlib" in x]
    assert len(hints) == 1 and "pip install" in hints[0]
    assert not (out / "accuracy_vs_budget.png").exists() and (out / "summary.json").exists()
