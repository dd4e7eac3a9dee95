"""The tables that drive the clipping-norm tests: gradient trees, norm orders, training runs.

A tree case is a list of leaves (ranks 0 to 3 and an empty leaf) with a dtype each; every tree
is clipped with every norm order, once with a ``max_norm`` below its norm (clipped) and once above
(untouched). A training case is ``clip_grad_norm_(params, 1.0, norm_type=p); opt.step()`` over a
few steps. Inputs come from a seeded NumPy generator and are stored in the golden file as well, so
the golden tests compare against exactly what torch saw.

torch is not imported here: the golden tests need only optkit and NumPy.
"""

from __future__ import annotations

import dataclasses
import json
import math

import ml_dtypes
import numpy as np

NORM_TYPES = (0.5, 1.0, 1.5, 2.0, 3.0, 7.5, 20.0, math.inf)
# Every tree's norm, for every order above, lies between these two (checked against torch's
# totals by the tests), so the first clips and the second leaves the gradients untouched.
MAX_NORMS = {"clipped": 0.25, "untouched": 1e4}
SHAPES = ((), (3,), (2, 4), (2, 3, 2), (0,))

DTYPES = {
    "float16": np.dtype(np.float16),
    "bfloat16": np.dtype(ml_dtypes.bfloat16),
    "float32": np.dtype(np.float32),
    "float64": np.dtype(np.float64),
    "complex64": np.dtype(np.complex64),
    "complex128": np.dtype(np.complex128),
}


@dataclasses.dataclass(frozen=True)
class TreeCase:
    """A list of gradient leaves: one dtype per leaf (cycled over ``SHAPES``) and their scale.
    ``total_dtype`` is the dtype of torch's total norm (the live tests check it against torch)."""

    id: str
    dtypes: tuple[str, ...]
    total_dtype: str
    seed: int
    scale: float = 1.0
    norm_types: tuple[float, ...] = NORM_TYPES
    max_norms: tuple[str, ...] = tuple(MAX_NORMS)

    def leaf_dtypes(self) -> list[str]:
        return [self.dtypes[i % len(self.dtypes)] for i in range(len(SHAPES))]

    def grads(self) -> list[np.ndarray]:
        """The leaves, rounded to their dtypes (16-bit values are exact in float32)."""
        rng = np.random.default_rng(self.seed)
        leaves = []
        for shape, dtype in zip(SHAPES, self.leaf_dtypes(), strict=True):
            value = rng.normal(size=shape) * self.scale
            if dtype.startswith("complex"):
                value = value + 1j * rng.normal(size=shape) * self.scale
            leaves.append(value.astype(DTYPES[dtype]))
        return leaves

    def runs(self) -> list[tuple[str, float, float]]:
        """``(run id, norm_type, max_norm)`` for every clip of this tree."""
        return [
            (f"{self.id}:p={p}:{kind}", p, MAX_NORMS[kind])
            for p in self.norm_types
            for kind in self.max_norms
        ]

    def torch_spec(self) -> str:
        """The case as canonical JSON; stored with the goldens to detect stale files."""
        fields = dataclasses.asdict(self)
        fields["norm_types"] = [str(p) for p in self.norm_types]  # JSON has no inf
        fields["max_norms"] = {kind: MAX_NORMS[kind] for kind in self.max_norms}
        return json.dumps({**fields, "shapes": SHAPES}, sort_keys=True)


TREE_CASES = (
    TreeCase("float64", ("float64",), "float64", seed=0),
    TreeCase("float32", ("float32",), "float32", seed=1),
    TreeCase("float16", ("float16",), "float16", seed=2),
    TreeCase("bfloat16", ("bfloat16",), "bfloat16", seed=3),
    # A complex leaf's norm is real: the modulus's.
    TreeCase("complex64", ("complex64",), "float32", seed=4),
    TreeCase("complex128", ("complex128",), "float64", seed=5),
    # Mixed trees: torch stacks the per-leaf norms in their promoted dtype.
    TreeCase("float32+float64", ("float32", "float64"), "float64", seed=6),
    TreeCase("float16+bfloat16+float32", ("float16", "bfloat16", "float32"), "float32", seed=7),
    TreeCase("bfloat16+float16", ("bfloat16", "float16"), "float32", seed=8),
    TreeCase("complex64+float64", ("complex64", "float64"), "float64", seed=9),
    # |g|^100 of values of a few hundred overflows float32 (torch's total is inf and the clip
    # zeroes every gradient) but not float64.
    TreeCase("overflow-float32", ("float32",), "float32", seed=10, scale=300, norm_types=(100.0,)),
    TreeCase("overflow-float64", ("float64",), "float64", seed=10, scale=300, norm_types=(100.0,)),
)


def dtype_of(name: str) -> np.dtype:
    """The NumPy dtype of a dtype name of the tables (bfloat16 is ml_dtypes')."""
    return DTYPES[name]


@dataclasses.dataclass(frozen=True)
class TrainCase:
    """``clip_grad_norm_(params, max_norm, norm_type); opt.step()`` for ``steps`` steps on
    :func:`loss`; ``optimizer`` names the torch class, built with ``kwargs`` (torch's names)."""

    id: str
    optimizer: str
    kwargs: dict[str, float]
    norm_type: float
    dtype: str
    max_norm: float = 1.0
    steps: int = 10
    seed: int = 11

    def start(self) -> tuple[list[np.ndarray], list[np.ndarray]]:
        """The initial params and the loss's targets, one per leaf (the non-empty shapes)."""
        rng = np.random.default_rng(self.seed)
        shapes = [shape for shape in SHAPES if math.prod(shape) > 0]
        params = [rng.normal(size=s).astype(self.dtype) for s in shapes]
        targets = [(2.0 * rng.normal(size=s)).astype(self.dtype) for s in shapes]
        return params, targets

    def torch_spec(self) -> str:
        fields = {**dataclasses.asdict(self), "norm_type": str(self.norm_type)}
        return json.dumps(fields, sort_keys=True)


def loss(params, targets, np_like):
    """``sum((w - t)^2 + 0.1 w^4)`` over every leaf, written for torch or jax.numpy: gradients of
    norm ~10-60 at the start, so a clip to 1.0 bites at every step."""
    return sum(np_like.sum((w - t) ** 2 + 0.1 * w**4) for w, t in zip(params, targets, strict=True))


_OPTIMIZERS = {
    "SGD": {"lr": 0.1, "momentum": 0.9},
    "AdamW": {"lr": 0.05, "weight_decay": 0.01},
}
TRAIN_CASES = tuple(
    TrainCase(f"{name}:p={p}:{dtype}", name, kwargs, p, dtype)
    for name, kwargs in _OPTIMIZERS.items()
    for p in (0.5, 1.0, 3.0, math.inf)
    for dtype in ("float64", "float32")
)
