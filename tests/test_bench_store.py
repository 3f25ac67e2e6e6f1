"""The bench's result store: samples.jsonl only ever holds whole lines (after a kill, after a full disk), a
resume loads exactly what is there, and runs are never mixed by accident."""

from __future__ import annotations

import errno
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ttc.bench.store import BENCH_KEYS, SAMPLES, bench_record, line_of, open_store, record_key, result_of
from ttc.errors import TTCRuntimeError, UsageError
from ttc.record import Candidate, Result, Spent

CONFIG = {"dataset": {"path": "/d.jsonl", "sha256": "abc"}, "strategies": ["majority"], "budgets": [1, 4], "seed": 0}


def result(budget: int = 1, text: str = "x") -> Result:
    return Result(
        answer="5", strategy="majority", budget=budget, problem="2+3",
        candidates=[Candidate(answer="5", text=text, steps=[text], tokens=3)],
        spent=Spent(generations=budget, tokens_generated=3), model="m.gguf", prm=None, seed=0,
        details={"votes": {"5": 1}}, config={"preset": "p", "options": {}},
    )  # fmt: skip


def rec(pid: str, budget: int = 1, text: str = "x") -> dict:
    bench = {"derived_from": None}
    return bench_record(result(budget, text), id=pid, gold=5, gold_answer="5", correct=True, difficulty={}, bench=bench)


def lines(d: Path) -> list[dict]:
    return [json.loads(x) for x in (d / SAMPLES).read_text().splitlines()]


def test_a_line_is_the_result_record_plus_the_bench_keys():
    d = json.loads(line_of(rec("p1", budget=4)))
    assert {k: v for k, v in d.items() if k not in BENCH_KEYS} == json.loads(json.dumps(result(4).to_dict()))
    assert (d["id"], d["gold"], d["gold_answer"], d["correct"]) == ("p1", 5, "5", True)
    assert result_of(d) == result(4)


def test_a_partial_last_line_is_cut_and_whole_lines_are_kept(tmp_path):
    s = open_store(tmp_path, CONFIG, resume=False, force=False)
    for i in range(3):
        s.append(rec(f"p{i}"))
    s.close()
    with open(tmp_path / SAMPLES, "ab") as f:
        f.write(line_of(rec("p3"))[:25])  # what a kill in the middle of a write could leave
    s = open_store(tmp_path, CONFIG, resume=True, force=False)
    assert any("partial last line" in n for n in s.notes)
    assert [r["id"] for r in s.rows] == ["p0", "p1", "p2"] and s.done(("p2", "majority", 1))
    s.append(rec("p3"))
    s.close()
    assert [r["id"] for r in lines(tmp_path)] == ["p0", "p1", "p2", "p3"]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(1, 6), cut=st.floats(0, 1), texts=st.lists(st.text(max_size=30), min_size=6, max_size=6))
def test_any_kill_point_leaves_a_prefix_of_whole_records(tmp_path_factory, n, cut, texts):
    d = tmp_path_factory.mktemp("store")
    data = b"".join(line_of(rec(f"p{i}", text=texts[i])) for i in range(n))
    k = int(cut * len(data))
    (d / SAMPLES).write_bytes(data[:k])
    (d / "config.json").write_text(json.dumps({"config": CONFIG}))
    s = open_store(d, CONFIG, resume=True, force=False)
    s.close()
    whole = data[:k].count(b"\n")
    assert [r["id"] for r in s.rows] == [f"p{i}" for i in range(whole)]
    assert (d / SAMPLES).read_bytes() == b"".join(data.splitlines(keepends=True)[:whole])


class FullDisk:
    """A raw file whose writes fail with ENOSPC after `room` bytes, writing part of the data first."""

    def __init__(self, real, room: int):
        self.real, self.room = real, room

    def write(self, data) -> int:
        if self.room <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = self.real.write(bytes(data[: self.room]))
        self.room -= n
        return n

    def truncate(self, size):
        return self.real.truncate(size)

    def fileno(self):
        return self.real.fileno()

    def close(self):
        self.real.close()


def test_a_full_disk_is_a_one_line_runtime_error_and_leaves_only_whole_lines(tmp_path):
    s = open_store(tmp_path, CONFIG, resume=False, force=False)
    s.append(rec("p0"))
    s._file = FullDisk(s._file, room=40)  # the next line gets 40 bytes in, then the disk is full
    with pytest.raises(TTCRuntimeError, match="disk is full.*--resume") as e:
        s.append(rec("p1"))
    assert "\n" not in str(e.value)
    s.close()
    assert [r["id"] for r in lines(tmp_path)] == ["p0"]
    assert (tmp_path / SAMPLES).read_bytes().endswith(b"\n")
    assert not s.done(("p1", "majority", 1))


def test_a_fresh_run_into_a_nonempty_folder_is_refused_and_force_starts_over(tmp_path):
    s = open_store(tmp_path, CONFIG, resume=False, force=False)
    s.append(rec("p0"))
    s.close()
    with pytest.raises(UsageError, match="not empty.*--resume.*--force"):
        open_store(tmp_path, CONFIG, resume=False, force=False)
    s = open_store(tmp_path, CONFIG, resume=False, force=True)
    s.close()
    assert s.rows == [] and (tmp_path / SAMPLES).read_bytes() == b""


def test_resume_with_a_changed_config_is_refused_naming_what_changed_unless_forced(tmp_path):
    s = open_store(tmp_path, CONFIG, resume=False, force=False)
    s.append(rec("p0"))
    s.close()
    changed = {**CONFIG, "budgets": [1, 4, 16]}
    with pytest.raises(UsageError, match=r"budgets: \[1, 4\] -> \[1, 4, 16\].*--force"):
        open_store(tmp_path, changed, resume=True, force=False)
    moved = {**CONFIG, "dataset": {"path": "/elsewhere/d.jsonl", "sha256": "abc"}}
    open_store(tmp_path, moved, resume=True, force=False).close()  # the same content elsewhere is the same run
    s = open_store(tmp_path, changed, resume=True, force=True)
    s.close()
    assert [r["id"] for r in s.rows] == ["p0"]  # forced: kept, and the new config is recorded
    assert json.loads((tmp_path / "config.json").read_text())["config"]["budgets"] == [1, 4, 16]


def test_resume_into_a_folder_without_a_config_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="no config.json"):
        open_store(tmp_path, CONFIG, resume=True, force=False)


def test_out_that_is_a_file_or_cannot_be_created_is_a_usage_error(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(UsageError, match="is a file"):
        open_store(f, CONFIG, resume=False, force=False)
    with pytest.raises(UsageError, match="cannot create"):
        open_store(f / "sub", CONFIG, resume=False, force=False)


def test_stored_records_are_read_back_by_key(tmp_path):
    s = open_store(tmp_path, CONFIG, resume=False, force=False)
    for b in (4, 1):
        s.append(rec("p0", budget=b, text=f"t{b}"))
    assert s.read(("p0", "majority", 4))["candidates"][0]["text"] == "t4"
    assert record_key(s.read(("p0", "majority", 1))) == ("p0", "majority", 1)
    s.close()


def test_one_writer_per_folder(tmp_path):
    """A second bench on a folder another is writing to is refused before it writes anything."""
    from ttc.bench.store import open_store

    first = open_store(tmp_path / "out", {"a": 1}, resume=False, force=False)
    with pytest.raises(UsageError, match="another ttc bench is writing there"):
        open_store(tmp_path / "out", {"a": 1}, resume=True, force=False)
    first.close()
    open_store(tmp_path / "out", {"a": 1}, resume=True, force=False).close()  # free again once closed


def test_a_policy_added_to_the_preset_changes_only_auto_runs(tmp_path):
    base = {"dataset": {"sha256": "x"}, "strategies": ["majority"], "preset": {"name": "p", "policy": None}}
    with_policy = {**base, "preset": {"name": "p", "policy": "policies/p.yaml"}}
    open_store(tmp_path / "a", base, resume=False, force=False).close()
    open_store(tmp_path / "a", with_policy, resume=True, force=False).close()  # majority never reads it
    auto = {**base, "strategies": ["auto"]}
    open_store(tmp_path / "b", auto, resume=False, force=False).close()
    with pytest.raises(UsageError, match="preset.policy"):
        open_store(tmp_path / "b", {**auto, "preset": with_policy["preset"]}, resume=True, force=False)
