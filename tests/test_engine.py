"""The engine backend against a real llama.cpp `llama-server` on loopback, serving the SmolLM2 fixture GGUF.

What must hold on any x86 CPU: the engine runs the quantised weights (Q4_1 matmuls), the in-process backend
their bf16 dequantisation, so greedy texts diverge within a few tokens; the probes are therefore compared on
the same fixed prefixes (the in-process trace's own step ends), with a stated tolerance. Exactness is tested
where it exists: the same engine, twice.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx2 as httpx
import openai
import pytest
from test_serve import read_stream

from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.engine import EngineBackend
from sia_monitor.backends.in_process import Monitor
from sia_monitor.engines import connect
from sia_monitor.engines.base import GeneratedToken, StreamEnd
from sia_monitor.engines.llama_cpp import SERVER_VARIABLE, find_llama_server, llama_server
from sia_monitor.models import FIXTURE_MODEL, registry_gguf
from sia_monitor.probing.stopping import RowStopper
from sia_monitor.serve.app import create_app
from sia_monitor.serve.background import running_server
from sia_monitor.tasks.answers import NUMERIC, AnswerSpace
from sia_monitor.trajectory import MonitorEvent, Trajectory, read_trajectories

QUESTION = "A baker made 24 muffins and sold 9. How many are left?"
# Agreement with the in-process backend on one prefix: Q4_1 matmuls (with 8-bit activations) against bf16
# dequantised weights move an answer's probability by a few hundredths; the bound leaves room for other CPUs'
# kernels.
ENTROPY_TOLERANCE_BITS = 0.15


def _binary() -> Path:
    binary = find_llama_server()
    if binary is None:
        if os.environ.get(SERVER_VARIABLE):  # `make test` builds it and names it: missing is a failure there
            pytest.fail(f"${SERVER_VARIABLE} names {os.environ[SERVER_VARIABLE]}, which does not exist")
        pytest.skip("llama-server is not built (make llama-server)")
    return binary


@pytest.fixture(scope="module")
def engine_url() -> Iterator[str]:
    with llama_server(registry_gguf(FIXTURE_MODEL), slots=2, context=2048, threads=1, binary=_binary(),
                      alias=FIXTURE_MODEL) as url:
        yield url


@pytest.fixture(scope="module")
def engine(engine_url: str) -> EngineBackend:
    return EngineBackend(connect(engine_url))


def test_the_engine_names_the_model_as_the_in_process_backend_does(engine: EngineBackend, smol: Monitor) -> None:
    assert engine.model_id == smol.model_id == FIXTURE_MODEL
    assert engine.client.chat_prompt([{"role": "user", "content": QUESTION}]) == smol.tokenizer.apply_chat_template(
        [{"role": "user", "content": QUESTION}], add_generation_prompt=True, tokenize=True, return_dict=False)


def test_probes_agree_with_the_in_process_backend_on_the_same_prefixes(engine: EngineBackend, smol: Monitor) -> None:
    questions = [QUESTION, "Tom has 3 boxes with 12 pens each. He gives away 5 pens. How many pens does he have?"]
    compared = 0
    for question in questions:
        trace = smol.generate(question, NUMERIC, GenerationSettings(max_new_tokens=120))[0]
        tokens = smol.tokenizer(trace.final_text, add_special_tokens=False)["input_ids"]
        for step in trace.steps:
            prefix = tokens[: step.token_end]
            ours = engine.distribution_after(question, NUMERIC, prefix)
            theirs = smol.distribution_after(question, NUMERIC, prefix)
            assert abs(ours.entropy_bits - theirs.entropy_bits) <= ENTROPY_TOLERANCE_BITS
            (top, p), (_, q) = (theirs.top(2) + [("", 0.0)])[:2]
            if p - q > 0.2:
                assert ours.top(1)[0][0] == top
            assert ours.covered <= theirs.covered + 0.05  # top-N lists: a lower bound of the mass
            compared += 1
    assert compared >= 4


def test_a_generation_is_probed_at_its_step_ends_without_re_prefilling(engine: EngineBackend) -> None:
    events = []
    trace = engine.generate(QUESTION, NUMERIC, GenerationSettings(max_new_tokens=120), on_event=events.append)[0]
    assert trace.steps and trace.model_id == FIXTURE_MODEL and trace.finish_reason in ("eos", "length")
    assert "".join(e.text for e in events if e.kind == "token") == trace.final_text
    assert [e.step for e in events if e.kind == "step"] == trace.steps
    assert len(trace.token_entropy) == len(trace.token_logprob) == trace.n_tokens + (trace.finish_reason == "eos")
    prompt = len(engine.client.chat_prompt([{"role": "system", "content": "x"}]))  # a lower bound of any prompt
    for step in trace.steps:
        cost = step.engine
        assert cost is not None and cost["probe_requests"] >= 1
        # every probe request found the whole prefix in the cache: it evaluated only suffix and answer tokens
        assert cost["probe_cached"] >= cost["probe_requests"] * (prompt + step.token_end)
        assert cost["probe_evaluated"] <= cost["probe_requests"] + 8
    for step in trace.steps[1:]:
        assert step.engine["continue_evaluated"] <= 2  # type: ignore[index]  # resuming after a probe re-reads nothing
    again = engine.generate(QUESTION, NUMERIC, GenerationSettings(max_new_tokens=120))[0]
    assert again.final_text == trace.final_text  # same engine, greedy: exact
    assert [s.entropy_bits for s in again.steps] == [s.entropy_bits for s in trace.steps]
    assert Trajectory.from_json(trace.to_json()).to_json() == trace.to_json()


def test_cancelling_mid_generation_ends_it_on_the_engine_too(engine: EngineBackend, engine_url: str) -> None:
    cancel = threading.Event()
    seen = []
    for event in engine.stream(QUESTION, NUMERIC, GenerationSettings(max_new_tokens=400), cancel=cancel):
        seen.append(event)
        if sum(e.kind == "token" for e in seen) == 5:
            cancel.set()
    final = seen[-1]
    assert final.kind == "final" and final.trajectory.finish_reason == "cancelled"  # type: ignore[union-attr]
    assert final.trajectory.n_tokens <= 8  # type: ignore[union-attr]
    deadline = time.monotonic() + 5
    while any(slot.get("is_processing") for slot in httpx.get(engine_url + "/slots").json()):
        assert time.monotonic() < deadline, "the engine kept generating after the cancel"
        time.sleep(0.05)


def test_a_stopped_row_ends_alone_and_rows_run_in_their_own_slots(engine: EngineBackend) -> None:
    stopper = RowStopper()

    def on_event(event: MonitorEvent) -> None:
        if event.kind == "token" and event.row == 1:
            stopper.stop(1)

    traces = engine.generate([QUESTION, QUESTION], NUMERIC, GenerationSettings(max_new_tokens=60),
                             on_event=on_event, row_stopper=stopper)
    assert traces[1].finish_reason == "stopped" and traces[1].n_tokens <= 3
    assert traces[0].finish_reason in ("eos", "length") and traces[0].n_tokens > traces[1].n_tokens


def test_samples_differ_and_a_schedule_can_end_the_vote(engine: EngineBackend) -> None:
    asked = []

    def schedule(running: int) -> int | None:
        asked.append(running)
        return None if len(asked) > 40 else 0

    samples = engine.sample(QUESTION, NUMERIC, GenerationSettings(max_new_tokens=40, temperature=1.0, seed=3),
                            first=2, schedule=schedule)
    assert len(samples) == 2 and asked
    assert samples[0].final_text != samples[1].final_text
    assert {s.finish_reason for s in samples} <= {"cancelled", "eos", "length"}


def test_force_answer_and_a_choice_question(engine: EngineBackend) -> None:
    line, answer, count = engine.force_answer(QUESTION, NUMERIC, "24 - 9 = 15.")
    assert line.startswith("The answer is") and answer is not None and count >= 1
    space = AnswerSpace("choice", labels=("A", "B", "C", "D"), options=("Paris", "Rome", "Oslo", "Madrid"))
    trace = engine.generate("What is the capital of France?", space, GenerationSettings(max_new_tokens=60))[0]
    assert trace.steps and all({a for a, _ in s.top} <= set("ABCD") for s in trace.steps)
    assert all(s.covered > 0.5 for s in trace.steps)


def test_the_openai_server_runs_on_the_engine(engine: EngineBackend) -> None:
    with running_server(create_app(engine)) as base:
        chat = openai.OpenAI(base_url=base + "/v1", api_key="none", max_retries=0, timeout=120)
        stream = chat.chat.completions.create(model=engine.model_id, messages=[{"role": "user", "content": QUESTION}],
                                              max_tokens=60, stream=True)
        text, steps, summary, _ = read_stream(stream)
        reply = chat.chat.completions.create(model=engine.model_id, max_tokens=8,
                                             messages=[{"role": "user", "content": QUESTION}])
    assert text and steps and all(s["entropy_bits"] >= 0 for s in steps)
    assert reply.usage is not None and reply.usage.prompt_tokens > 20 and reply.usage.completion_tokens == 8
    assert summary is not None and summary["steps"] == len(steps)


def test_the_tui_replays_an_engine_trajectory(engine: EngineBackend, tmp_path: Path) -> None:
    from tui.app import create_app as create_tui
    from tui.sources import ReplaySource

    trace = engine.generate(QUESTION, NUMERIC, GenerationSettings(max_new_tokens=80))[0]
    app = create_tui(ReplaySource([trace], speed=0), save_path=tmp_path / "s.jsonl", export_dir=tmp_path,
                     clock=lambda: 0.0)

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            deadline = time.monotonic() + 20
            while not app.finished:
                assert time.monotonic() < deadline
                await pilot.pause(0.02)
            assert [s.entropy_bits for s in app.steps] == [s.entropy_bits for s in trace.steps]

    asyncio.run(main())


def _cli(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "sia_monitor.cli", *args], capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, "SIA_MONITOR_THREADS": "1"}, check=False)


def test_run_and_collect_on_the_engine_from_the_command_line(engine_url: str, tmp_path: Path, data_dir: Path) -> None:
    run = _cli("run", "--engine", engine_url, "--max-new-tokens", "40", "--json", QUESTION)
    assert run.returncode == 0, run.stderr
    assert '"kind": "final"' in run.stdout
    out = tmp_path / "c.jsonl.gz"
    args = ("collect", "--engine", engine_url, "--concurrency", "2", "--benchmark", "svamp", "--limit", "2",
            "--max-new-tokens", "40", "--out", str(out), "--data-dir", str(data_dir))
    first = _cli(*args)
    assert first.returncode == 0, first.stderr
    records = list(read_trajectories(out))
    assert len(records) == 2 and all(r.correct is not None and r.generation["engine"] == engine_url for r in records)
    assert all(s.hidden is None and s.engine for r in records for s in r.steps)
    again = _cli(*args)
    assert again.returncode == 0 and "Nothing to do" in again.stderr


@pytest.mark.parametrize("url, says", [
    ("http://127.0.0.1:9", "cannot be reached"),
    ("not-a-url", "is not an http(s) URL"),
])
def test_an_engine_that_is_not_there_is_one_line_and_exit_2(url: str, says: str) -> None:
    result = _cli("run", "--engine", url, "What is 2+3?", timeout=60)
    assert result.returncode == 2 and says in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_a_server_that_is_no_engine_is_refused(tmp_path: Path) -> None:
    from fastapi import FastAPI

    with running_server(FastAPI()) as base:  # a real HTTP server that answers 404 to everything
        result = _cli("run", "--engine", base, "What is 2+3?", timeout=60)
    assert result.returncode == 2 and "refused GET /v1/models: HTTP 404" in result.stderr


def test_concurrency_without_an_engine_is_refused() -> None:
    result = _cli("run", "--concurrency", "2", "What is 2+3?", timeout=60)
    assert result.returncode == 2 and "--concurrency applies to --engine only" in result.stderr


def test_the_tui_runs_live_on_the_engine(engine: EngineBackend, tmp_path: Path) -> None:
    from tui.app import create_app as create_tui
    from tui.sources import LiveSource

    source = LiveSource(engine, QUESTION, NUMERIC, GenerationSettings(max_new_tokens=48))
    app = create_tui(source, save_path=tmp_path / "live.jsonl", export_dir=tmp_path, clock=lambda: 0.0)

    async def main() -> None:
        async with app.run_test(size=(80, 24)) as pilot:
            deadline = time.monotonic() + 60
            while not app.finished:
                assert time.monotonic() < deadline
                await pilot.pause(0.05)
            assert app.steps
            await pilot.press("q")

    asyncio.run(main())
    saved = next(iter(read_trajectories(tmp_path / "live.jsonl")))
    assert saved.generation["engine"] == engine.client.url and saved.final_text.strip() == "".join(app.text).strip()


def test_a_probe_token_that_ends_inside_a_utf8_character_still_has_its_log_probabilities(engine_url: str) -> None:
    """llama-server sends no log-probabilities for a token whose text ends inside a multi-byte character when
    n_predict stops it there (the 1.5B model hit this mid-collection: "The answer is 6" -> " \\ufffd"). The
    client asks for a few tokens more and keeps the first: the probe sees the token and its distribution."""
    client = connect(engine_url)
    prompt = httpx.post(engine_url + "/tokenize", json={"content": "I love emojis: 😀😀😀😀😀"}).json()["tokens"]
    raw = httpx.post(engine_url + "/completion", json={"prompt": prompt, "n_predict": 1, "n_probs": 5,
                                                       "return_tokens": True, "temperature": 0}).json()
    assert raw["tokens"] and not raw.get("completion_probabilities"), "the premise: no log-probabilities here"
    tops, drawn, _ = client.next_tokens(prompt, 20, count=1)
    assert drawn == raw["tokens"][:1] and len(tops) == 1
    assert drawn[0] in tops[0].logprobs and max(tops[0].logprobs.values()) == tops[0].logprobs[drawn[0]]


def test_a_stream_lists_every_token_of_a_multibyte_character(engine_url: str) -> None:
    """Streamed, llama-server lists only the token that completes a multi-byte character (3 tokens of an emoji
    arrive as one, carrying all the bytes). The client recovers the held-back ids and reads their
    distributions, so the backend's prefix is the one the engine generated: greedy, it matches the ids a
    non-streamed request returns, and every token's bytes are its own."""
    client = connect(engine_url)
    prompt = httpx.post(engine_url + "/tokenize", json={"content": "I love emojis: 😀😀😀😀😀"}).json()["tokens"]
    whole = httpx.post(engine_url + "/completion", json={"prompt": prompt, "n_predict": 12, "return_tokens": True,
                                                         "temperature": 0}).json()
    raw = [json.loads(line[6:]) for line in httpx.post(engine_url + "/completion", json={
        "prompt": prompt, "n_predict": 12, "return_tokens": True, "temperature": 0, "stream": True}).text.splitlines()
        if line.startswith("data: ")]
    streamed_ids = [token for chunk in raw for token in chunk.get("tokens") or []]
    assert len(streamed_ids) < len(whole["tokens"]), "the premise: the raw stream drops held-back tokens"

    items = list(client.stream(prompt, 12, 0.0, 1.0, 0, 20))
    tokens = [item for item in items if isinstance(item, GeneratedToken)]
    assert [item.token for item in tokens] == whole["tokens"]
    assert isinstance(items[-1], StreamEnd) and items[-1].reason == "length"
    assert b"".join(item.text for item in tokens).decode() == whole["content"]
    for item in tokens:  # each position's own distribution: greedy, the drawn token is its most likely
        assert max(item.top.logprobs.values()) == item.top.logprobs[item.token] == item.logprob
