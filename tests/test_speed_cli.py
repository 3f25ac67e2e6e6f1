"""`ttc speed`: its sampler options reach the measurement, the sequential loop can be left out, and a
--reference folder without llama.cpp's programs is a one-line usage error."""

from __future__ import annotations

import json

from conftest import one_line_error, run_ttc


def test_speed_json_rows_with_sampler_options_and_no_sequential_loop(tiny_gguf):
    r = run_ttc(
        "speed", "--model", str(tiny_gguf), "--n", "1,3", "--tokens", "5", "--threads", "2",
        "--temperature", "0.7", "--top-k", "20", "--top-p", "0.9", "--no-sequential", "--json",
    )  # fmt: skip
    assert r.returncode == 0, r.stderr.decode()
    rows = json.loads(r.stdout)
    assert [row["n"] for row in rows] == [1, 3]
    assert all(set(row) == {"n", "batched_tokens_per_s"} and row["batched_tokens_per_s"] > 0 for row in rows)


def test_speed_with_a_reference_folder_missing_the_programs(tiny_gguf, tmp_path):
    r = run_ttc("speed", "--model", str(tiny_gguf), "--n", "1", "--tokens", "2", "--reference", str(tmp_path))
    one_line_error(r, 2, "--reference", "llama-batched")
