"""The command-line options every command shares, parsed once into typed objects, and one way from them to a
ready monitor.

Why one place: `run`, `tui`, `collect` and `vote` (and next `serve`) take the same model, answer-space,
decoding, calibrator and guardrail options. Each option is declared, defaulted and refused here once; the
commands only add what is theirs. Everything that can be refused without a model is refused by `prepare`,
before `load_monitor` spends seconds loading one.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from sia_monitor.backends.base import GenerationSettings
from sia_monitor.errors import SIAError
from sia_monitor.guardrail.policy import GuardrailPolicy
from sia_monitor.guardrail.vote import VotePolicy
from sia_monitor.models import DEFAULT_MODEL, REGISTRY, check_model_source
from sia_monitor.probing.hidden_states import HiddenStateSpec
from sia_monitor.probing.segmentation import SEGMENTER_MODES, SegmenterMode, StepSegmenter
from sia_monitor.tasks.answers import NUMERIC, AnswerSpace, parse_choices, split_inline_choices
from sia_monitor.tasks.prompts import format_question
from sia_monitor.trajectory import check_writable

if TYPE_CHECKING:
    from sia_monitor.backends.base import Backend
    from sia_monitor.scoring import StepScorer

ANSWER_TYPES = ("auto", "numeric", "choice", "candidates")


# -- declaring ----------------------------------------------------------------------------------------------
def add_model_options(parser: argparse.ArgumentParser, max_new_tokens: int = 512, temperature: float = 0.0) -> None:
    """--model, the decoding options and the step mode (`run`, `tui`, `collect`, `vote`: a vote samples, so its
    defaults differ)."""
    parser.add_argument(
        "--model", default=None,
        help=f"registry name ({', '.join(REGISTRY)}), a local model directory, a .gguf file, "
        f"or a hub id (online only). Default: {DEFAULT_MODEL}. With --engine: the name the served model's "
        "trajectories and calibrators go by (default: the engine's name for it)",
    )
    parser.add_argument(
        "--engine", default=None, metavar="URL",
        help="run on a serving engine at URL (llama.cpp's llama-server, e.g. http://127.0.0.1:8080) instead of "
        "loading the model here; the probe runs as prefix-cached requests (README, \"Scaling out\")",
    )
    parser.add_argument("--concurrency", type=int, default=None, metavar="N",
                        help="with --engine: generations in flight at once, each in its own engine slot "
                        "(default: the engine's slots, llama-server -np)")
    parser.add_argument("--max-new-tokens", type=int, default=max_new_tokens,
                        help=f"generation budget (default {max_new_tokens})")
    parser.add_argument("--temperature", type=float, default=temperature,
                        help="0 = greedy (default); >0 samples" if temperature == 0 else
                        f"sampling temperature (default {temperature:g})")
    parser.add_argument("--seed", type=int, default=0, help="random seed for sampling (default 0)")
    parser.add_argument("--steps", choices=SEGMENTER_MODES, default="line",
                        help="where a reasoning step ends: at a newline (line, default), at a sentence end, "
                        "or where --step-regex matches")
    parser.add_argument("--step-regex", default=None, help="pattern that ends a step, with --steps regex")


def add_answer_options(parser: argparse.ArgumentParser, help_type: str | None = None) -> None:
    """--answer-type, --choices, --candidates (`run`, `tui`)."""
    parser.add_argument("--answer-type", choices=ANSWER_TYPES, default="auto",
                        help=help_type or "answer space: numbers, option labels, or --candidates; auto = choice "
                        "when options are given (with --choices or written as 'A) ... B) ...' after the "
                        "question), else numeric")
    parser.add_argument("--choices", default=None, help='the options, e.g. "A) red B) blue C) green"')
    parser.add_argument("--candidates", default=None, help='answers to score exactly, separated by ";"')


def add_hidden_state_options(parser: argparse.ArgumentParser, default: bool | None) -> None:
    """--hidden-states / --no-hidden-states, --hidden-dims (`collect`: on by default; `run`: None, i.e. on when
    the calibrator in use reads them)."""
    when = {True: "on", False: "off", None: "on when the calibrator reads them"}[default]
    parser.add_argument("--hidden-states", action=argparse.BooleanOptionalAction, default=default,
                        help="record each step's hidden states at the answer slot (middle, 3/4 and last layer, "
                        "randomly projected, float16) for hidden-state calibrators; --no-hidden-states also "
                        f"makes `--calibrator auto` take the entropy-only calibrator (default: {when})")
    parser.add_argument("--hidden-dims", type=int, default=HiddenStateSpec.dims,
                        help=f"numbers kept per layer (default {HiddenStateSpec.dims})")


def add_calibrator_options(parser: argparse.ArgumentParser) -> None:
    """--calibrator, --force (`run`, `tui`)."""
    parser.add_argument("--calibrator", default="auto",
                        help="where P(correct) comes from: auto (the calibrator shipped for this model and answer "
                        "type, if any), none, or a .skops file")
    parser.add_argument("--force", action="store_true",
                        help="use --calibrator even if it was fitted for another model or answer type")


def add_guardrail_options(parser: argparse.ArgumentParser) -> None:
    """The guardrail policy's thresholds (`tui`)."""
    guard = parser.add_argument_group("guardrail")
    guard.add_argument("--auto", action="store_true", help="start with the guardrail on (toggle it with `a`)")
    guard.add_argument("--min-steps", type=int, default=3, help="never act before this many steps (default 3)")
    guard.add_argument("--stop-below", type=float, default=0.2,
                       help="stop when P(correct) stays below this (default 0.2)")
    guard.add_argument("--patience", type=int, default=3, help="... for this many steps in a row (default 3)")
    guard.add_argument("--max-resamples", type=int, default=0,
                       help="resample a failing trace up to this many times before stopping, keeping the best "
                       "attempt (default 0)")
    guard.add_argument("--accept-above", type=float, default=None,
                       help="end the reasoning early when P(correct) reaches this and the top answer has held "
                       "for 2 steps and is not just a number from the question (default: never; 0.5 suits the "
                       "shipped numeric calibrator)")
    guard.add_argument("--entropy-above", type=float, default=1.0,
                       help="without a calibrator: a step at or above this many bits counts as unsure (default 1)")
    guard.add_argument("--temperature-bump", type=float, default=0.4,
                       help="each resample samples this much hotter than the last, with a new seed (default 0.4)")


