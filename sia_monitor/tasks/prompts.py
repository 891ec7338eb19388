"""Prompt templates and answer-forcing suffixes: the single place where the prompt format is defined.

The probe's suffix is the model's own way of stating an answer ("The answer is ..."), appended at the start
of a line after a completed step. Suffixes were chosen by measurement on the default model (Qwen2.5-Coder-0.5B-Instruct, 12 ARC-Easy traces,
label mass at the last step): "The answer is (" puts 0.997 of the probability on option labels, versus 0.85
for "The answer is", 0.33 for "The answer is " and 0.28 for "Answer: ". For numbers, "The answer is " (trailing
space) makes the next token a digit, since Qwen and SmolLM2 write numbers one digit per token.
"""

from __future__ import annotations

from sia_monitor.errors import SIAError
from sia_monitor.tasks.answers import AnswerSpace

# Never put a placeholder such as "N" or "X" in an instruction: small models copy it verbatim. Never ask for
# a fixed answer phrase either: measured on 8 SVAMP items with the default model, "finish with a line 'The
# answer is' ..." made it skip the reasoning on 4-8 of 8 (a bare one-line answer), while asking only to
# "state the final answer at the end" gave reasoning on 8 of 8 (mean 178 tokens) at equal accuracy. The
# answer parser reads both "The answer is ..." lines and \boxed{...}, which is what this model writes.
SYSTEM_PROMPTS: dict[str, str] = {
    "numeric": (
        "Solve the math problem step by step, writing one short step per line, "
        "and state the final answer at the end."
    ),
    "choice": (
        "Answer the multiple-choice question step by step, writing one short step per line, "
        "and state the letter of the correct option at the end."
    ),
    "candidates": (
        "Answer the question step by step, writing one short step per line, "
        "and state the final answer, one of the listed answers, at the end."
    ),
}

# What the probe appends after a completed step (at the start of a new line).
PROBE_SUFFIXES: dict[str, str] = {
    "numeric": "The answer is ",
    "choice": "The answer is (",
    "candidates": "The answer is ",
}


def format_question(question: str, space: AnswerSpace) -> str:
    """The user turn: the question, then the options (one per line) or the allowed answers."""
    question = question.strip()
    if not question:
        raise SIAError("The question is empty.", "Pass the question text, e.g. sia-monitor run \"What is 2+3?\".")
    if space.kind == "choice" and space.options:
        return question + "\n" + "\n".join(f"{label}) {text}" for label, text in zip(space.labels, space.options))
    if space.kind == "candidates":
        return question + "\nPossible answers: " + "; ".join(space.candidates)
    return question


def build_messages(question: str, space: AnswerSpace, system_prompt: str | None = None) -> list[dict[str, str]]:
    """Chat messages for a question in an answer space (system instruction + user turn)."""
    return [
        {"role": "system", "content": system_prompt or SYSTEM_PROMPTS[space.kind]},
        {"role": "user", "content": format_question(question, space)},
    ]


def probe_suffix(space: AnswerSpace) -> str:
    return PROBE_SUFFIXES[space.kind]
