"""The OpenAI-compatible server on a real uvicorn, on loopback, driven by the real `openai` client."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx2 as httpx
import openai
import pytest

from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.in_process import Monitor
from sia_monitor.serve.app import create_app
from sia_monitor.serve.background import running_server
from sia_monitor.tasks.answers import NUMERIC

QUESTION = "What is 7 + 8? Think step by step."
KEY = "test-key-123"


@pytest.fixture(scope="module")
def server(smol: Monitor) -> Iterator[str]:
    app = create_app(Monitor(smol.loaded, segmenter="sentence"), api_key=KEY)
    with running_server(app) as base:
        yield base


def client(base: str, key: str = KEY) -> openai.OpenAI:
    return openai.OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=120)


def read_stream(stream: Any) -> tuple[str, list[dict], dict | None, Any]:
    """(text, step payloads, summary payload, usage) of a streamed chat completion, read from the raw fields."""
    text, steps, summary, usage = "", [], None, None
    for chunk in stream:
        extra = chunk.model_extra or {}
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        if "sia" in extra and "step" in extra["sia"]:
            steps.append(extra["sia"])
        if "sia" in extra and "answer" in extra["sia"]:
            summary = extra["sia"]
        usage = chunk.usage or usage
    return text, steps, summary, usage


def test_streamed_sia_fields_equal_what_monitor_stream_gives(server: str, smol: Monitor) -> None:
    stream = client(server).chat.completions.create(
        model=smol.model_id, messages=[{"role": "user", "content": QUESTION}], max_tokens=32, stream=True,
        stream_options={"include_usage": True}, seed=0)  # a seed: generated alone, as Monitor.stream is
    text, steps, summary, usage = read_stream(stream)
    expected = [e for e in Monitor(smol.loaded, segmenter="sentence").stream(
        QUESTION, NUMERIC, GenerationSettings(max_new_tokens=32))]
    expected_steps = [e.step for e in expected if e.kind == "step"]
    final = [e.trajectory for e in expected if e.kind == "final"][0]
    assert text == final.final_text
    assert [s["entropy_bits"] for s in steps] == [s.entropy_bits for s in expected_steps]
    assert [s["top"] for s in steps] == [[list(p) for p in s.top] for s in expected_steps]
    assert summary is not None and summary["tokens"] == final.n_tokens and summary["steps"] == len(expected_steps)
    assert usage is not None and usage.completion_tokens == final.n_tokens


def test_non_streaming_chat_and_completions(server: str, smol: Monitor) -> None:
    chat = client(server).chat.completions.create(
        model=smol.model_id, messages=[{"role": "user", "content": QUESTION}], max_tokens=24)
    (sia,) = chat.model_extra["sia"]
    assert chat.choices[0].message.content and sia["tokens"] == chat.usage.completion_tokens
    assert len(sia["trace"]) == sia["steps"]
    done = client(server).completions.create(model=smol.model_id, prompt=QUESTION, max_tokens=24)
    assert done.choices[0].text == chat.choices[0].message.content  # same question, greedy


def test_stop_string_cuts_the_text(server: str, smol: Monitor) -> None:
    full = client(server).chat.completions.create(
        model=smol.model_id, messages=[{"role": "user", "content": QUESTION}], max_tokens=24)
    text = full.choices[0].message.content
    word = text.split()[3]
    cut = client(server).chat.completions.create(
        model=smol.model_id, messages=[{"role": "user", "content": QUESTION}], max_tokens=24, stop=[word])
    assert cut.choices[0].message.content == text[: text.index(word)]
    assert cut.choices[0].finish_reason == "stop"


@pytest.mark.parametrize("case", ["key", "model", "empty", "n", "sia", "unknown", "json", "roles", "budget",
                                  "oversize", "penalty"])
def test_bad_requests_get_openai_errors_and_the_server_keeps_serving(server: str, smol: Monitor,
                                                                    case: str) -> None:
    messages = [{"role": "user", "content": QUESTION}]
    kwargs: dict = {"model": smol.model_id, "messages": messages, "max_tokens": 8}
    if case == "json":
        reply = httpx.post(server + "/v1/chat/completions", content=b"{not json",
                           headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        assert reply.status_code == 400 and "JSON" in reply.json()["error"]["message"]
        chunked = httpx.post(server + "/v1/chat/completions", content=iter([b"{}"]),  # no Content-Length
                             headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/json"})
        assert chunked.status_code == 411 and chunked.json()["error"]["code"] == "length_required"
    else:
        make = client(server, "wrong" if case == "key" else KEY)
        if case == "model":
            kwargs["model"] = "no-such-model"
        elif case == "empty":
            kwargs["messages"] = []
        elif case == "n":
            kwargs["n"] = 99
        elif case == "sia":
            kwargs["extra_body"] = {"sia": {"policy": "sometimes"}}
        elif case == "unknown":
            kwargs["extra_body"] = {"tools_please": True}
        elif case == "roles":
            kwargs["messages"] = [{"role": "system", "content": "x"}, *messages]
        elif case == "budget":
            kwargs["max_tokens"] = 1_000_000
        elif case == "oversize":
            kwargs["messages"] = [{"role": "user", "content": "x" * (2 << 20)}]
        elif case == "penalty":
            kwargs["frequency_penalty"] = 0.5
        expected = {"key": openai.AuthenticationError, "model": openai.NotFoundError,
                    "oversize": openai.APIStatusError}.get(case, openai.BadRequestError)
        with pytest.raises(expected) as raised:
            make.chat.completions.create(**kwargs)
        assert raised.value.body and raised.value.body.get("message")  # OpenAI's error shape
        if case == "oversize":
            assert raised.value.status_code == 413
    assert httpx.get(server + "/health").json()["status"] == "ok"


def test_a_disconnected_stream_is_cancelled_and_leaves_nothing_behind(server: str, smol: Monitor) -> None:
    before = threading.active_count()
    for _ in range(3):
        stream = client(server).chat.completions.create(
            model=smol.model_id, messages=[{"role": "user", "content": QUESTION}], max_tokens=400, stream=True)
        for _chunk in zip(range(4), stream, strict=False):
            pass
        stream.close()
    deadline = time.monotonic() + 20
    while httpx.get(server + "/health").json()["running"]:
        assert time.monotonic() < deadline, "a cancelled generation kept running"
        time.sleep(0.1)
    assert httpx.get(server + "/health").json()["waiting"] == 0
    assert threading.active_count() <= before + 1


def test_eight_concurrent_streams_are_batched_and_nothing_is_lost_or_mixed(server: str, smol: Monitor) -> None:
    questions = [f"Tom has {a} apples and buys {b} more. How many apples does he have?"
                 for a, b in [(3, 4), (12, 5), (7, 9), (20, 6), (2, 2), (15, 8), (9, 11), (30, 1)]]
    results: list[dict | None] = [None] * len(questions)

    def one(i: int) -> None:
        stream = client(server).chat.completions.create(
            model=smol.model_id, messages=[{"role": "user", "content": questions[i]}], max_tokens=40, stream=True,
            stream_options={"include_usage": True})
        text, steps, summary, usage = read_stream(stream)
        results[i] = {"text": text, "steps": steps, "summary": summary, "usage": usage}

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(questions))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    assert all(result is not None for result in results), "a stream did not complete"
    batches = [result["summary"]["batch"] for result in results]  # type: ignore[index]
    assert max(batches) > 1, f"no request was batched with another: {batches}"
    for result in results:
        assert result is not None and result["summary"] is not None and result["usage"] is not None
        tokens = result["summary"]["tokens"]
        assert result["usage"].completion_tokens == tokens
        # every token of a row reached its own stream and no other: the streamed text re-encodes to the
        # row's token count (a boundary may merge or split a token or two)
        encoded = len(smol.tokenizer(result["text"], add_special_tokens=False)["input_ids"])
        assert abs(encoded - tokens) <= 3, (encoded, tokens, result["text"])
        step_tokens = [step["tokens"] for step in result["steps"]]
        assert step_tokens == sorted(step_tokens) and all(t <= tokens for t in step_tokens)
    assert httpx.get(server + "/health").json()["waiting"] == 0


@pytest.fixture(scope="module")
def small_server(smol: Monitor) -> Iterator[str]:
    """One running and one waiting request at most: the third is refused."""
    with running_server(create_app(smol, max_batch=1, max_waiting=1)) as base:
        yield base


def test_a_full_queue_is_refused_at_once_with_retry_after(small_server: str, smol: Monitor) -> None:
    body = {"model": smol.model_id, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 400,
            "stream": True, "seed": 1}
    with httpx.Client(base_url=small_server, timeout=60) as http:
        with http.stream("POST", "/v1/chat/completions", json=body) as first:
            assert first.status_code == 200
            with http.stream("POST", "/v1/chat/completions", json=body) as second:
                assert second.status_code == 200
                deadline = time.monotonic() + 20
                while httpx.get(small_server + "/health").json()["waiting"] < 1:
                    assert time.monotonic() < deadline
                    time.sleep(0.05)
                started = time.monotonic()
                third = http.post("/v1/chat/completions", json={**body, "stream": False})
                assert time.monotonic() - started < 5
                assert third.status_code == 503 and third.headers["Retry-After"].isdigit()
                assert third.json()["error"]["code"] == "server_busy"
        deadline = time.monotonic() + 20
        while (health := httpx.get(small_server + "/health").json())["running"] or health["waiting"]:
            assert time.monotonic() < deadline, "closed streams were not cancelled"
            time.sleep(0.1)
        reply = http.post("/v1/chat/completions", json={**body, "stream": False, "max_tokens": 8})
        assert reply.status_code == 200  # the server serves again


@pytest.mark.default_model
def test_the_default_model_served_streams_what_monitor_stream_gives(qwen: Monitor) -> None:
    from sia_monitor.client import SiaStep, SiaSummary, sia_of

    question = "A baker made 24 muffins and sold 9. How many are left?"
    with running_server(create_app(qwen)) as base:
        records = [sia_of(chunk) for chunk in client(base, "-").chat.completions.create(
            model=qwen.model_id, messages=[{"role": "user", "content": question}], max_tokens=64, stream=True,
            seed=0)]
    steps = [r for r in records if isinstance(r, SiaStep)]
    (summary,) = [r for r in records if isinstance(r, SiaSummary)]
    expected = list(qwen.stream(question, NUMERIC, GenerationSettings(max_new_tokens=64)))
    expected_steps = [e.step for e in expected if e.kind == "step" and e.step is not None]
    final = [e.trajectory for e in expected if e.kind == "final"][0]
    assert [s.entropy_bits for s in steps] == [s.entropy_bits for s in expected_steps]
    assert summary.answer == final.parsed_answer and summary.tokens == final.n_tokens
    assert all(s.p_correct is not None for s in steps)  # the shipped numeric calibrator scores every step


def test_a_client_leaving_a_batch_stops_only_its_row(server: str, smol: Monitor) -> None:
    finished: dict[str, dict | None] = {}
    clients, together = [client(server), client(server)], threading.Barrier(2)

    def stay() -> None:
        together.wait()
        stream = clients[0].chat.completions.create(
            model=smol.model_id, messages=[{"role": "user", "content": QUESTION}], max_tokens=60, stream=True)
        finished["stayed"] = read_stream(stream)[2]

    def leave() -> None:
        together.wait()
        stream = clients[1].chat.completions.create(
            model=smol.model_id, messages=[{"role": "user", "content": "What is 2 + 2?"}], max_tokens=400,
            stream=True)  # another budget: each row keeps its own
        for _chunk in zip(range(6), stream, strict=False):
            pass
        stream.close()

    threads = [threading.Thread(target=stay), threading.Thread(target=leave)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    summary = finished.get("stayed")
    assert summary is not None and summary["batch"] == 2  # they shared a generation
    assert summary["finish_reason"] in ("eos", "length")  # the row that stayed ran to its end
    deadline = time.monotonic() + 20
    while (health := httpx.get(server + "/health").json())["running"] or health["waiting"]:
        assert time.monotonic() < deadline, "the batch kept running"
        time.sleep(0.1)


def test_requests_with_different_budgets_share_a_batch_and_keep_their_own(server: str, smol: Monitor) -> None:
    summaries: dict[int, dict | None] = {}
    clients, together = [client(server), client(server)], threading.Barrier(2)

    def one(i: int, budget: int) -> None:
        together.wait()
        stream = clients[i].chat.completions.create(
            model=smol.model_id, messages=[{"role": "user", "content": QUESTION}], max_tokens=budget, stream=True)
        summaries[budget] = read_stream(stream)[2]

    threads = [threading.Thread(target=one, args=(0, 6)), threading.Thread(target=one, args=(1, 30))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(300)
    short, long = summaries[6], summaries[30]
    assert short is not None and long is not None and short["batch"] == long["batch"] == 2
    assert short["tokens"] == 6 and short["finish_reason"] == "length"  # greedy 7 + 8 reasoning runs past 6
    assert 6 < long["tokens"] <= 30