def add_vote_options(parser: argparse.ArgumentParser) -> None:
    """The vote policy: how many samples, and its three parts, each switchable (`vote`)."""
    defaults = VotePolicy()
    vote = parser.add_argument_group("vote")
    vote.add_argument("-n", "--samples", type=int, default=defaults.samples,
                      help=f"samples to draw at most (default {defaults.samples})")
    vote.add_argument("--width", type=int, default=defaults.width,
                      help=f"samples generated together; a sample that ends or is killed frees its row for the "
                      f"next (default {defaults.width})")
    kill = defaults.kill
    assert kill is not None
    vote.add_argument("--kill", action=argparse.BooleanOptionalAction, default=True,
                      help="kill a sample whose P(correct) stays low (default: on)")
    vote.add_argument("--kill-below", type=float, default=kill.stop_below,
                      help=f"... below this P(correct) (default {kill.stop_below:g})")
    vote.add_argument("--kill-patience", type=int, default=kill.patience,
                      help=f"... for this many steps in a row (default {kill.patience})")
    vote.add_argument("--kill-min-steps", type=int, default=kill.min_steps,
                      help=f"... never before this many steps (default {kill.min_steps})")
    vote.add_argument("--weights", action=argparse.BooleanOptionalAction, default=defaults.weighted,
                      help="weigh each vote by its sample's last P(correct) (default: on)")
    vote.add_argument("--weight-power", type=float, default=defaults.weight_power,
                      help=f"... raised to this power (default {defaults.weight_power:g})")
    vote.add_argument("--adaptive-stop", action=argparse.BooleanOptionalAction, default=defaults.adaptive_stop,
                      help="stop drawing once the vote is decided (default: on)")
    vote.add_argument("--stop-confidence", type=float, default=defaults.stop_confidence,
                      help=f"... with this posterior probability that the leader wins (default "
                      f"{defaults.stop_confidence:g})")
    vote.add_argument("--min-votes", type=int, default=defaults.min_votes,
                      help=f"... and at least this many votes (default {defaults.min_votes})")


# -- parsed -------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelOptions:
    """Which model, and where its reasoning steps end."""

    model: str = DEFAULT_MODEL
    steps: SegmenterMode = "line"
    step_regex: str | None = None
    engine: str | None = None  # a serving engine's URL: the model runs there, `model` only names it
    named: bool = False  # --model was given (with an engine: it overrides the engine's name for the model)
    concurrency: int | None = None  # with an engine: generations in flight at once

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> ModelOptions:
        return cls(args.model or DEFAULT_MODEL, args.steps, args.step_regex, getattr(args, "engine", None),
                   args.model is not None, getattr(args, "concurrency", None))

    def check(self) -> str:
        """Refuse a bad step mode or model source without loading anything; return the model id. With an
        engine, it is reached now (one line if it is down), and the model id is its name for the model."""
        StepSegmenter(self.steps, self.step_regex)
        if self.concurrency is not None and (self.engine is None or self.concurrency < 1):
            raise SIAError("--concurrency needs --engine and must be at least 1." if self.engine else
                           "--concurrency applies to --engine only: in process, --batch-size sets the batch.")
        if self.engine is not None:
            from sia_monitor.backends.engine import engine_model_id
            from sia_monitor.engines import connect

            return self.model if self.named else engine_model_id(connect(self.engine))
        return check_model_source(self.model)


