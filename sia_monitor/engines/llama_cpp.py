"""llama.cpp's `llama-server`, through its native routes: `/apply-template`, `/tokenize`, `/completion`.

Why the native `/completion` and not its OpenAI route: it takes a token-id prompt, returns the drawn token
ids (`return_tokens`), the top-N log-probabilities of every position (`n_probs`, computed from the full
softmax before sampling), and the prefix-cache counters (`timings.cache_n` / `prompt_n`) that prove a probe
reused the cache. `id_slot` pins a generation and its probes to one slot, whose cache holds their prefix:
llama.cpp keeps no prefix cache across slots.

Sampling is set to exactly `GenerationSettings`: llama.cpp's default chain (top-k 40, min-p 0.05, ...) would
otherwise change what "temperature 0.7" means between the backends.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx2 as httpx

from sia_monitor.engines.base import GeneratedToken, StreamEnd, TopLogprobs, Usage
from sia_monitor.engines.process import server_process
from sia_monitor.errors import SIAError

_SAMPLING = {"top_k": 0, "min_p": 0.0, "typical_p": 1.0, "repeat_penalty": 1.0, "presence_penalty": 0.0,
             "frequency_penalty": 0.0, "dry_multiplier": 0.0, "xtc_probability": 0.0, "top_n_sigma": -1.0,
             "mirostat": 0, "samplers": ["top_p", "temperature"]}


class LlamaCppClient:
    """A running `llama-server` at `url` (checked on construction: one clear error if it is not there)."""

    def __init__(self, url: str, timeout: float = 120.0) -> None:
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=httpx.Timeout(timeout, connect=5.0))
        models = self._get("/v1/models")
        props = self._get("/props")
        try:
            entry = models["data"][0]
            self.model_id: str = entry["id"]
            self.vocab_size: int = int(entry["meta"]["n_vocab"])
            self.context_size: int = int(entry["meta"].get("n_ctx") or 0)
            self.slots: int = int(props.get("total_slots") or 1)
            per_slot = (props.get("default_generation_settings") or {}).get("n_ctx")
            self.context_size = int(per_slot or self.context_size)
            eos = props.get("eos_token")
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            self.close()
            raise SIAError(f"{self.url} answered, but not as llama.cpp's llama-server does (no model list with "
                           "n_vocab).", "Point --engine at a llama-server, or use an OpenAI-compatible engine "
                           "URL ending in /v1.") from exc
        # the tokens that end a generation: the model's EOS as the engine names it (others it stops at are
        # recognised by the stream's end)
        self.eos_token_ids: set[int] = set(self._tokenize(eos, special=True)) if isinstance(eos, str) and eos else set()

    # -- HTTP ---------------------------------------------------------------------------------------------
    def _get(self, path: str) -> dict[str, Any]:
        return self._call("GET", path, None)

    def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", path, body)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TransportError as exc:
            raise SIAError(f"The engine at {self.url} cannot be reached ({type(exc).__name__}).",
                           "Start it (e.g. llama-server -m MODEL.gguf --port 8080) or check --engine.") from exc
        if response.status_code != 200:
            raise SIAError(f"The engine at {self.url} refused {method} {path}: HTTP {response.status_code} "
                           f"{_error_text(response.text)}")
        try:
            return dict(response.json())
        except ValueError as exc:
            raise SIAError(f"The engine at {self.url} sent {path} a reply that is not JSON.") from exc

    # -- the four calls -----------------------------------------------------------------------------------
    def chat_prompt(self, messages: Sequence[dict[str, str]]) -> list[int]:
        prompt = self._post("/apply-template", {"messages": list(messages)}).get("prompt")
        if not isinstance(prompt, str):
            raise SIAError(f"The engine at {self.url} has no chat template (/apply-template gave no prompt).")
        return self._tokenize(prompt, special=True)

    def encode(self, text: str) -> list[int]:
        return self._tokenize(text, special=False)

    def detokenize(self, tokens: Sequence[int]) -> str:
        return str(self._post("/detokenize", {"tokens": list(tokens)}).get("content", ""))

    def _tokenize(self, text: str, special: bool) -> list[int]:
        reply = self._post("/tokenize", {"content": text, "add_special": False, "parse_special": special})
        return [int(token) for token in reply["tokens"]]

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
        prefix, budget = list(prompt), max_tokens
        while True:  # one request, and another after each character whose pieces the engine held back
            body = {**_SAMPLING, "prompt": prefix, "n_predict": budget, "temperature": temperature,
                    "top_p": top_p, "seed": seed, "n_probs": top_n, "return_tokens": True, "stream": True,
                    "timings_per_token": True, "cache_prompt": True, "id_slot": slot % self.slots}
            drawn: list[int] = []  # what this request has yielded
            held_back: tuple[dict[str, Any], int, Usage] | None = None
            try:
                with self._http.stream("POST", "/completion", json=body) as response:
                    if response.status_code != 200:
                        raise SIAError(f"The engine at {self.url} refused a completion: HTTP {response.status_code} "
                                       f"{_error_text(response.read().decode(errors='replace'))}")
                    for line in response.iter_lines():
                        if not line.startswith("data: "):
                            continue
                        chunk = json.loads(line[6:])
                        if "error" in chunk:
                            raise SIAError(f"The engine at {self.url} failed mid-generation: "
                                           f"{_error_text(json.dumps(chunk))}")
                        entries = chunk.get("completion_probabilities") or []
                        generated = int((chunk.get("timings") or {}).get("predicted_n", 0))
                        if entries and generated > len(drawn) + len(entries):
                            # the usage: what the prompt cost, said with the first token yielded
                            held_back = entries[0], generated - len(drawn) - len(entries), _usage(chunk)
                            break  # closing the response aborts the generation on the engine
                        for item in _tokens(chunk):
                            drawn.append(item.token)
                            yield item
                        if chunk.get("stop"):
                            reason = "eos" if chunk.get("stop_type") == "eos" else "length"
                            yield StreamEnd(reason, _usage(chunk))
                            return
            except httpx.TransportError as exc:
                raise SIAError(f"The engine at {self.url} dropped the connection ({type(exc).__name__}).",
                               "Is it still running?") from exc
            if held_back is None:
                return
            entry, missing, cost = held_back
            for item in self._held_back_tokens(prefix + drawn, entry, missing, top_n, slot):
                yield replace(item, usage=cost) if not drawn else item
                drawn.append(item.token)
            prefix, budget = prefix + drawn, budget - len(drawn)
            if budget <= 0:
                yield StreamEnd("length", Usage())
                return
            seed = (seed * 31 + len(drawn)) % (1 << 31)  # the next request does not replay this one's draws

    def _held_back_tokens(self, prefix: Sequence[int], entry: dict[str, Any], missing: int, top_n: int, slot: int
                          ) -> Iterator[GeneratedToken]:
        """The tokens a stream never listed. llama-server streams nothing for a token whose text ends inside a
        multi-byte UTF-8 character: the token that completes the character arrives alone, carrying the whole
        character's bytes, and the held-back ids and log-probabilities are lost (3 tokens of an emoji arrive as
        one). `timings.predicted_n` says how many. The ids are the character's tokenization, exact when it
        ends on the completing token and has the count the engine reported; otherwise its canonical
        tokenization, the same text. Each position's distribution is read by a one-token probe on the same
        slot (the stream is closed, so its cache holds the prefix). A generation that reaches `max_tokens` inside
        a character ends without that character's first pieces: they were never sent."""
        text = bytes(entry.get("bytes") or b"").decode("utf-8", errors="replace")
        reply = self._post("/tokenize", {"content": text, "add_special": False, "parse_special": False,
                                         "with_pieces": True})
        pieces = [(int(item["id"]), _piece_bytes(item["piece"])) for item in reply["tokens"]]
        exact = len(pieces) == missing + 1 and pieces[-1][0] == int(entry["id"])
        prefix = list(prefix)
        for index, (token, piece) in enumerate(pieces):
            if exact and index == len(pieces) - 1:
                top = _top(entry)
                yield GeneratedToken(token, piece, float(entry["logprob"]), top)
                return
            top = self.next_tokens(prefix, top_n, 1, slot)[0][0]
            yield GeneratedToken(token, piece, top.logprobs.get(token, top.floor), top)
            prefix.append(token)

    def next_tokens(self, prompt: Sequence[int], top_n: int, count: int = 1, slot: int = 0
                    ) -> tuple[list[TopLogprobs], list[int], Usage]:
        def ask(n_predict: int, **extra: Any) -> dict[str, Any]:
            return self._post("/completion", {
                **_SAMPLING, "prompt": list(prompt), "n_predict": n_predict, "temperature": 0.0, "n_probs": top_n,
                "return_tokens": True, "cache_prompt": True, "id_slot": slot % self.slots, **extra})

        reply = ask(count)
        drawn = [int(token) for token in reply.get("tokens") or []]
        entries = []  # the entries that belong to the drawn tokens, in order (an EOS entry may follow them)
        for index, entry in enumerate(reply.get("completion_probabilities") or []):
            if index < len(drawn) and int(entry["id"]) != drawn[index]:
                break
            entries.append(entry)
        if drawn and not entries:
            # llama-server keeps no log-probabilities for a token whose text ends inside a multi-byte UTF-8
            # character (only the token that completes it gets an entry; seen on Qwen2.5-Coder-1.5B: token 1683,
            # " \ufffd", after "The answer is 6"). Such a token is no answer token, so the probe needs only this
            # position's distribution: ask again with that token banned, which moves the draw, not the reported
            # log-probabilities (read from the logits before any sampler), and report the token really drawn.
            retry = ask(1, logit_bias=[[drawn[0], False]])
            listed = retry.get("completion_probabilities") or []
            if listed:
                return [_top(listed[0])], drawn[:1], _usage(reply) + _usage(retry)
        if not entries:
            raise SIAError(f"The engine at {self.url} returned no log-probabilities (n_probs).")
        return [_top(entry) for entry in entries], [int(entry["id"]) for entry in entries], _usage(reply)

    def close(self) -> None:
        self._http.close()


