"""Every way a user can hand the library bad input ends in an `SIAError` that says what is wrong."""

from __future__ import annotations

import dataclasses
import logging
import random
import re
from collections.abc import Callable
from pathlib import Path

import pytest
import transformers

from sia_monitor import models
from sia_monitor.backends.base import GenerationSettings
from sia_monitor.backends.in_process import Monitor
from sia_monitor.errors import SIAError
from sia_monitor.models import FIXTURE_MODEL, REGISTRY, check_model_source, load_model, locate_parts
from sia_monitor.tasks.answers import NUMERIC, parse_choices


@pytest.mark.parametrize("question", ["", "   \n\t "])
def test_empty_question(smol: Monitor, question: str) -> None:
    with pytest.raises(SIAError, match="The question is empty"):
        smol.generate(question, NUMERIC, GenerationSettings(max_new_tokens=5))
    with pytest.raises(SIAError, match="The question is empty"):
        list(smol.stream(question, NUMERIC, GenerationSettings(max_new_tokens=5)))  # re-raised in the caller


def test_empty_question_in_a_batch(smol: Monitor) -> None:
    with pytest.raises(SIAError, match="The question is empty"):
        smol.generate(["What is 1+1?", ""], [NUMERIC, parse_choices("A) 1 B) 2")])


def test_empty_batch_generates_nothing(smol: Monitor) -> None:
    assert smol.generate([]) == []
    assert smol.generate([], []) == []
    assert smol.generate((), NUMERIC, GenerationSettings(max_new_tokens=5)) == []


