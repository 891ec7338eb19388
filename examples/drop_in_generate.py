"""Use SIAMonitor as a plain LogitsProcessor inside your own `model.generate` call.

    python examples/drop_in_generate.py "Sara has 5 pens and gives away 2. How many pens does she have?"
"""

from __future__ import annotations

import sys

from transformers import DynamicCache

from sia_monitor import NUMERIC, SIAMonitor, load_model
from sia_monitor.tasks.prompts import build_messages

question = sys.argv[1] if len(sys.argv) > 1 else "Sara has 5 pens and gives away 2. How many pens does she have?"
lm = load_model("qwen2.5-coder-0.5b-instruct")
inputs = lm.tokenizer.apply_chat_template(
    build_messages(question, NUMERIC), add_generation_prompt=True, return_tensors="pt", return_dict=True
)
cache = DynamicCache(config=lm.model.config)  # generate fills this same object; the monitor probes on it
monitor = SIAMonitor(lm.model, lm.tokenizer, cache, NUMERIC, questions=[question])
out = lm.model.generate(**inputs, cache=cache, logits_processor=[monitor], max_new_tokens=256, do_sample=False)
trajectory = monitor.finish(out)[0]

print(trajectory.final_text)
print()
for step in trajectory.steps:
    print(f"step {step.index + 1:>2}  H={step.entropy_bits:5.2f} bits  covered={step.covered:.2f}  top={step.top[:3]}")
print("parsed answer:", trajectory.parsed_answer)
