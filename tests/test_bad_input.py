"""Every way a user can hand the library bad input ends in an `SIAError` that says what is wrong."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest
import transformers

from sia_monitor import models
from sia_monitor.answers import NUMERIC, parse_choices
from sia_monitor.errors import SIAError
from sia_monitor.models import FIXTURE_MODEL, REGISTRY, load_model
from sia_monitor.runner import GenerationSettings, Monitor


@pytest.mark.parametrize("question", ["", "   \n\t "])
def test_empty_question(smol: Monitor, question: str) -> None:
    with pytest.raises(SIAError, match="The question is empty"):
        smol.generate(question, NUMERIC, GenerationSettings(max_new_tokens=5))
    with pytest.raises(SIAError, match="The question is empty"):
        list(smol.stream(question, NUMERIC, GenerationSettings(max_new_tokens=5)))  # re-raised in the caller


def test_empty_question_in_a_batch(smol: Monitor) -> None:
    with pytest.raises(SIAError, match="The question is empty"):
        smol.generate(["What is 1+1?", ""], [NUMERIC, parse_choices("A) 1 B) 2")])


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


@pytest.mark.parametrize("name", ["no-such-model", "./not/here", "qwen2.5-coder-7b"])
def test_unknown_model_name(name: str) -> None:
    with pytest.raises(SIAError, match="Unknown model"):
        load_model(name)


def test_missing_gguf_file(tmp_path: Path) -> None:
    with pytest.raises(SIAError, match="does not exist"):
        load_model(str(tmp_path / "model.gguf"))


@pytest.mark.parametrize(
    "content", [{}, {"notes.txt": "hello"}, {"config.json": "{}"}], ids=["empty", "text", "bad-config"]
)
def test_directory_that_is_not_a_model(tmp_path: Path, content: dict[str, str]) -> None:
    for name, text in content.items():
        (tmp_path / name).write_text(text)
    with pytest.raises(SIAError, match=re.escape(str(tmp_path))):
        load_model(str(tmp_path))


def test_file_that_is_not_gguf(tmp_path: Path) -> None:
    path = tmp_path / "weights.gguf"
    path.write_bytes(b"\x00" * 4096)
    with pytest.raises(SIAError):
        load_model(str(path))


def test_corrupt_registry_model_is_refused_and_nothing_is_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = REGISTRY[FIXTURE_MODEL]
    wrong = "0" * 64
    monkeypatch.setitem(REGISTRY, FIXTURE_MODEL, dataclasses.replace(spec, sha256=wrong))
    monkeypatch.setenv("SIA_MONITOR_CACHE", str(tmp_path))

    def must_not_load(*args: object, **kwargs: object) -> None:
        raise AssertionError("transformers was asked to load unverified weights")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", must_not_load)
    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", must_not_load)
    with pytest.raises(SIAError, match=f"failed verification: sha256 [0-9a-f]{{64}} != pinned {wrong}"):
        load_model(FIXTURE_MODEL)
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert leftovers == []  # the assembled bytes were deleted; no manifest, so nothing is reused later
    assert not (tmp_path / "models" / FIXTURE_MODEL).exists()
    assert models.cache_root() == tmp_path


def test_missing_registry_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = REGISTRY[FIXTURE_MODEL]
    missing = dataclasses.replace(spec, parts=(("sia_monitor_no_such_package_xyz", "model.gguf"),))
    monkeypatch.setitem(REGISTRY, FIXTURE_MODEL, missing)
    monkeypatch.setenv("SIA_MONITOR_CACHE", str(tmp_path))
    with pytest.raises(SIAError, match="is not installed.*pip install"):
        load_model(FIXTURE_MODEL)
