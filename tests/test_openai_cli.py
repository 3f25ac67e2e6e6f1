"""The command line against the built-in pair on llama-cpp-python's server (loopback): where the PRM runs
(--prm-base-url, and the in-process fallback for a PRM the policy's server does not list), and the
confidence strategies on the server's top-k log-probabilities."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import REPO, one_line_error
from test_openai_backend import EASY, run_ttc, shipped_pair_servers

pytest.importorskip("llama_cpp.server", reason="needs llama-cpp-python[server]")

builtin_servers = pytest.fixture(scope="module", name="builtin_servers")(shipped_pair_servers)


def test_a_remote_policy_with_the_builtin_prm_runs_it_in_process_with_one_note(builtin_servers):
    policy_url, prm_url = builtin_servers[0].url, builtin_servers[1].url
    solve = ["solve", "37+48-19", "-s", "weighted-best-of-n", "-b", "8", "--seed", "1", "--json"]
    remote = ["--backend", "openai", "--base-url", policy_url]
    r = run_ttc(*solve, *remote)  # the user's first try: the policy's server lists only the policy
    assert r.returncode == 0, r.stderr.decode()
    notes = r.stderr.decode().strip().splitlines()
    assert len(notes) == 1 and "does not list the PRM 'builtin:tiny-arith-prm.gguf'" in notes[0], notes
    assert "running it in-process" in notes[0] and "--prm-base-url" in notes[0]
    here = json.loads(r.stdout)
    assert here["spent"]["prm_tokens"] > 0 and all(c["scores"] for c in here["candidates"])
    served = run_ttc(*solve, *remote, "--prm-base-url", prm_url)  # the PRM on its own server: same scores
    assert served.returncode == 0 and served.stderr == b"", served.stderr.decode()
    there = json.loads(served.stdout)
    assert there["answer"] == here["answer"]
    for a, b in zip(there["candidates"], here["candidates"]):
        # two llama.cpp contexts laid out differently (server, in-process): 1.1e-4 seen on one machine's build
        assert a["text"] == b["text"] and np.allclose(a["scores"], b["scores"], atol=5e-4)
    quiet = run_ttc(*solve, *remote, "--prm-base-url", "in-process")
    assert quiet.returncode == 0 and quiet.stderr == b"" and json.loads(quiet.stdout)["answer"] == here["answer"]
    # a local policy with the PRM on a server
    mixed = run_ttc(*solve, "--threads", "1", "--prm-base-url", prm_url)
    assert mixed.returncode == 0 and mixed.stderr == b"", mixed.stderr.decode()
    assert json.loads(mixed.stdout)["spent"]["prm_tokens"] > 0


def test_a_prm_base_url_that_does_not_serve_the_prm_or_is_no_url_is_one_line(builtin_servers, tmp_path):
    policy_url = builtin_servers[0].url
    solve = ["solve", "37+48-19", "-s", "weighted-best-of-n", "-b", "4", "--backend", "openai"]
    solve += ["--base-url", policy_url]
    one_line_error(run_ttc(*solve, "--prm-base-url", policy_url), 2, "not the PRM", "--prm-base-url in-process")
    one_line_error(run_ttc(*solve, "--prm-base-url", "ftp://x"), 2, "--prm-base-url takes an http(s) URL")
    bench = ["bench", str(REPO / "ttc" / "data" / "arith500.jsonl"), "--limit", "1", "--out", str(tmp_path / "b")]
    one_line_error(run_ttc(*bench, "--base-url", policy_url, "--prm-base-url", "nope"), 2, "'nope'")
    assert not (tmp_path / "b").exists()


@pytest.mark.parametrize("name", ["deepconf", "deepconf:mode=online", "weighted-best-of-n:weight=confidence"])
def test_confidence_strategies_run_through_the_server_on_its_top_k_log_probabilities(builtin_servers, name):
    """`ttc solve` end to end on llama-cpp-python's server, which cuts a stream short for any other request (its
    default, kept here): the streams, and the /tokenize that counts their prompt, go one at a time."""
    stdin = "".join(p + "\n" for p in EASY[:3]).encode()
    remote = ["--backend", "openai", "--base-url", builtin_servers[0].url, "--prm-base-url", "in-process"]
    r = run_ttc("solve", "-", "-s", name, "-b", "8", "--seed", "2", "--json", *remote, stdin=stdin)
    assert r.returncode == 0 and r.stderr == b"", r.stderr.decode()
    recs = [json.loads(x) for x in r.stdout.decode().splitlines()]
    from ttc.builtin.arith import evaluate

    assert sum(str(evaluate(p)) == rec["answer"] for p, rec in zip(EASY, recs)) >= 2, [x["answer"] for x in recs]
    for rec in recs:
        assert 0 < rec["spent"]["generations"] <= 8 and rec["spent"]["prm_tokens"] == 0
        assert all(c.get("trace_scores") for c in rec["candidates"])
        if "online" in name:
            d = rec["details"]
            assert d["launched"] <= 8 and d["killed"] <= d["launched"] and d["saved_tokens_estimate"] >= 0


def test_self_certainty_through_a_server_says_it_needs_full_logits_rows(builtin_servers):
    r = run_ttc("solve", "12+7", "-s", "self-certainty", "-b", "4", "--backend", "openai", "--base-url",
                builtin_servers[0].url)  # fmt: skip
    one_line_error(r, 2, "self-certainty needs full logits rows")
