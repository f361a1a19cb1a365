"""A real ``rtseg serve`` process for the server tests: started on a free loopback port with its own temporary folder,
its log captured, stopped (SIGTERM, then SIGKILL) when the test is done. Only loopback addresses are ever used."""
from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from conftest import ROOT

HOST = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def png_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


def scene(index: int = 0, size=(360, 480)) -> tuple[np.ndarray, np.ndarray]:
    from rtseg.data.synthetic import SyntheticScenes

    return SyntheticScenes(num_samples=index + 1, size=size, split="test", seed=7)[index]


class ServerProcess:
    """``python -m rtseg.cli serve ARGS`` on a free port; ``url``, ``tmpdir`` (its TMPDIR), ``log()`` (stdout + stderr)."""

    def __init__(self, args: list[str], workdir: Path, startup_timeout: float = 180.0):
        self.port = free_port()
        self.url = f"http://{HOST}:{self.port}"
        self.tmpdir = workdir / "server-tmp"
        self.tmpdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / "server.log"
        env = dict(os.environ, TMPDIR=str(self.tmpdir), PYTHONPATH=os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
                   PYTHONUNBUFFERED="1")
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "rtseg.cli", "serve", "--host", HOST, "--port", str(self.port), *args],
                                     stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=workdir)
        self._wait_ready(startup_timeout)

    def _wait_ready(self, timeout: float) -> None:
        import httpx

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rtseg serve exited with {self.proc.returncode} before answering:\n{self.log()}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"rtseg serve did not answer /health within {timeout:.0f} s:\n{self.log()}")

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text()

    def temp_files(self) -> list[str]:
        return sorted(str(p.relative_to(self.tmpdir)) for p in self.tmpdir.rglob("*"))

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM, and the exit status once it has drained."""
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout)
        finally:
            self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if not self._log.closed:
            self._log.close()


def raw_request(port: int, head: bytes, body_parts: list[bytes] = (), pause: float = 0.0, read: bool = True, timeout: float = 30.0) -> bytes:
    """Send a hand-written HTTP request over a socket (parts with pauses between them), return what came back."""
    with socket.create_connection((HOST, port), timeout=timeout) as s:
        s.sendall(head)
        for part in body_parts:
            time.sleep(pause)
            try:
                s.sendall(part)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered and closed before the body was all sent: read its answer
        if not read:
            return b""
        chunks = []
        while True:
            try:
                data = s.recv(65536)
            except (ConnectionResetError, socket.timeout):
                break
            if not data:
                break
            chunks.append(data)
        return b"".join(chunks)
