"""The resumable result store: a bench's output folder.

    DIR/config.json      the run config (dataset hash, strategies, budgets, limit, seed, preset, model,
                         sampling overrides); a resume with a different one is refused unless forced
    DIR/samples.jsonl    one line per (problem, strategy, budget): the result record plus id, gold, correct
    DIR/summary.json     written by `summary` at the end
    DIR/summary.csv

Each line is written with one write() of the whole line as soon as it is known, so a kill leaves at most
one partial last line, which `open_store(resume=True)` cuts off. A failed write (a full disk) is undone by
truncating back to the last whole line before the error is raised, so samples.jsonl only ever holds whole
lines. The file is fsync'd at most once a second and on close: a kill loses nothing written, an OS crash at
most the last second.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import TTCRuntimeError, UsageError
from ..record import Result

SAMPLES = "samples.jsonl"
CONFIG = "config.json"
OUR_FILES = (SAMPLES, CONFIG, "summary.json", "summary.csv", "accuracy_vs_budget.png")
BENCH_KEYS = ("id", "gold", "gold_answer", "correct", "difficulty", "bench")  # added to the result record
FSYNC_INTERVAL_S = 1.0
LOCK = ".ttc-bench.lock"

Key = tuple[str, str, int]  # (problem id, strategy, budget)


def record_key(rec: dict) -> Key:
    return (str(rec["id"]), str(rec["strategy"]), int(rec["budget"]))


def result_of(rec: dict) -> Result:
    """The result record inside a samples line (the line minus the bench's own keys)."""
    return Result.from_dict({k: v for k, v in rec.items() if k not in BENCH_KEYS})


def summary_row(rec: dict) -> dict:
    """The few fields of a samples line that summaries use (kept in memory instead of whole records)."""
    spent = rec.get("spent") or {}
    if not isinstance(spent, dict):  # a Spent not yet serialized (see `line_of`)
        spent = vars(spent)
    return {
        "id": str(rec["id"]),
        "strategy": rec["strategy"],
        "budget": int(rec["budget"]),
        "correct": bool(rec.get("correct")),
        "tokens": spent.get("tokens_generated", 0),
        "wall_s": spent.get("wall_s", 0.0),
        "generations": spent.get("generations", 0.0),
        "flops": spent.get("flops", 0.0),
        "difficulty": rec.get("difficulty") or {},
        "derived": (rec.get("bench") or {}).get("derived_from") is not None,
    }


def bench_record(result: Result, **bench_keys: Any) -> dict:
    """A samples line: the result record's fields plus the bench's own keys (values may still be dataclasses;
    `line_of` serializes them as `Result.to_dict` would, without its deep copy, which cost more than the
    engine on small models)."""
    rec = dict(vars(result))
    rec.update(bench_keys)
    return rec


def line_of(rec: dict) -> bytes:
    return (json.dumps(rec, ensure_ascii=False, default=vars) + "\n").encode("utf-8")


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _describe(value: Any) -> str:
    text = json.dumps(value, sort_keys=True)
    return text if len(text) <= 40 else text[:37] + "..."


def config_differences(old: dict, new: dict) -> list[str]:
    """'key.subkey: old -> new' for every value that differs (configs as JSON gives them back)."""
    out = []
    for k in sorted(set(old) | set(new)):
        a, b = old.get(k), new.get(k)
        if a == b:
            continue
        if isinstance(a, dict) and isinstance(b, dict):
            out += [f"{k}.{d}" for d in config_differences(a, b)]
        else:
            out.append(f"{k}: {_describe(a)} -> {_describe(b)}")
    return out


@dataclass
class Store:
    dir: Path
    config: dict
    rows: list[dict] = field(default_factory=list)  # summary_row of every line in the file
    offsets: dict[Key, int] = field(default_factory=dict)  # where each line starts, to re-read a record
    notes: list[str] = field(default_factory=list)  # what opening found and did (a repaired last line)
    _file: Any = None  # raw (unbuffered) binary file, opened for append
    _size: int = 0  # bytes of whole lines in the file
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _last_sync: float = 0.0
    _dir_lock: Any = None  # the open lock file: one writer per folder

    @property
    def samples_path(self) -> Path:
        return self.dir / SAMPLES

    def done(self, key: Key) -> bool:
        return key in self.offsets

    def append(self, rec: dict) -> None:
        """Write one record as one whole line, or nothing: a failed write is cut back off the file."""
        data = line_of(rec)
        key, row = record_key(rec), summary_row(rec)
        with self._lock:
            start = self._size
            try:
                view, written = memoryview(data), 0
                while written < len(data):
                    n = self._file.write(view[written:])
                    if not n:
                        raise OSError(errno.EIO, "the write made no progress")
                    written += n
            except OSError as e:
                self._undo(start)
                raise TTCRuntimeError(_write_error(self.samples_path, e)) from None
            self._size = start + len(data)
            self.offsets[key] = start
            self.rows.append(row)
            now = time.monotonic()
            if now - self._last_sync >= FSYNC_INTERVAL_S:
                self._sync()
                self._last_sync = now

    def read(self, key: Key) -> dict:
        """A stored line, parsed (to derive smaller budgets from a stored larger one)."""
        with open(self.samples_path, "rb") as f:
            f.seek(self.offsets[key])
            return json.loads(f.readline())

    def close(self) -> None:
        if self._file is not None:
            try:
                self._sync()
            finally:
                self._file.close()
                self._file = None
        if self._dir_lock is not None:
            self._dir_lock.close()  # releases the folder's lock
            self._dir_lock = None

    def _sync(self) -> None:
        try:
            os.fsync(self._file.fileno())
        except (OSError, ValueError, AttributeError):  # a file that cannot be synced (a pipe, a test double)
            pass

    def _undo(self, size: int) -> None:
        try:
            self._file.truncate(size)
        except (OSError, ValueError, AttributeError):
            os.truncate(self.samples_path, size)


def _write_error(path: Path, e: OSError) -> str:
    if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        why = {errno.ENOSPC: "the disk is full", errno.EDQUOT: "the disk quota is used up"}.get(
            e.errno, "the file size limit was reached"
        )
        return f"{path}: {why}; it keeps only whole records: free space, then run again with --resume"
    return f"{path}: cannot write ({e.strerror or e}); it keeps only whole records: fix it, then --resume"


def open_store(out: str | Path, config: dict, resume: bool, force: bool) -> Store:
    """Open DIR for a run: refuse to mix runs by accident, repair a killed run's last line, load what is done."""
    d = Path(out)
    if d.exists() and not d.is_dir():
        raise UsageError(f"--out {d} is a file, not a folder; choose a folder")
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise UsageError(f"--out {d}: cannot create the folder ({e.strerror}); choose another") from None
    notes: list[str] = []
    lock = _lock_dir(d)
    try:
        try:
            has_content = any(p.name != LOCK for p in d.iterdir())
        except OSError as e:
            raise UsageError(f"--out {d}: cannot read the folder ({e.strerror}); choose another") from None
        if not resume and has_content:
            if not force:
                raise UsageError(
                    f"--out {d} is not empty: pass --resume to continue the run there, or --force to start over"
                )
            for name in OUR_FILES:
                (d / name).unlink(missing_ok=True)
        if resume and has_content and not force:
            _check_same_config(d, config)
        _write_json(d / CONFIG, {"config": config, "hash": config_hash(config)})
        store = Store(d, config, notes=notes)
        store._dir_lock = lock
        path = store.samples_path
        try:
            store._file = open(path, "ab", buffering=0)
        except OSError as e:
            raise UsageError(f"--out {d}: cannot write {SAMPLES} ({e.strerror}); choose another folder") from None
        store._size = _repair(path, notes)
        _load(store)
        store._last_sync = time.monotonic()
        return store
    except BaseException:
        if lock is not None:
            lock.close()
        raise


def read_run(d: Path) -> Store:
    """A run's folder, read only (`ttc bench DIR`): its config and the summary rows of samples.jsonl, with the
    folder locked until the store is closed, so that no bench appends while its summaries are rewritten."""
    try:
        config = json.loads((d / CONFIG).read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"{d}: {CONFIG} is missing or unreadable, so this is not a bench run folder") from None
    try:
        lock = _lock_dir(d)
    except OSError:  # a read-only folder: nothing can write there, so nothing to keep out
        lock = None
    store = Store(d, config if isinstance(config, dict) else {})
    store._dir_lock = lock
    try:
        _load(store)
    except OSError as e:
        store.close()
        raise UsageError(f"{store.samples_path}: cannot read ({e.strerror or e})") from None
    return store


def _lock_dir(d: Path):
    """Hold an exclusive lock on DIR for this run: two benches appending to one samples.jsonl would repeat
    records. Released when the store closes or the process dies (kill -9 included)."""
    try:
        import fcntl
    except ImportError:  # not on POSIX: no lock, as before
        return None
    f = open(d / LOCK, "a+b")
    try:
        fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise UsageError(
            f"--out {d}: another ttc bench is writing there; wait for it or choose another folder"
        ) from None
    return f


def _check_same_config(d: Path, config: dict) -> None:
    cfg_path = d / CONFIG
    if not cfg_path.is_file():
        raise UsageError(f"--resume: {d} holds no {CONFIG}, so not a bench run; pass --force to use it anyway")
    try:
        old = json.loads(cfg_path.read_text(encoding="utf-8"))["config"]
    except (OSError, ValueError, KeyError, TypeError):
        raise UsageError(f"--resume: {cfg_path} is unreadable; pass --force to resume anyway") from None
    diffs = config_differences(_comparable(old), _comparable(config))
    if diffs:
        raise UsageError(
            f"--resume: the run in {d} used another config ({'; '.join(diffs[:4])}); "
            "pass --force to resume anyway, or choose a new --out"
        )


def _comparable(config: dict) -> dict:
    """The config minus what does not change the records: the dataset's path (its content hash counts), and
    the preset's compute-optimal policy when no strategy is `auto` (only auto reads it)."""
    out = dict(config)
    if isinstance(out.get("dataset"), dict):
        out["dataset"] = {k: v for k, v in out["dataset"].items() if k != "path"}
    strategies = out.get("strategies") or []
    if isinstance(out.get("preset"), dict) and not any(str(s).split(":")[0] == "auto" for s in strategies):
        out["preset"] = {k: v for k, v in out["preset"].items() if k != "policy"}
    return out


def _repair(path: Path, notes: list[str]) -> int:
    """Cut a partial last line (left by a kill) off the file; return the size of its whole lines."""
    size = path.stat().st_size
    if size == 0:
        return 0
    with open(path, "rb") as f:
        pos, tail = size, b""
        while pos > 0:  # find the last newline, reading backwards in blocks
            step = min(65536, pos)
            pos -= step
            f.seek(pos)
            tail = f.read(step) + tail
            i = tail.rfind(b"\n")
            if i >= 0:
                keep = pos + i + 1
                break
        else:
            keep = 0
    if keep < size:
        os.truncate(path, keep)
        notes.append(f"{path}: cut off a partial last line ({size - keep} bytes) left by an interrupted run")
    return keep


def _load(store: Store) -> None:
    with open(store.samples_path, "rb") as f:
        offset = 0
        for line_no, line in enumerate(f, start=1):
            start, offset = offset, offset + len(line)
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                key = record_key(rec)
                row = summary_row(rec)
            except (ValueError, KeyError, TypeError):
                store.notes.append(f"{store.samples_path}:{line_no}: not a bench record; ignored (it will be rerun)")
                continue
            if key in store.offsets:
                store.notes.append(f"{store.samples_path}:{line_no}: a second record for {key}; ignored")
                continue
            store.offsets[key] = start
            store.rows.append(row)


def _write_json(path: Path, obj: Any) -> None:
    """Write a JSON file whole or not at all (a temporary file renamed over it)."""
    write_atomic(path, (json.dumps(obj, indent=2, ensure_ascii=False) + "\n").encode("utf-8"))


def write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if e.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
            raise TTCRuntimeError(f"{path}: the disk is full; free space, then run again with --resume") from None
        kind = UsageError if isinstance(e, PermissionError) else TTCRuntimeError
        raise kind(f"{path}: cannot write ({e.strerror or e}); choose another --out") from None