def test_prompt_longer_than_the_context_window(smol: Monitor) -> None:
    window = smol.model.config.max_position_embeddings
    question = "Count the apples. " * (window // 4)
    assert len(smol.tokenizer(question)["input_ids"]) > window
    with pytest.raises(SIAError, match=f"context window is {window}"):
        smol.generate(question, NUMERIC, GenerationSettings(max_new_tokens=5))


def test_max_new_tokens_is_capped_by_the_context_window(smol: Monitor) -> None:
    window = smol.model.config.max_position_embeddings
    encoding, max_new = smol.encode(["What is 1+1?"], [NUMERIC], 10 * window)
    assert max_new == window - encoding["input_ids"].shape[1] - 16


@pytest.mark.parametrize("name", ["no-such-model", "qwen2.5-coder-7b", "x"])
def test_unknown_model_name(name: str) -> None:
    for call in (check_model_source, load_model):
        with pytest.raises(SIAError, match=f"Unknown model '{re.escape(name)}'") as caught:
            call(name)
        assert all(registry_name in str(caught.value) for registry_name in REGISTRY)


@pytest.mark.parametrize(
    ("value", "shown"),
    [("{tmp}/nosuch", "Model path {tmp}/nosuch does not exist"), ("./models/x", "Model path models/x does not exist"),
     ("~/m", "Model path {tmp}/m does not exist"), ("x.gguf", "GGUF file x.gguf does not exist"),
     ("./not/here", "Model path not/here does not exist"), ("a/b/c", "Model path a/b/c does not exist")],
)
def test_missing_model_path_says_it_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, value: str, shown: str
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    value, shown = value.format(tmp=tmp_path), shown.format(tmp=tmp_path)
    for call in (check_model_source, load_model):
        with pytest.raises(SIAError, match=re.escape(shown)) as caught:
            call(value)
        assert "Unknown model" not in str(caught.value)


def test_owner_slash_name_is_a_hub_id(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing called "owner/name" here, so it can only be a hub repository
    assert check_model_source("owner/name") == "owner/name"


def _fixture_gguf() -> Path:
    return locate_parts(REGISTRY[FIXTURE_MODEL])[0]


def _model_dir(root: Path, files: dict[str, str | bytes]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (root / name).write_bytes(content.encode() if isinstance(content, str) else content)
    return root


_LOOKS_LIKE_A_MODEL = {"config.json": '{"model_type": "llama"}', "tokenizer.json": "{}", "model.safetensors": "x"}


def test_check_model_source_returns_the_id_load_model_records(tmp_path: Path) -> None:
    assert check_model_source(FIXTURE_MODEL) == FIXTURE_MODEL
    assert check_model_source(str(_fixture_gguf())) == _fixture_gguf().stem
    directory = _model_dir(tmp_path / "my-model", _LOOKS_LIKE_A_MODEL)
    assert check_model_source(str(directory)) == "my-model"
    assert check_model_source(str(directory) + "/") == "my-model"
    cached = models.prepare_registry_model(REGISTRY[FIXTURE_MODEL])  # converted once by the session fixtures
    assert check_model_source(str(cached)) == FIXTURE_MODEL


def test_check_model_source_checks_registry_packages(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    spec = REGISTRY[FIXTURE_MODEL]
    missing = dataclasses.replace(spec, parts=(("sia_monitor_no_such_package_xyz", "model.gguf"),))
    monkeypatch.setitem(REGISTRY, FIXTURE_MODEL, missing)
    monkeypatch.setenv("SIA_MONITOR_CACHE", str(tmp_path))  # no converted copy to fall back on
    with pytest.raises(SIAError, match="is not installed.*pip install"):
        check_model_source(FIXTURE_MODEL)


def _truncated_fixture(tmp_path: Path, size: int) -> Path:
    path = tmp_path / f"truncated-{size}.gguf"
    with _fixture_gguf().open("rb") as source:
        path.write_bytes(source.read(size))
    return path


def _random_gguf(tmp_path: Path) -> Path:
    path = tmp_path / "random.gguf"
    path.write_bytes(random.Random(0).randbytes(8192))
    return path


_TRUNCATED = "is truncated or not a GGUF file"
_CONFIG_ONLY = {"config.json": '{"model_type": "llama"}'}
_BAD_MODELS: dict[str, tuple[Callable[[Path], Path], str]] = {
    "truncated-header": (lambda t: _truncated_fixture(t, 100_000), _TRUNCATED),
    "truncated-data": (lambda t: _truncated_fixture(t, 2_000_000), _TRUNCATED),
    "cut-by-one-byte": (lambda t: _truncated_fixture(t, _fixture_gguf().stat().st_size - 1), _TRUNCATED),
    "random-bytes": (_random_gguf, f"{_TRUNCATED} (it does not start with the GGUF magic bytes)"),
    "config-not-json": (lambda t: _model_dir(t / "m", {**_LOOKS_LIKE_A_MODEL, "config.json": "not json{"}),
                        "config.json is not valid JSON"),
    "config-no-model-type": (lambda t: _model_dir(t / "m", {**_LOOKS_LIKE_A_MODEL, "config.json": '{"a": 1}'}),
                             'config.json has no "model_type"'),
    "config-a-list": (lambda t: _model_dir(t / "m", {**_LOOKS_LIKE_A_MODEL, "config.json": "[1, 2]"}),
                      'config.json has no "model_type"'),
    "no-config": (lambda t: _model_dir(t / "m", {"notes.txt": "hello"}), "it has no config.json"),
    "no-tokenizer": (lambda t: _model_dir(t / "m", {**_CONFIG_ONLY, "tokenizer_config.json": "{}",
                                                    "model.safetensors": "x"}), "has no tokenizer vocabulary"),
    "no-weights": (lambda t: _model_dir(t / "m", {**_CONFIG_ONLY, "tokenizer.json": "{}"}), "has no model weights"),
    "missing": (lambda t: t / "nosuch", "does not exist"),
}


@pytest.mark.parametrize("case", list(_BAD_MODELS))
def test_bad_model_is_refused_cheaply_with_one_clear_line(tmp_path: Path, case: str) -> None:
    make, expected = _BAD_MODELS[case]
    path = make(tmp_path)
    for call in (check_model_source, load_model):
        with pytest.raises(SIAError, match=re.escape(expected)) as caught:
            call(str(path))
        assert str(path) in str(caught.value)


_LEAKS = ("Traceback", "warn", "Warn", "WARN", "unpack_from", "Couldn't instantiate", "backend tokenizer")


def _run_cli(capfd: pytest.CaptureFixture[str], model: str) -> str:
    from sia_monitor.cli import main

    capfd.readouterr()
    assert main(["run", "What is 2+3?", "--model", model]) == 2
    captured = capfd.readouterr()
    assert not any(leak in captured.out + captured.err for leak in _LEAKS), captured
    assert captured.err.count("error:") == 1, captured.err
    return "".join(captured.err.split())  # the console may wrap the one line at its width, even inside a word


def _squeezed(text: str) -> str:
    return "".join(text.split())


@pytest.mark.parametrize("case", ["truncated-header", "truncated-data", "random-bytes", "config-not-json",
                                  "config-no-model-type", "no-tokenizer", "missing"])
def test_cli_reports_a_bad_model_as_one_line(tmp_path: Path, capfd: pytest.CaptureFixture[str], case: str) -> None:
    make, expected = _BAD_MODELS[case]
    path = make(tmp_path)
    err = _run_cli(capfd, str(path))
    assert _squeezed(expected) in err and _squeezed(str(path)) in err


@pytest.mark.parametrize("case", ["unknown-model-type", "weights-cut-short"])
def test_transformers_logging_stays_quiet_when_loading_fails(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], case: str
) -> None:
    # Both pass the cheap checks (a real tokenizer, a config with a model_type) and fail inside transformers,
    # which warns on its logger first ("You are using a model of type `nosuchtype` ..."); nothing of it but our
    # one line may reach the user.
    cached = models.prepare_registry_model(REGISTRY[FIXTURE_MODEL])
    files: dict[str, str | bytes] = {"tokenizer.json": (cached / "tokenizer.json").read_bytes()}
    if case == "unknown-model-type":
        files |= {"config.json": '{"model_type": "nosuchtype"}', "model.safetensors": "x"}
        expected = "does not recognize this architecture"
    else:
        files |= {"config.json": (cached / "config.json").read_bytes(),
                  "model.safetensors": (cached / "model.safetensors").read_bytes()[:1000]}
        expected = "is not a causal language model that transformers can load"
    directory = _model_dir(tmp_path / case, files)
    verbosity = transformers.logging.get_verbosity()
    # transformers' own stderr handler was bound to whatever sys.stderr was when it was first configured (in a
    # test session, pytest's global capture), so capfd alone cannot see it: listen on its logger as well.
    heard: list[logging.LogRecord] = []
    listener = logging.Handler(logging.WARNING)
    listener.emit = heard.append  # type: ignore[method-assign]
    logging.getLogger("transformers").addHandler(listener)
    try:
        err = _run_cli(capfd, str(directory))
    finally:
        logging.getLogger("transformers").removeHandler(listener)
    assert _squeezed(expected) in err
    assert [record.getMessage() for record in heard] == []
    assert transformers.logging.get_verbosity() == verbosity  # restored after the load
