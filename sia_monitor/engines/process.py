"""Start an engine's server as a child process for the duration of a block (tests, benchmarks).

Why one helper: llama-server and vLLM are both started the same way: a free loopback port, a readiness URL
polled until it answers 200 (or the process dies, whose last log lines are then the error), and a terminate
that escalates to kill.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator

import httpx2 as httpx

from sia_monitor.errors import SIAError


def free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def server_process(name: str, command: Callable[[int], list[str]], ready_path: str, ready_timeout_s: float,
                   env: dict[str, str] | None = None, port: int | None = None) -> Iterator[str]:
    """Run `command(port)` until the block ends; yield `http://127.0.0.1:PORT` once `ready_path` answers 200."""
    port = port or free_loopback_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(command(port), stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})})
        try:
            deadline = time.monotonic() + ready_timeout_s
            while True:
                if process.poll() is not None:
                    log.seek(0)
                    tail = log.read().decode(errors="replace").strip().splitlines()[-5:]
                    raise SIAError(f"{name} exited with {process.returncode}: {' / '.join(tail)}")
                try:
                    if httpx.get(url + ready_path, timeout=2.0).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise SIAError(f"{name} did not become ready within {ready_timeout_s:.0f} s.")
                time.sleep(0.25)
            yield url
        finally:
            process.terminate()
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