@dataclass(frozen=True)
class DecodingOptions:
    max_new_tokens: int = 512
    temperature: float = 0.0
    seed: int = 0

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> DecodingOptions:
        return cls(args.max_new_tokens, args.temperature, args.seed)

    def settings(self) -> GenerationSettings:
        """The settings `generate` runs with; `GenerationSettings` refuses bad values itself."""
        return GenerationSettings(max_new_tokens=self.max_new_tokens, temperature=self.temperature, seed=self.seed)


def hidden_state_spec(args: argparse.Namespace) -> HiddenStateSpec | None:
    """The spec from `add_hidden_state_options`, or None when off; `HiddenStateSpec` refuses bad dims itself."""
    return HiddenStateSpec(dims=args.hidden_dims) if args.hidden_states else None


@dataclass(frozen=True)
class AnswerOptions:
    answer_type: str = "auto"
    choices: str | None = None
    candidates: str | None = None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> AnswerOptions:
        return cls(args.answer_type, args.choices, args.candidates)

    def resolve(self, question: str) -> tuple[str, AnswerSpace]:
        """(the question, its answer space): options written after the question are cut off it."""
        kind = self.answer_type
        if self.choices and kind in ("auto", "choice"):
            return question, parse_choices(self.choices)
        if self.candidates and kind in ("auto", "candidates"):
            wanted = tuple(c.strip() for c in self.candidates.split(";") if c.strip())
            return question, AnswerSpace("candidates", candidates=wanted)
        if kind in ("auto", "choice"):
            inline = split_inline_choices(question)
            if inline is not None:
                return inline
            if kind == "choice":
                raise SIAError("--answer-type choice needs options.",
                               'Pass --choices "A) ... B) ..." or end the question with them.')
        if kind == "candidates":
            raise SIAError("--answer-type candidates needs --candidates.", 'Pass --candidates "yes; no".')
        return question, NUMERIC


@dataclass(frozen=True)
class CalibratorOptions:
    calibrator: str = "auto"
    force: bool = False

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CalibratorOptions:
        return cls(args.calibrator, args.force)

    def load(self, model_id: str, space: AnswerSpace, err: Console, hidden_states: bool = False) -> StepScorer | None:
        """The calibrator, or None (said once on `err`, so the user knows P(correct) is missing); which one is in
        use is said too. Needs only the model id, so a bad --calibrator is refused before the model loads.

        `hidden_states`: whether the steps it will score carry hidden states (an in-process monitor records
        them for a calibrator that reads them; an engine, or --no-hidden-states, does not). With auto this picks
        the hidden-state calibrator where one ships; a chosen file that reads them is refused without them."""
        if self.calibrator == "none":
            return None
        from calibrators import calibrator_for
        from calibrators.fitting import load_recipes

        calibrator = calibrator_for(model_id, space, self.calibrator, force=self.force, hidden_states=hidden_states)
        if calibrator is not None and calibrator.hidden_state_spec is not None and not hidden_states:
            raise SIAError(f"Calibrator {calibrator.describe()} reads hidden states, which these steps will not have "
                           "(engines give none; --no-hidden-states turns them off).",
                           "Use the entropy-only calibrator: --calibrator auto, or a file fitted with "
                           "`sia-monitor fit --data` without --hidden-states.")
        if calibrator is not None:
            err.print(f"[dim]P(correct) from the calibrator {escape(calibrator.describe())}[/]")
        else:
            fit_hint = any(recipe.model == model_id for recipe in load_recipes())
            err.print(f"[dim]No calibrator ships for {escape(model_id)} with {space.kind} answers: showing the "
                      "entropy only" + (" (fit one with `sia-monitor fit`)." if fit_hint else
                                        "; calibrators/README.md says how to fit one on your own trajectories.")
                      + "[/]")
        return calibrator