def _top(entry: dict[str, Any]) -> TopLogprobs:
    listed = entry.get("top_logprobs") or []
    return TopLogprobs({int(item["id"]): float(item["logprob"]) for item in listed},
                       {int(item["id"]): str(item.get("token", "")) for item in listed})


def _tokens(chunk: dict[str, Any]) -> Iterator[GeneratedToken]:
    usage = _usage(chunk) if "timings" in chunk else None
    for entry in chunk.get("completion_probabilities") or []:
        yield GeneratedToken(int(entry["id"]), bytes(entry.get("bytes") or b""), float(entry["logprob"]), _top(entry),
                             usage)


def _piece_bytes(piece: str | list[int]) -> bytes:
    """A `/tokenize` piece: text, or the byte values of a piece that is not valid UTF-8 on its own."""
    return bytes(piece) if isinstance(piece, list) else piece.encode()


def _usage(reply: dict[str, Any]) -> Usage:
    timings = reply.get("timings") or {}
    return Usage(int(timings.get("cache_n", 0)), int(timings.get("prompt_n", 0)))


def _error_text(text: str) -> str:
    """The engine's own error message, on one line."""
    try:
        error = json.loads(text).get("error")
        text = error.get("message", text) if isinstance(error, dict) else str(error or text)
    except (ValueError, AttributeError):
        pass
    return " ".join(text.split())[:300]


# -- a local llama-server, for tests and benchmarks ---------------------------------------------------------
SERVER_VARIABLE = "SIA_MONITOR_LLAMA_SERVER"


def find_llama_server() -> Path | None:
    """The llama-server binary: $SIA_MONITOR_LLAMA_SERVER, the one `make llama-server` builds, or on PATH."""
    named = os.environ.get(SERVER_VARIABLE)
    if named:
        return Path(named) if Path(named).is_file() else None
    built = sorted(Path.home().glob(".cache/sia-monitor/llama.cpp-*/llama-server"))
    if built:
        return built[-1]
    found = shutil.which("llama-server")
    return Path(found) if found else None


def llama_server(model: Path, *, slots: int = 1, context: int = 2048, threads: int = 1, alias: str | None = None,
                 binary: Path | None = None, port: int | None = None) -> contextlib.AbstractContextManager[str]:
    """Run `llama-server` on a free loopback port for the duration; yield its URL.

    `context` is per slot. `--no-repack`: on Xeons with AMX the default build crashes in its AMX matmul on the
    first decode (measured); without repacking it runs everywhere."""
    binary = binary or find_llama_server()
    if binary is None:
        raise SIAError("llama-server is not built.", "Run `make llama-server` (or set $SIA_MONITOR_LLAMA_SERVER).")

    def command(port: int) -> list[str]:
        return [str(binary), "-m", str(model), "--host", "127.0.0.1", "--port", str(port), "-np", str(slots),
                "-c", str(context * slots), "-t", str(threads), "--no-repack", "--no-webui",
                *(["--alias", alias] if alias else [])]

    return server_process("llama-server", command, "/health", 120.0, port=port)
