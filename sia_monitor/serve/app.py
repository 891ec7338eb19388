"""The OpenAI-compatible server: `create_app(monitor)` gives the FastAPI app that `sia-monitor serve` runs.

Routes: `POST /v1/chat/completions`, `POST /v1/completions` (streaming SSE and not), `GET /v1/models`,
`GET /health`. Every error is OpenAI's shape (`{"error": {"message", "type", "param", "code"}}`). With an API
key, every `/v1` route needs `Authorization: Bearer KEY` (compared in constant time); `/health` stays public.
"""

from __future__ import annotations

import contextlib
import hmac
import json
import random
from collections.abc import AsyncIterator
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse

from sia_monitor.backends.base import Backend, GenerationSettings
from sia_monitor.client import SiaDecision
from sia_monitor.errors import SIAError
from sia_monitor.scoring import StepScorer
from sia_monitor.serve.engine import ServingEngine
from sia_monitor.serve.generation import ChoiceItem, Generation, run_jobs
from sia_monitor.serve.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    RequestError,
    finish_reason,
    new_id,
    now,
    step_payload,
    summary_payload,
)
from sia_monitor.tasks.answers import AnswerSpace


@dataclass(frozen=True)
class Limits:
    """What one request may ask for; beyond it, a clear 400 (413 for the body)."""

    max_body_bytes: int = 1 << 20
    max_messages: int = 64
    max_tokens: int = 2048
    max_n: int = 4
    default_max_tokens: int = 512


class _Models:
    """One `Monitor` per (step mode, calibrator) over the one loaded model: step mode and scorer are
    per-request choices, the weights are shared."""

    def __init__(self, monitor: Backend, calibrator: str, force: bool) -> None:
        self.monitor = monitor
        self.calibrator, self.force = calibrator, force
        self._scorers: dict[str, StepScorer | None] = {}

    def for_request(self, steps: str | None, step_regex: str | None, space: AnswerSpace, calibrator: bool) -> Backend:
        if steps is None:
            steps, step_regex = self.monitor.segmenter, step_regex or self.monitor.step_regex
        scorer = self._scorer(space) if calibrator else None
        try:
            return self.monitor.with_options(steps, step_regex, scorer)  # type: ignore[arg-type]
        except SIAError as exc:
            raise RequestError(str(exc), param="sia.step_regex") from exc

    def _scorer(self, space: AnswerSpace) -> StepScorer | None:
        """The calibrator for this answer type, loaded once (requests of one type share it, and so can share a
        batch). A calibrator file fitted for another answer type scores none of this type's requests."""
        if space.kind not in self._scorers:
            from calibrators import calibrator_for

            recorded = getattr(self.monitor, "hidden_states", None)
            try:
                scorer = calibrator_for(self.monitor.model_id, space, self.calibrator, force=self.force,
                                        hidden_states=recorded is not None)
            except SIAError:
                scorer = None
            if scorer is not None and scorer.hidden_state_spec not in (None, recorded):
                scorer = None  # it reads hidden states this server does not record: it could score no step
            self._scorers[space.kind] = scorer
        return self._scorers[space.kind]


