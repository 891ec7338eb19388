"""Generate with live P(correct) and the guardrail, no UI: resample a trace the calibrator gives up on.

    python examples/guarded_generation.py "A shop had 120 apples, sold 45 and got 30 more. How many now?"

Every step is scored by the calibrator shipped for the default model; when P(correct) stays below 0.2 for
3 steps the trace is cut and regenerated with a new seed and a higher temperature (up to 2 times), and the
best attempt is kept. Each decision says why it was taken.
"""

from __future__ import annotations

import sys

from calibrators import calibrator_for
from sia_monitor import NUMERIC, Monitor
from sia_monitor.backends.base import GenerationSettings
from sia_monitor.guardrail.live import run_guarded
from sia_monitor.guardrail.policy import GuardrailPolicy

question = sys.argv[1] if len(sys.argv) > 1 else "A shop had 120 apples, sold 45 and got 30 more. How many now?"
model_id = "qwen2.5-coder-0.5b-instruct"
monitor = Monitor.load(model_id, scorer=calibrator_for(model_id, NUMERIC))


def show(event) -> None:  # type: ignore[no-untyped-def]
    if event.kind == "step" and event.step is not None:
        print(f"  step {event.step.index + 1:>2}  H={event.step.entropy_bits:4.2f} bits  "
              f"P(correct)={event.step.p_correct:.2f}  top={event.step.top[:2]}")
    elif event.kind == "decision":
        print(f"  -> {event.detail.get('action')}: {event.detail.get('reason')}")


result = run_guarded(monitor, question, NUMERIC, GuardrailPolicy(max_resamples=2),
                     GenerationSettings(max_new_tokens=384), on_event=show)
best = result.best
print(f"\nkept attempt {result.attempts.index(best) + 1} of {len(result.attempts)}: answer {best.parsed_answer} "
      f"({best.finish_reason}, {best.n_tokens} tokens)")
