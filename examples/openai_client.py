"""Stream from `sia-monitor serve` with the plain `openai` client and read the monitor's `sia` fields.

    sia-monitor serve &                        # default model on 127.0.0.1:8000
    python examples/openai_client.py "A shop had 120 apples, sold 45 and got 30 more. How many now?"

The text arrives as usual; every chunk that closes a reasoning step also carries the answer entropy and
P(correct) after that step, and the last chunk a summary. `sia_of` turns them into typed records; any client
can read the same fields from `chunk.model_extra["sia"]` (or the raw JSON) without installing sia-monitor.
Monitor options go in `extra_body={"sia": {...}}`: here the guardrail stops a trace the calibrator gives up on.
"""

from __future__ import annotations

import os
import sys

import openai

from sia_monitor.client import SiaStep, SiaSummary, sia_of

question = sys.argv[1] if len(sys.argv) > 1 else "A shop had 120 apples, sold 45 and got 30 more. How many now?"
base_url = os.environ.get("SIA_MONITOR_URL", "http://127.0.0.1:8000/v1")
client = openai.OpenAI(base_url=base_url, api_key=os.environ.get("SIA_MONITOR_API_KEY", "-"))
model = client.models.list().data[0].id

stream = client.chat.completions.create(
    model=model, messages=[{"role": "user", "content": question}], max_tokens=int(os.environ.get("MAX_TOKENS", 256)),
    stream=True, extra_body={"sia": {"policy": "stop", "stop_below": 0.2}})
for chunk in stream:
    if chunk.choices and chunk.choices[0].delta.content:
        print(chunk.choices[0].delta.content, end="", flush=True)
    sia = sia_of(chunk)
    if isinstance(sia, SiaStep):
        p = "—" if sia.p_correct is None else f"{sia.p_correct:.2f}"
        print(f"  [step {sia.step} · {sia.entropy_bits:.2f} bits · P(correct) {p}]", flush=True)
        if sia.decision:
            print(f"  [guardrail: {sia.decision.get('action')}: {sia.decision.get('reason')}]")
    elif isinstance(sia, SiaSummary):
        p = "—" if sia.p_correct is None else f"{sia.p_correct:.2f}"
        print(f"\nanswer {sia.answer} · {sia.steps} steps · P(correct) {p} · {sia.tokens} tokens "
              f"({sia.finish_reason})")
