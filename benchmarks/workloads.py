"""Parameter trees to benchmark: one big leaf, many small leaves, and a transformer-shaped tree.

A workload is an abstract tree (``jax.ShapeDtypeStruct`` leaves) so that lowering and compiling
need no memory; :func:`host_random` and :func:`to_device` give it values when a step must run.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

DTYPE = jnp.float32


@dataclasses.dataclass(frozen=True)
class Workload:
    """A named abstract parameter tree.

    Attributes:
        name: unique label used in the results (``single-16M``, ``leaves-1000x4000``, ...).
        family: ``single``, ``leaves`` or ``transformer``.
        tree: nested dicts of ``jax.ShapeDtypeStruct``.
        description: one line for the report.
    """

    name: str
    family: str
    tree: Any
    description: str

    @property
    def num_leaves(self) -> int:
        return len(jax.tree.leaves(self.tree))

    @property
    def num_params(self) -> int:
        return sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(self.tree))

    @property
    def param_bytes(self) -> int:
        return tree_nbytes(self.tree)

    def summary(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "family": self.family,
            "description": self.description,
            "num_leaves": self.num_leaves,
            "num_params": self.num_params,
            "param_bytes": self.param_bytes,
        }


def tree_nbytes(tree: Any) -> int:
    """Bytes of every array (or ShapeDtypeStruct) leaf of ``tree``."""
    return sum(
        math.prod(leaf.shape) * jnp.dtype(leaf.dtype).itemsize for leaf in jax.tree.leaves(tree)
    )


def _spec(*shape: int) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(shape, DTYPE)


def _count_label(n: int) -> str:
    for unit, size in (("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return str(n)


def single_leaf(size: int) -> Workload:
    """One 1-D leaf of ``size`` elements: the optimizer is pure bandwidth, compile is trivial."""
    return Workload(
        name=f"single-{_count_label(size)}",
        family="single",
        tree={"w": _spec(size)},
        description=f"one leaf of {size:,} float32",
    )


def many_leaves(count: int, leaf_size: int) -> Workload:
    """``count`` 1-D leaves of ``leaf_size`` elements: compile time grows with the leaf count."""
    width = len(str(count - 1))
    return Workload(
        name=f"leaves-{count}x{leaf_size}",
        family="leaves",
        tree={f"leaf_{i:0{width}d}": _spec(leaf_size) for i in range(count)},
        description=f"{count:,} leaves of {leaf_size:,} float32",
    )


def _dense(d_in: int, d_out: int) -> dict[str, jax.ShapeDtypeStruct]:
    return {"kernel": _spec(d_in, d_out), "bias": _spec(d_out)}


def _layer_norm(width: int) -> dict[str, jax.ShapeDtypeStruct]:
    return {"scale": _spec(width), "bias": _spec(width)}


def transformer(layers: int, width: int, vocab: int, seq_len: int, mlp_ratio: int = 4) -> Workload:
    """A GPT-style decoder's parameters (tied embeddings), in flax's nesting.

    Per layer: two layer norms, attention q/k/v/o projections with biases, and a two-layer MLP
    with biases: 16 leaves and about ``(4 + 2 * mlp_ratio) * width**2`` parameters.
    """
    block = {
        "ln_1": _layer_norm(width),
        "attention": {name: _dense(width, width) for name in ("query", "key", "value", "out")},
        "ln_2": _layer_norm(width),
        "mlp": {
            "fc_in": _dense(width, mlp_ratio * width),
            "fc_out": _dense(mlp_ratio * width, width),
        },
    }
    digits = len(str(layers - 1))
    tree = {
        "embed": {"tokens": _spec(vocab, width), "positions": _spec(seq_len, width)},
        "blocks": {f"block_{i:0{digits}d}": block for i in range(layers)},
        "ln_final": _layer_norm(width),
    }
    workload = Workload(
        name=f"transformer-{layers}x{width}",
        family="transformer",
        tree=tree,
        description=(
            f"{layers} layers, width {width}, vocab {vocab:,}, sequence {seq_len:,}, "
            f"MLP {mlp_ratio}x width"
        ),
    )
    return dataclasses.replace(
        workload, description=f"{workload.num_params / 1e6:,.1f}M params: {workload.description}"
    )


def host_random(tree: Any, seed: int, block: int = 2**20) -> Any:
    """Standard-normal float32 NumPy arrays with ``tree``'s shapes.

    Generated on the host, so that no JAX program is compiled for them (the benchmark clears
    JAX's caches between measurements); move them with :func:`to_device` for each run. Values do
    not affect timings, so each leaf is a random window of one ``block`` of normals (tiled for
    larger leaves): a billion parameters take memcpy time, not sampling time.
    """
    rng = np.random.default_rng(seed)
    base = rng.standard_normal(block, dtype=np.float32)

    def leaf_values(leaf: jax.ShapeDtypeStruct) -> np.ndarray:
        size = math.prod(leaf.shape)
        if size > block:
            return np.resize(base, size).reshape(leaf.shape)
        start = int(rng.integers(0, block - size + 1))
        return base[start : start + size].reshape(leaf.shape).copy()

    return jax.tree.map(leaf_values, tree)


def to_device(host_tree: Any) -> Any:
    """A fresh device copy of a host tree (``device_put`` copies, so the host tree is reusable)."""
    return jax.block_until_ready(jax.device_put(host_tree))
