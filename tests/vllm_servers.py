"""Start and stop the vLLM servers of the vLLM test tier (tests/test_vllm.py), for `.ci/run` and the tests.

    python tests/vllm_servers.py up DIR [--python PY]    export the built-in pair to DIR/hf, start one vLLM
                                                          server for the policy and one for the PRM on
                                                          loopback, wait until both answer, write DIR/servers.json
    python tests/vllm_servers.py down DIR                 stop every server whose pid file is in DIR

PY is the Python of an environment with vLLM (`.ci/run` makes `.venv-vllm`: vLLM's pins stay out of the test
environment). The tests find the servers through TTC_VLLM=DIR. Each server runs in its own process group and
writes its pid to DIR/NAME.pid, so `down` (a trap in .ci/run) stops whatever is still running, also a server a
test restarted. vLLM writes its caches into DIR, not ~/.cache or /tmp.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROLES = {"policy": "tiny-arith-policy", "prm": "tiny-arith-prm"}  # role -> served model name
READY_S = 600.0  # vLLM takes 90-125 s to start on 2 cores, more while the other server starts beside it


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env(run_dir: Path) -> dict[str, str]:
    cache = run_dir / "cache"
    for sub in ("vllm", "inductor", "tmp"):
        (cache / sub).mkdir(parents=True, exist_ok=True)
    return {
        **os.environ,
        "VLLM_HOST_IP": "127.0.0.1",  # else vLLM's internal queue binds the machine's interface address
        "VLLM_CPU_KVCACHE_SPACE": "1",  # GiB of KV cache per server
        "HF_HUB_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
        "VLLM_CACHE_ROOT": str(cache / "vllm"),
        "TORCHINDUCTOR_CACHE_DIR": str(cache / "inductor"),
        "TMPDIR": str(cache / "tmp"),
    }


def start(python: str, model_dir: Path, name: str, port: int, run_dir: Path) -> int:
    """Start one server (not waiting for it); its pid goes to run_dir/name.pid."""
    cmd = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir)]
    cmd += ["--served-model-name", name, "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--max-model-len", "1024", "--dtype", "float32", "--max-logprobs", "20"]
    # usage says how many prompt tokens the prefix cache served; blocks of 32 tokens (the least the CPU kernels
    # take; with the default nothing of the built-in pair's short prompts was cached)
    cmd += ["--enable-prompt-tokens-details", "--block-size", "32"]
    # No prompt is split across steps: vllm-cpu 0.32's engine dies ("CPU Generator does not use offset") when a
    # request with its own seed (ttc sends one per sample) is prefilled in part, which happens once a step's
    # 2048-token budget is full (a bench at --concurrency 16 x 8 samples) and kills the whole server
    cmd += ["--no-enable-chunked-prefill"]
    log = open(run_dir / f"{name}.log", "ab")  # noqa: SIM115 - the server keeps it
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, env=server_env(run_dir), start_new_session=True, cwd=run_dir
    )
    (run_dir / f"{name}.pid").write_text(str(proc.pid))
    return proc.pid


def wait_ready(url: str, pid: int, log: Path, timeout_s: float = READY_S) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            tail = log.read_text(errors="replace").splitlines()[-15:] if log.exists() else []
            raise SystemExit(f"vLLM server {pid} exited while starting:\n" + "\n".join(tail))
        try:
            if httpx.get(url + "/models", timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(2)
    raise SystemExit(f"vLLM server at {url} was not ready after {timeout_s:.0f} s (log: {log})")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child counts as gone
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return True


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop(pid: int, grace_s: float = 20.0) -> None:
    """SIGTERM to the server's process group (API server, engine core, worker), SIGKILL after grace_s; returns
    once no process of the group is left (a straggler could still hold the port a restart listens on)."""
    for sig, wait in ((signal.SIGTERM, grace_s), (signal.SIGKILL, 10.0)):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if not alive(pid):
                try:
                    os.killpg(pid, signal.SIGKILL)  # stragglers of the group
                except ProcessLookupError:
                    return
                while group_alive(pid) and time.monotonic() < deadline:
                    time.sleep(0.2)
                return
            time.sleep(0.2)


def up(run_dir: Path, python: str) -> dict:
    run_dir.mkdir(parents=True, exist_ok=True)
    hf = run_dir / "hf"
    subprocess.run([sys.executable, "-m", "ttc.train", "export-hf", "--out", str(hf)], check=True)
    servers, t0 = {}, time.monotonic()
    for role, name in ROLES.items():
        port = free_port()
        pid = start(python, hf / role, name, port, run_dir)
        servers[role] = {"name": name, "url": f"http://127.0.0.1:{port}/v1", "port": port, "pid": pid}
    for s in servers.values():
        wait_ready(s["url"], s["pid"], run_dir / f"{s['name']}.log")
    info = {"python": python, "hf": str(hf), "ready_s": round(time.monotonic() - t0, 1), **servers}
    (run_dir / "servers.json").write_text(json.dumps(info, indent=1))
    return info


def down(run_dir: Path) -> None:
    for pidfile in sorted(run_dir.glob("*.pid")):
        try:
            pid = int(pidfile.read_text().strip())
        except ValueError:
            continue
        stop(pid)
        pidfile.unlink(missing_ok=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("what", choices=["up", "down"])
    ap.add_argument("dir", type=Path)
    ap.add_argument("--python", default=sys.executable, help="a Python with vLLM installed")
    args = ap.parse_args()
    if args.what == "up":
        try:
            info = up(args.dir.resolve(), os.path.abspath(args.python))
        except BaseException:
            down(args.dir.resolve())
            raise
        print(f"vLLM servers ready in {info['ready_s']} s: policy {info['policy']['url']}, prm {info['prm']['url']}")
    else:
        down(args.dir.resolve())


if __name__ == "__main__":
    main()
