"""The chat-application examples against a real server: the `openai` client script and the Open WebUI Pipe."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from sia_monitor.backends.in_process import Monitor
from sia_monitor.serve.app import create_app
from sia_monitor.serve.background import running_server

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
QUESTION = "What is 7 + 8? Think step by step."


@pytest.fixture(scope="module")
def server(smol: Monitor) -> Iterator[str]:
    with running_server(create_app(Monitor(smol.loaded, segmenter="sentence"))) as base:
        yield base


def test_the_openai_client_example_prints_steps_and_the_answer(server: str) -> None:
    result = subprocess.run([sys.executable, str(EXAMPLES / "openai_client.py"), QUESTION], capture_output=True,
                            text=True, timeout=300, env={**os.environ, "SIA_MONITOR_URL": server + "/v1",
                                                         "MAX_TOKENS": "32"}, check=False)
    assert result.returncode == 0, result.stderr
    assert "[step 1 · " in result.stdout and "\nanswer " in result.stdout


def test_the_open_webui_pipe_turns_sia_fields_into_status_lines(server: str, smol: Monitor) -> None:
    spec = importlib.util.spec_from_file_location("open_webui_pipe", EXAMPLES / "open_webui_pipe.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    pipe = module.Pipe()
    pipe.valves.base_url, pipe.valves.model, pipe.valves.max_tokens = server + "/v1", smol.model_id, 32
    statuses: list[dict[str, Any]] = []

    async def emit(event: dict[str, Any]) -> None:
        statuses.append(event)

    async def chat() -> str:  # Open WebUI sends the whole conversation; the pipe answers its last question
        body = {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello!"},
                             {"role": "user", "content": QUESTION}]}
        return "".join([piece async for piece in pipe.pipe(body, __event_emitter__=emit)])

    text = asyncio.run(chat())
    assert text.strip()
    assert all(event["type"] == "status" for event in statuses) and len(statuses) >= 2
    assert statuses[0]["data"]["description"].startswith("step 1 · P(correct) ")
    assert statuses[-1]["data"]["description"].startswith("answer ") and statuses[-1]["data"]["done"]