def create_app(monitor: Backend, *, api_key: str | None = None, limits: Limits | None = None,
               max_batch: int = 8, max_waiting: int = 32, calibrator: str = "auto", force: bool = False,
               default_temperature: float = 0.0) -> FastAPI:
    """The server over a loaded `monitor`: up to `max_batch` requests generated together, `max_waiting` more
    in line (then 503). `calibrator`: where P(correct) comes from, as `--calibrator` (auto: the shipped one
    for the model and the request's answer type; none; a .skops file); a request can turn it off with
    `sia.calibrator: false`."""
    limits = limits or Limits()
    engine = ServingEngine(run_jobs, max_batch=max_batch, max_waiting=max_waiting)
    models = _Models(monitor, calibrator, force)
    model_id = monitor.model_id
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        engine.close()  # stop the worker: cancel what is running, refuse what is new

    app = FastAPI(title="sia-monitor", docs_url=None, redoc_url=None, openapi_url=None, lifespan=lifespan)
    app.state.engine = engine

    @app.exception_handler(RequestError)
    async def _refused(request: Request, exc: RequestError) -> JSONResponse:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part != "body")
        if first.get("type") == "json_invalid":
            error = RequestError("The request body is not valid JSON.", code="invalid_json")
        elif first.get("type") == "extra_forbidden":
            error = RequestError(f"Unknown field '{where}': it is not supported.", param=where)
        else:
            error = RequestError(f"{where or 'body'}: {first.get('msg', 'invalid')}.", param=where or None)
        return JSONResponse(error.body(), status_code=400)

    @app.middleware("http")
    async def _guard(request: Request, call_next: Any) -> Any:
        if request.url.path.startswith("/v1"):
            if api_key is not None:
                given = request.headers.get("authorization", "")
                if not hmac.compare_digest(given.encode(), f"Bearer {api_key}".encode()):
                    error = RequestError("Invalid or missing API key (send Authorization: Bearer KEY).",
                                         status=401, code="invalid_api_key")
                    return JSONResponse(error.body(), status_code=401)
            size = request.headers.get("content-length")
            if request.method == "POST" and (size is None or not size.isdigit()):
                # a body without a length (chunked) could not be held to the limit before it is read
                error = RequestError("Send the body with a Content-Length header.", status=411,
                                     code="length_required")
                return JSONResponse(error.body(), status_code=411)
            if size is not None and size.isdigit() and int(size) > limits.max_body_bytes:
                error = RequestError(f"The request body is {size} bytes; the limit is {limits.max_body_bytes}.",
                                     status=413, code="body_too_large")
                return JSONResponse(error.body(), status_code=413)
        return await call_next(request)

    @app.get("/health")
    async def health() -> dict[str, Any]:
        # `auth` tells the chat page whether to ask for the key; the key itself never leaves the server
        return {"status": "ok", "model": model_id, "waiting": engine.waiting, "running": engine.running,
                "auth": api_key is not None}

    page = files("sia_monitor.serve").joinpath("static/chat.html").read_text(encoding="utf-8")

    @app.get("/", response_class=HTMLResponse)
    async def chat_page() -> HTMLResponse:
        """The chat page: one static file, no build step, no CDN; it talks to /v1/chat/completions."""
        return HTMLResponse(page)

    @app.get("/v1/models")
    async def list_models() -> dict[str, Any]:
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0,
                                            "owned_by": "sia-monitor"}]}

    def prepare(body: ChatCompletionRequest | CompletionRequest) -> Generation:
        """Everything that can be refused, refused before the request waits for the model."""
        if body.model != model_id:
            raise RequestError(f"The model '{body.model}' does not exist; this server serves '{model_id}'.",
                               status=404, param="model", code="model_not_found")
        body.refuse_unsupported()
        if isinstance(body, ChatCompletionRequest) and len(body.messages) > limits.max_messages:
            raise RequestError(f"At most {limits.max_messages} messages.", param="messages")
        if body.n > limits.max_n:
            raise RequestError(f"n is {body.n}; this server allows at most {limits.max_n}.", param="n")
        budget = body.budget() or limits.default_max_tokens
        if budget > limits.max_tokens:
            raise RequestError(f"max_tokens is {budget}; this server allows at most {limits.max_tokens}.",
                               param="max_tokens")
        question, space = body.sia.space_for(body.question())
        policy, auto = body.sia.guardrail()
        temperature = body.temperature if body.temperature is not None else default_temperature
        seed = body.seed if body.seed is not None else (random.randrange(1 << 31) if temperature > 0 else 0)
        try:
            settings = [GenerationSettings(max_new_tokens=budget, temperature=temperature,
                                           top_p=body.top_p if body.top_p is not None else 1.0, seed=seed + i)
                        for i in range(body.n)]
        except SIAError as exc:
            raise RequestError(str(exc)) from exc
        backend = models.for_request(body.sia.steps, body.sia.step_regex, space, body.sia.calibrator)
        return Generation(backend, question, space, settings, policy, auto, body.stops(), seeded=body.seed is not None)

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request) -> Any:
        return await _serve(body, request, chat=True)

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request) -> Any:
        return await _serve(body, request, chat=False)

    async def _serve(body: ChatCompletionRequest | CompletionRequest, request: Request, chat: bool) -> Any:
        generation = prepare(body)
        job = engine.submit(generation, generation.batch_key())
        shape = _Shape(chat, model_id)
        if body.stream:
            include_usage = bool(body.stream_options and body.stream_options.include_usage)
            return StreamingResponse(_sse(job, shape, include_usage), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache"})
        try:
            finals: dict[int, ChoiceItem] = {}
            async for item in job.results():
                if item.event.kind == "final":
                    finals[item.index] = item
                if await request.is_disconnected():
                    job.cancel()
        finally:
            job.cancel()  # a no-op once done; stops the generation if this handler is torn down
        return shape.response([finals[i] for i in sorted(finals)])

    async def _sse(job: Any, shape: _Shape, include_usage: bool) -> AsyncIterator[str]:
        try:
            yield _data(shape.chunk(0, role=True))
            held: tuple[int, dict[str, Any]] | None = None  # a step's payload, waiting for its decision
            prompt_tokens, completion_tokens = 0, 0
            async for item in job.results():
                event = item.event
                if held is not None and not (event.kind == "decision" and item.index == held[0]):
                    yield _data(shape.chunk(held[0], sia=held[1]))
                    held = None
                if event.kind == "token":
                    yield _data(shape.chunk(item.index, text=event.text))
                elif event.kind == "step" and event.step is not None:
                    held = (item.index, step_payload(item.index, event.step))
                elif event.kind == "decision" and held is not None:
                    held[1]["decision"] = event.detail
                    yield _data(shape.chunk(held[0], sia=held[1]))
                    held = None
                elif event.kind == "decision":  # not at a step (e.g. a resample's start): a chunk of its own
                    yield _data(shape.chunk(item.index, sia=SiaDecision(item.index, event.detail).to_json()))
                elif event.kind == "final" and event.trajectory is not None:
                    trajectory = event.trajectory
                    completion_tokens += trajectory.n_tokens
                    prompt_tokens = int(trajectory.generation.get("prompt_tokens", 0) or 0)
                    yield _data(shape.chunk(item.index, finish=finish_reason(trajectory, item.hit_stop),
                                            sia=summary_payload(item.index, trajectory)))
            if held is not None:
                yield _data(shape.chunk(held[0], sia=held[1]))
            if include_usage:
                yield _data(shape.usage_chunk(prompt_tokens, completion_tokens))
            yield "data: [DONE]\n\n"
        finally:
            job.cancel()  # the client went away (or the stream ended): stop the generation within a token

    return app


def _data(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


class _Shape:
    """Chat or completions: the same events, two of OpenAI's object shapes."""

    def __init__(self, chat: bool, model: str) -> None:
        self.chat, self.model = chat, model
        self.id = new_id("chatcmpl" if chat else "cmpl")
        self.created = now()

    def _head(self, stream: bool) -> dict[str, Any]:
        kind = ("chat.completion.chunk" if stream else "chat.completion") if self.chat else "text_completion"
        return {"id": self.id, "object": kind, "created": self.created, "model": self.model}

    def chunk(self, index: int, text: str | None = None, role: bool = False, finish: str | None = None,
              sia: dict[str, Any] | None = None) -> dict[str, Any]:
        if self.chat:
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            choice: dict[str, Any] = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        else:
            choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": finish}
        payload = {**self._head(stream=True), "choices": [choice]}
        if sia is not None:
            payload["sia"] = sia
        return payload

    def usage_chunk(self, prompt: int, completion: int) -> dict[str, Any]:
        return {**self._head(stream=True), "choices": [],
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion,
                          "total_tokens": prompt + completion}}

    def response(self, finals: list[ChoiceItem]) -> dict[str, Any]:
        choices = []
        completion = 0
        for item in finals:
            trajectory = item.event.trajectory
            assert trajectory is not None
            completion += trajectory.n_tokens
            reason = finish_reason(trajectory, item.hit_stop)
            if self.chat:
                choice: dict[str, Any] = {"index": item.index, "message": {"role": "assistant", "content": item.text},
                                          "logprobs": None, "finish_reason": reason}
            else:
                choice = {"index": item.index, "text": item.text, "logprobs": None, "finish_reason": reason}
            choices.append(choice)
        prompt = int(finals[0].event.trajectory.generation.get("prompt_tokens", 0) or 0) if finals else 0  # type: ignore[union-attr]
        return {**self._head(stream=False), "choices": choices,
                "usage": {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": prompt + completion},
                "sia": [summary_payload(item.index, item.event.trajectory, steps=True)  # type: ignore[arg-type]
                        for item in finals]}
