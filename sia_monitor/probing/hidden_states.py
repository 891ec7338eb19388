"""The model's hidden state at the answer slot, projected to a few numbers per layer, for correctness probes.

Why record it: published correctness probes read the hidden state at the end of a reasoning chunk (AUROC
0.84-0.95 with 1.5B-72B models). Our probe forward already computes it, at the last suffix position ("The
answer is" -> the slot the answer fills), so keeping it costs one small matrix product per step. Every
trajectory collected with it can train a hidden-state calibrator later, without generating again.

Why a projection: 3 layers x 896 floats per step would dwarf the record. Each chosen layer's vector is
multiplied by a fixed random matrix of +-1/sqrt(dims) entries (Achlioptas' Johnson-Lindenstrauss projection:
distances, and so linear separability, survive) down to `dims` numbers, stored as float16.

Why the signs come from SHA-256: a calibrator fitted on vectors collected today is applied to vectors computed
on another machine, years later. torch's and numpy's random streams are not promised to stay the same across
versions and CPU kernels; SHA-256 of (seed, block) is, and anyone can rebuild the matrix from the record's
seed in any language (`projection_matrix` is the definition).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING

from sia_monitor.errors import SIAError
from sia_monitor.trajectory import HiddenState

if TYPE_CHECKING:  # torch only where the matrix is built: the spec is parsed with the options, before torch loads
    import torch

PROJECTION = "sha256-sign-v1"


@dataclass(frozen=True)
class HiddenStateSpec:
    """Which hidden states each step records. `layers` index the model's `hidden_states` (0 = the embeddings,
    `num_hidden_layers` = the last layer, after the final norm); the default is the middle, 3/4 and last."""

    dims: int = 64
    seed: int = 0
    layers: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not 1 <= self.dims <= 4096:
            raise SIAError(f"--hidden-dims must be between 1 and 4096, not {self.dims}.")
        if self.layers is not None and not self.layers:
            raise SIAError("hidden-state layers must name at least one layer.")

    def resolve_layers(self, num_layers: int) -> tuple[int, ...]:
        """The `hidden_states` indices for a model with `num_layers` decoder layers."""
        layers = self.layers or (num_layers // 2, (3 * num_layers) // 4, num_layers)
        for layer in layers:
            if not 0 <= layer <= num_layers:
                raise SIAError(f"hidden-state layer {layer} does not exist: the model has layers 0-{num_layers}.")
        return tuple(dict.fromkeys(layers))


@lru_cache(maxsize=8)
def projection_matrix(seed: int, hidden_size: int, dims: int) -> torch.Tensor:
    """(hidden_size, dims) float32, entries +-1/sqrt(dims): bit k of the row-major matrix is bit k of
    SHA-256(f"{seed}:{block}") blocks concatenated (block = k // 256, bits most significant first); 1 -> +."""
    import torch

    total = hidden_size * dims
    stream = b"".join(hashlib.sha256(f"{seed}:{block}".encode()).digest() for block in range(math.ceil(total / 256)))
    bits = torch.frombuffer(bytearray(stream), dtype=torch.uint8)
    signs = ((bits.unsqueeze(1) >> torch.arange(7, -1, -1, dtype=torch.uint8)) & 1).flatten()[:total]
    return (signs.float() * 2 - 1).reshape(hidden_size, dims) / math.sqrt(dims)


class HiddenStateProjector:
    """Turns the probe forward's hidden states at one position into a step's `HiddenState` record."""

    def __init__(self, spec: HiddenStateSpec, num_layers: int, hidden_size: int) -> None:
        self.spec = spec
        self.layers = spec.resolve_layers(num_layers)
        self.matrix = projection_matrix(spec.seed, hidden_size, spec.dims)

    @classmethod
    def for_model(cls, spec: HiddenStateSpec, model: torch.nn.Module) -> HiddenStateProjector:
        config = model.config  # type: ignore[attr-defined]
        config = getattr(config, "get_text_config", lambda: config)()
        return cls(spec, config.num_hidden_layers, config.hidden_size)

    def project(self, vectors: torch.Tensor) -> HiddenState:
        """`vectors`: (len(self.layers), hidden_size), the chosen layers at the answer slot."""
        projected = vectors.float() @ self.matrix.to(vectors.device)
        return HiddenState.from_values(projected.tolist(), layers=list(self.layers), seed=self.spec.seed,
                                       projection=PROJECTION)
