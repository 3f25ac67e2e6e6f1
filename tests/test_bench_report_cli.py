"""`ttc bench` on the built-in pair (the default preset) over a dozen arith problems: every accuracy carries
its Wilson interval on stderr, in summary.json and summary.csv; `--paired` compares two cells on the same
problems, in the run and again on the finished run folder without running anything; the plot has its panels;
bad --paired input is one line and exit 2."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from conftest import REPO, one_line_error, run_ttc

from ttc.bench.stats import Paired, wilson

DATA = REPO / "ttc" / "data" / "arith500.jsonl"
PAIR = "majority@4,weighted-best-of-n@4"


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, dict, str]:
    """One real bench (the built-in policy and PRM), shared by the tests that only read it."""
    out = tmp_path_factory.mktemp("bench") / "run"
    r = run_ttc(
        "bench", str(DATA), "--limit", "12", "--strategies", "majority,weighted-best-of-n", "--budgets", "1,4",
        "--threads", "1", "--out", str(out), "--paired", PAIR, "--paired", "weighted-best-of-n@1,majority@4",
        "--json", timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    return out, json.loads(r.stdout), r.stderr.decode()


def outcomes(out: Path, strategy: str, budget: int) -> dict[str, bool]:
    recs = map(json.loads, (out / "samples.jsonl").read_text().splitlines())
    return {x["id"]: x["correct"] for x in recs if (x["strategy"], x["budget"]) == (strategy, budget)}


def test_every_accuracy_carries_its_wilson_interval_in_summary_json_csv_and_the_tables(run):
    out, summary, err = run
    assert summary == json.loads((out / "summary.json").read_text()) and "Wilson" in summary["interval"]
    rows = summary["by_budget"] + [r for rows in summary["by_difficulty"].values() for r in rows]
    assert len(summary["by_budget"]) == 4 and summary["by_difficulty"]["ops"]
    for r in rows:
        assert (r["accuracy_low"], r["accuracy_high"]) == tuple(
            pytest.approx(x, abs=1e-6) for x in wilson(r["correct"], r["n"])
        )
        assert r["accuracy_low"] <= r["accuracy"] <= r["accuracy_high"]
    csv_rows = list(csv.DictReader((out / "summary.csv").open()))
    assert len(csv_rows) == len(rows) and all(float(x["accuracy_low"]) <= float(x["accuracy"]) for x in csv_rows)
    cell = summary["by_budget"][0]
    shown = f"{100 * cell['accuracy']:.1f} ({100 * cell['accuracy_low']:.1f}-{100 * cell['accuracy_high']:.1f})"
    assert shown in err and "95% Wilson interval" in err and "accuracy by ops" in err


def test_paired_comparison_counts_the_problems_where_the_cells_disagree(run):
    out, summary, err = run
    assert [(e["first"], e["second"]) for e in summary["paired"]] == [
        ("majority@4", "weighted-best-of-n@4"), ("weighted-best-of-n@1", "majority@4")
    ]  # fmt: skip
    for e in summary["paired"]:
        (s1, b1), (s2, b2) = (c.rsplit("@", 1) for c in (e["first"], e["second"]))
        a, b = outcomes(out, s1, int(b1)), outcomes(out, s2, int(b2))
        assert len(a) == len(b) == e["n"] == 12
        only_a = sum(a[k] and not b[k] for k in a)
        only_b = sum(b[k] and not a[k] for k in a)
        assert (e["only_first_right"], e["only_second_right"]) == (only_a, only_b)
        assert e["difference"] == pytest.approx((only_a - only_b) / 12, abs=1e-6)
        p = Paired(e["both_right"], only_a, only_b, e["neither_right"])
        assert (e["difference_low"], e["difference_high"]) == tuple(pytest.approx(x, abs=1e-6) for x in p.interval())
        assert e["mcnemar_p"] == pytest.approx(p.p_value, abs=1e-6)
        line = next(x for x in err.splitlines() if x.startswith(f"paired {e['first']} vs {e['second']} on 12"))
        assert f"b={only_a}" in line and f"c={only_b}" in line and ("McNemar p=" in line or "McNemar p<0.001" in line)
        assert f"{100 * e['difference_low']:+.1f} to {100 * e['difference_high']:+.1f}" in line


def test_a_finished_run_folder_is_summarized_again_without_running_anything(run, tmp_path):
    out, summary, _ = run
    pytest.importorskip("matplotlib")
    samples = (out / "samples.jsonl").read_bytes()
    r = run_ttc("bench", str(out), "--paired", "weighted-best-of-n@4,majority@1", "--plot", "--json")
    assert r.returncode == 0, r.stderr.decode()
    again = json.loads(r.stdout)
    assert (out / "samples.jsonl").read_bytes() == samples  # nothing appended, nothing rerun
    assert "nothing was run" in r.stderr.decode() and "paired weighted-best-of-n@4 vs majority@1" in r.stderr.decode()
    assert again["by_budget"] == summary["by_budget"] and again["overhead"] == summary["overhead"]
    [e] = again["paired"]
    assert e["first"] == "weighted-best-of-n@4" and e["n"] == 12
    assert json.loads((out / "summary.json").read_text()) == again
    assert (out / "accuracy_vs_budget.png").exists()


def test_the_plot_has_panels_by_budget_by_tokens_generated_and_by_ops(run, tmp_path):
    pytest.importorskip("matplotlib")
    from PIL import Image

    from ttc.bench.plot import figure, plot_accuracy

    out, summary, _ = run
    titles = ["accuracy vs budget", "accuracy vs tokens generated", "accuracy by ops"]
    path = plot_accuracy(tmp_path, summary, title="arith")
    assert Image.open(path).text["Description"] == "panels: " + "; ".join(titles)
    fig = figure(summary)
    try:
        assert [ax.get_title() for ax in fig.axes] == titles
        by_budget, by_tokens, by_ops = fig.axes
        assert by_budget.get_xscale() == "log" and by_tokens.get_xlabel() == "mean tokens generated per problem"
        assert len(by_budget.get_legend().get_texts()) == 2  # a line per strategy
        assert len(by_ops.get_legend().get_texts()) == 4  # a line per cell
        # the tokens panel puts each point at the cell's mean tokens generated, not at its budget
        xs = sorted(float(x) for line in by_tokens.get_lines() for x in line.get_xdata() if line.get_marker() == "o")
        assert xs == pytest.approx(sorted(r["mean_tokens"] for r in summary["by_budget"]))
    finally:
        import matplotlib.pyplot as plt

        plt.close(fig)
    flat = {**summary, "by_difficulty": {}}  # no difficulty in the data: two panels
    fig = figure(flat)
    assert [ax.get_title() for ax in fig.axes] == titles[:2]
    plt.close(fig)


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--paired", "majority4,weighted-best-of-n@4"], ["--paired", "STRATEGY@BUDGET"]),
        (["--paired", "majority@4"], ["--paired", "two cells"]),
        (["--paired", "majority@8,majority@1"], ["majority@8 is not a cell", "majority@1"]),
        (["--paired", "beam@4,majority@1"], ["beam@4 is not a cell"]),
    ],
)
def test_bad_paired_input_is_one_line_and_exit_2_before_anything_runs(args, needles, tmp_path):
    out = tmp_path / "out"
    r = run_ttc("bench", str(DATA), "--limit", "2", "--budgets", "1,4", "--out", str(out), *args)
    one_line_error(r, 2, *needles)
    assert not (out / "samples.jsonl").exists()


@pytest.mark.parametrize(
    "args,needles",
    [
        (["--paired", "majority@64,majority@1"], ["majority@64 is not a cell of the run in", "majority@4"]),
        (["--paired", "x"], ["STRATEGY@BUDGET"]),
        (["--strategies", "beam"], ["is a run folder", "--strategies", "--resume"]),
        (["--resume"], ["is a run folder", "--resume"]),
    ],
)
def test_bad_input_on_a_run_folder_is_one_line_and_exit_2(run, args, needles):
    out, _, _ = run
    before = (out / "summary.json").read_bytes()
    one_line_error(run_ttc("bench", str(out), *args), 2, *needles)
    assert (out / "summary.json").read_bytes() == before