def guardrail_policy(args: argparse.Namespace) -> GuardrailPolicy:
    """The policy from `add_guardrail_options`; `GuardrailPolicy` refuses bad thresholds itself."""
    return GuardrailPolicy(
        min_steps=args.min_steps, stop_below=args.stop_below, patience=args.patience,
        max_resamples=args.max_resamples, accept_above=args.accept_above, entropy_above=args.entropy_above,
        temperature_bump=args.temperature_bump,
    )


def vote_policy(args: argparse.Namespace) -> VotePolicy:
    """The policy from `add_vote_options`; `VotePolicy` and `GuardrailPolicy` refuse bad values themselves."""
    kill = GuardrailPolicy(min_steps=args.kill_min_steps, stop_below=args.kill_below, patience=args.kill_patience)
    return VotePolicy(samples=args.samples, width=args.width, kill=kill if args.kill else None,
                      weighted=args.weights, weight_power=args.weight_power, adaptive_stop=args.adaptive_stop,
                      stop_confidence=args.stop_confidence, min_votes=args.min_votes)


# -- from options to a monitor ------------------------------------------------------------------------------
@dataclass
class Prepared:
    """A generation checked end to end without a model: what `load_monitor` and the command need next."""

    question: str
    space: AnswerSpace
    settings: GenerationSettings
    model: ModelOptions
    model_id: str
    scorer: StepScorer | None


def describe_space(space: AnswerSpace, question: str, err: Console) -> None:
    """Say which answer space was chosen, so a question misread as multiple choice (or not) is visible."""
    if space.kind == "choice":
        detail = ", ".join(f"{label}) {option}" for label, option in zip(space.labels, space.options, strict=True))
        err.print(f"[dim]answer space: choice ({escape(detail)}); question: {escape(question)}[/]")
    elif space.kind == "candidates":
        err.print(f"[dim]answer space: candidates ({escape('; '.join(space.candidates))})[/]")
    else:
        err.print("[dim]answer space: numeric[/]")


def prepare(args: argparse.Namespace, err: Console, save: Path | None = None) -> Prepared:
    """Everything `run` and `tui` check before loading a model, in one pass: the question and its answer space,
    decoding settings, the step mode and model source, that `save` can be written, and the calibrator. A bad
    value ends here as one line, in well under a second of work."""
    question, space = AnswerOptions.from_args(args).resolve(args.question)
    format_question(question, space)  # the same check generation makes
    settings = DecodingOptions.from_args(args).settings()
    model = ModelOptions.from_args(args)
    model_id = model.check()
    if save is not None:
        check_writable(save)
    hidden_states = model.engine is None and getattr(args, "hidden_states", None) is not False
    scorer = CalibratorOptions.from_args(args).load(model_id, space, err, hidden_states=hidden_states)
    describe_space(space, question, err)
    return Prepared(question, space, settings, model, model_id, scorer)


def hidden_states_for(scorer: StepScorer | None, asked: HiddenStateSpec | None) -> HiddenStateSpec | None:
    """What the monitor records: the calibrator's hidden states when it reads them (it cannot score steps
    without them), else what the user asked for. Asking for other ones than the calibrator reads is refused:
    the monitor records one kind."""
    needed = getattr(scorer, "hidden_state_spec", None)
    if needed is None:
        return asked
    if asked is not None and asked.dims != needed.dims:
        raise SIAError(f"--hidden-dims {asked.dims} asks for other hidden states than the calibrator reads "
                       f"({needed.dims} numbers per layer).", "Drop --hidden-dims, or use another calibrator.")
    return needed


def load_monitor(model: ModelOptions, err: Console, scorer: StepScorer | None = None, **kwargs: Any) -> Backend:
    """The one way from options to a ready backend: the model loaded (with a status line), or the engine
    reached, the step mode set, and the scorer that fills P(correct)."""
    if model.engine is not None:
        from sia_monitor.backends.engine import EngineBackend
        from sia_monitor.engines import connect

        if kwargs.pop("hidden_states", None) is not None:
            err.print("[dim]an engine gives no hidden states: steps are recorded without them[/]")
        client = connect(model.engine)
        return EngineBackend(client, segmenter=model.steps, step_regex=model.step_regex, scorer=scorer,
                             model_id=model.model if model.named else None, concurrency=model.concurrency)
    from sia_monitor.backends.in_process import Monitor
    from sia_monitor.models import convert_if_needed

    kwargs["hidden_states"] = hidden_states_for(scorer, kwargs.get("hidden_states"))

    convert_if_needed(model.model)  # a first run's conversion has a progress bar of its own, not the spinner
    with err.status(f"Loading {model.model}"):
        return Monitor.load(model.model, segmenter=model.steps, step_regex=model.step_regex, scorer=scorer, **kwargs)
