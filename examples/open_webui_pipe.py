"""
title: sia-monitor
description: Answers through `sia-monitor serve` and shows each reasoning step's P(correct) as a status line.
requirements: openai
"""

# An Open WebUI Pipe function. In Open WebUI: Admin Panel → Functions → "+" → paste this file → save and
# enable; set the valves (the server's URL, its key, the model) with the gear icon. A new model named
# "sia-monitor" appears in the model list; a chat with it streams the reply as usual and, above it, a status
# line that follows the reasoning: "step 4 · P(correct) 0.81 · 0.62 bits", then the final answer's.
#
# Why a Pipe and not a plain OpenAI connection: Open WebUI would stream the text but drop the `sia` field
# (it renders no extra chunk fields); a Pipe reads the field and turns it into `__event_emitter__` status
# events, which Open WebUI shows. Only the last user message is sent: the monitor writes its own system
# prompt and takes one question at a time.

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from openai import AsyncOpenAI
from pydantic import BaseModel, Field

Emitter = Callable[[dict[str, Any]], Awaitable[None]]


def status_line(sia: dict[str, Any]) -> str:
    """What the status line says for one `sia` payload: a step's, or the final summary's."""
    p = sia.get("p_correct")
    p_text = "—" if p is None else f"{p:.2f}"
    if "step" in sia:
        line = f"step {sia['step']} · P(correct) {p_text} · {sia['entropy_bits']:.2f} bits"
        decision = sia.get("decision")
        return line + (f" · guardrail: {decision.get('action')}" if decision else "")
    return f"answer {sia.get('answer')} · {sia.get('steps')} steps · P(correct) {p_text}"


class Pipe:
    class Valves(BaseModel):
        base_url: str = Field(default="http://127.0.0.1:8000/v1", description="sia-monitor serve's /v1 URL")
        api_key: str = Field(default="-", description="the server's key (any text when it has none)")
        model: str = Field(default="qwen2.5-coder-0.5b-instruct", description="the model the server serves")
        policy: str = Field(default="observe", description="guardrail: observe, stop or accept")
        max_tokens: int = Field(default=512, description="reply budget in tokens")

    def __init__(self) -> None:
        self.valves = self.Valves()

    def pipes(self) -> list[dict[str, str]]:
        return [{"id": "sia-monitor", "name": "sia-monitor"}]

    async def pipe(self, body: dict[str, Any], __event_emitter__: Emitter | None = None) -> AsyncIterator[str]:
        question = next((m.get("content") for m in reversed(body.get("messages", [])) if m.get("role") == "user"),
                        "")
        if isinstance(question, list):  # content parts: keep the text ones
            question = "".join(part.get("text", "") for part in question if part.get("type") == "text")
        client = AsyncOpenAI(base_url=self.valves.base_url, api_key=self.valves.api_key)
        stream = await client.chat.completions.create(
            model=self.valves.model, messages=[{"role": "user", "content": question}],
            max_tokens=self.valves.max_tokens, stream=True, extra_body={"sia": {"policy": self.valves.policy}})
        async for chunk in stream:
            if chunk.choices and chunk.choices[0].delta.content:
                yield chunk.choices[0].delta.content
            sia = (chunk.model_extra or {}).get("sia")
            if sia and __event_emitter__ is not None:
                done = "step" not in sia
                await __event_emitter__({"type": "status", "data": {"description": status_line(sia), "done": done,
                                                                     "hidden": False}})
