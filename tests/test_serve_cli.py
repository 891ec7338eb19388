"""`sia-monitor serve` as a user starts it: a real process on a loopback port, refused bad input in one line."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx2 as httpx
import openai
import pytest

from sia_monitor.cli import main
from sia_monitor.client import SiaStep, SiaSummary, sia_of
from sia_monitor.serve.background import free_port


def test_serve_starts_answers_with_the_key_and_stops_on_sigint(tmp_path: Path) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("s3cret\n")
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "sia_monitor.cli", "serve", "--model", "smollm2-135m-instruct", "--port", str(port),
         "--api-key-file", str(key_file), "--steps", "sentence"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "SIA_MONITOR_THREADS": "1"})
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            assert time.monotonic() < deadline, "the server did not come up"
            try:
                if httpx.get(base + "/health", timeout=2).json()["auth"]:
                    break
            except httpx.TransportError:
                time.sleep(0.3)
        client = openai.OpenAI(base_url=base + "/v1", api_key="s3cret", max_retries=0, timeout=120)
        (model,) = client.models.list().data
        records = [sia_of(chunk) for chunk in client.chat.completions.create(
            model=model.id, messages=[{"role": "user", "content": "What is 7 + 8? Think step by step."}],
            max_tokens=32, stream=True)]
        steps = [r for r in records if isinstance(r, SiaStep)]
        (summary,) = [r for r in records if isinstance(r, SiaSummary)]
        assert summary.steps == len(steps) >= 1 and [s.step for s in steps] == list(range(1, len(steps) + 1))
        assert httpx.get(base + "/v1/models").status_code == 401  # no key
        assert httpx.get(base + "/").status_code == 200  # the chat page is public
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(30)
        finally:
            process.kill()
    assert process.returncode == 0
    assert "Serving smollm2-135m-instruct" in (process.stderr.read() if process.stderr else "")


@pytest.mark.parametrize("args, message", [
    (["--port", "70000"], "--port must be between"),
    (["--api-key-file", "/no/such/key"], "Cannot read --api-key-file"),
    (["--max-concurrency", "0"], "--max-concurrency must be at least 1"),
    (["--model", "/no/such/model"], "error:"),
    (["--steps", "regex"], "error:"),
])
def test_bad_serve_options_are_one_line_before_loading(args: list[str], message: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    started = time.monotonic()
    assert main(["serve", "--port", str(free_port()), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert time.monotonic() - started < 5  # refused before any model loads


def test_a_port_in_use_is_refused_before_loading(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        assert main(["serve", "--port", str(busy.getsockname()[1])]) == 2
    assert "Another server is there" in capsys.readouterr().err


def test_listening_beyond_loopback_without_a_key_warns(capsys: pytest.CaptureFixture[str]) -> None:
    # the warning comes before loading; a bad --model then ends the command, so nothing is served
    assert main(["serve", "--host", "0.0.0.0", "--port", str(free_port()), "--model", "/no/such/model"]) == 2
    warning, error = capsys.readouterr().err.strip().splitlines()
    assert "without an API key" in warning and error.startswith("error:")
