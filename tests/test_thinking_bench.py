"""`ttc bench --think-budgets`: the grid of think budgets x budgets on a tiny thinking model, in one run that
resumes across it."""

from __future__ import annotations

import json

from conftest import one_line_error, run_ttc
from thinking_models import write_preset, write_thinking_gguf


def test_a_think_budget_grid_runs_in_one_go_prints_its_table_and_resumes(tmp_path):
    model = write_thinking_gguf(tmp_path / "qwen3.gguf", "qwen3", q=0.05)
    preset = write_preset(tmp_path, model, "qwen3")
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"problem": f"{i}+1", "answer": "42"}) + "\n" for i in range(3)))
    out = tmp_path / "run"
    args = ["bench", str(data), "-p", str(preset), "--think-budgets", "0,8", "--budgets", "1,2", "--out", str(out)]
    r = run_ttc(*args, timeout=600)
    assert r.returncode == 0, r.stderr.decode()
    err = r.stderr.decode()
    assert "by think budget x budget" in err
    summary = json.loads((out / "summary.json").read_text())
    labels = {c["strategy"] for c in summary["by_budget"]}
    assert labels == {"majority:think=0", "majority:think=8"}
    rows = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert len(rows) == 3 * 2 * 2
    for row in rows:
        t = int(row["strategy"].rsplit("=", 1)[1])
        cands = row["result"]["candidates"] if "result" in row else row["candidates"]
        assert all(c["think"]["tokens"] <= t for c in cands)
    cells = {(c["strategy"], c["budget"]): c for c in summary["by_budget"]}
    # thinking costs tokens: at the same budget, think budget 8 spends more than 0
    assert cells[("majority:think=8", 2)]["mean_tokens"] > cells[("majority:think=0", 2)]["mean_tokens"]
    again = run_ttc(*args, "--resume", timeout=600)
    assert again.returncode == 0, again.stderr.decode()
    assert "0 run" in again.stderr.decode() and "12 already done" in again.stderr.decode()


def test_think_budgets_on_a_model_that_does_not_think_fail_before_anything_runs(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text(json.dumps({"problem": "1+1", "answer": "2"}) + "\n")
    r = run_ttc("bench", str(data), "--think-budgets", "0,8", "--budgets", "1", "--out", str(tmp_path / "o"))
    one_line_error(r, 2, "not a thinking model")
    one_line_error(run_ttc("bench", str(data), "--think-budgets", "8,x"), 2, "--think-budgets")
