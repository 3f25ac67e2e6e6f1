"""Starting a real `ttc serve` on 127.0.0.1 (a subprocess on a free port) for the serve tests and benchmark."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m ttc serve ARGS` on a free port, its stderr in a file."""

    def __init__(self, *args: str, key: str | None = None, host: str = "127.0.0.1", log: Path | None = None):
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.key = key
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        env.pop("TTC_DEBUG", None)
        env.pop("TTC_API_KEY", None)
        cmd = [sys.executable, "-m", "ttc", "serve", "--host", host, "--port", str(self.port), *args]
        if key:
            cmd += ["--api-key", key]
        self.log_path = log or Path(os.environ.get("TMPDIR", "/tmp")) / f"ttc-serve-{self.port}.log"
        self.log = open(self.log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.log, cwd=str(REPO), env=env)
        self.wait_ready()

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def wait_ready(self, timeout: float = 60) -> None:
        end = time.time() + timeout
        while time.time() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"ttc serve exited ({self.proc.returncode}): {self.stderr()}")
            try:
                if httpx.get(self.base + "/health", headers=self.headers, timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError(f"ttc serve did not come up: {self.stderr()}")

    def health(self) -> dict:
        return httpx.get(self.base + "/health", headers=self.headers, timeout=30).json()

    def stderr(self) -> str:
        self.log.flush()
        return self.log_path.read_text()

    def stop(self, timeout: float = 60) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode
