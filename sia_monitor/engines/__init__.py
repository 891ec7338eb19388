"""Serving engines the monitor runs on (`--engine URL`): one client per engine, behind `base.EngineClient`.

- `llama_cpp.LlamaCppClient`: llama.cpp's `llama-server`, through its native routes (slots, `n_probs`).
- `openai_compat.OpenAICompatClient`: vLLM and other OpenAI-compatible servers that take token-id prompts.
"""

from __future__ import annotations

from sia_monitor.engines.base import EngineClient


def connect(url: str) -> EngineClient:
    """The client for the engine at `url`, chosen by what its `/v1/models` says (llama-server lists its model
    with `owned_by: llamacpp`); checked now, so an engine that is down or is no engine fails here."""
    import httpx2 as httpx

    from sia_monitor.errors import SIAError

    if not url.startswith(("http://", "https://")):
        raise SIAError(f"--engine {url!r} is not an http(s) URL.", "Pass e.g. --engine http://127.0.0.1:8080.")
    root = url.rstrip("/").removesuffix("/v1")
    try:
        listed = httpx.get(root + "/v1/models", timeout=10.0)
    except httpx.TransportError as exc:
        raise SIAError(f"The engine at {root} cannot be reached ({type(exc).__name__}).",
                       "Start it (e.g. llama-server -m MODEL.gguf --port 8080) or check --engine.") from exc
    if listed.status_code != 200:
        raise SIAError(f"The engine at {root} refused GET /v1/models: HTTP {listed.status_code}.",
                       "Point --engine at a llama-server or an OpenAI-compatible engine (vLLM, SGLang).")
    try:
        owners = {entry.get("owned_by") for entry in listed.json().get("data", [])}
    except (ValueError, AttributeError) as exc:
        raise SIAError(f"The engine at {root} answered /v1/models with something that is not a model list.") from exc
    if "llamacpp" in owners:
        from sia_monitor.engines.llama_cpp import LlamaCppClient

        return LlamaCppClient(root)
    from sia_monitor.engines.openai_compat import OpenAICompatClient

    return OpenAICompatClient(root)
