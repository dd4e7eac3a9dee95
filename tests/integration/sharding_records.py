"""Records of where arrays live, for sharding_checks.py to print as JSON.

Each record pairs a leaf's sharding with the one it should have (its param's, or a reference) in
plain data: paths as strings, shardings as their repr and a ``same``/``matches_param`` verdict.
"""

from __future__ import annotations

import re
from typing import Any

import jax
from jax.sharding import NamedSharding, PartitionSpec

COLLECTIVE = re.compile(
    r"\s(all-gather|all-to-all|collective-permute|reduce-scatter|all-reduce)(?:-start)?\("
)


def param_for(path: tuple, params: dict) -> tuple[str, Any] | None:
    """The param whose key path ends ``path`` (``mu['l1']['kernel']`` -> ``l1/kernel``)."""
    for param_path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if len(path) >= len(param_path) and tuple(path[-len(param_path) :]) == param_path:
            return jax.tree_util.keystr(param_path), leaf
    return None


def buffer_sharding(
    param_sharding: jax.sharding.Sharding, param_shape: tuple, buffer_shape: tuple
) -> jax.sharding.Sharding:
    """Where a state buffer of a param belongs: the param's sharding on the param's axes, with
    any extra leading axes (LBFGS's history) unsharded, and replicated along the axes the buffer
    reduces to size 1 (Adafactor's row and column statistics), which cannot be split."""
    leading = len(buffer_shape) - len(param_shape)
    if not isinstance(param_sharding, NamedSharding):
        return param_sharding
    spec = list(param_sharding.spec) + [None] * (len(param_shape) - len(param_sharding.spec))
    if leading > 0:
        spec = [None] * leading + spec
    elif leading == 0:
        for axis, (b, p) in enumerate(zip(buffer_shape, param_shape, strict=True)):
            if b == 1 and p != 1:
                spec[axis] = None
    return NamedSharding(param_sharding.mesh, PartitionSpec(*spec))


def state_shardings(state: Any, params: dict, shardings: Any = None) -> list[dict]:
    """One record per state leaf: its sharding next to its param's (``None`` for leaves tied to
    no param: counters and other scalars), as :func:`buffer_sharding` places it.

    ``shardings`` defaults to the leaves' own (``.sharding``); pass a compiled function's
    ``output_shardings`` to inspect those instead.
    """
    leaves = jax.tree_util.tree_leaves_with_path(state)
    given = (
        [leaf.sharding for _, leaf in leaves] if shardings is None else jax.tree.leaves(shardings)
    )
    records = []
    for (path, leaf), sharding in zip(leaves, given, strict=True):
        match = param_for(path, params)
        records.append(
            {
                "path": jax.tree_util.keystr(path),
                "shape": list(leaf.shape),
                "sharding": repr(sharding),
                "param": None if match is None else match[0],
                "matches_param": None
                if match is None
                else sharding.is_equivalent_to(
                    buffer_sharding(match[1].sharding, match[1].shape, leaf.shape), leaf.ndim
                ),
                "replicated": sharding.is_fully_replicated,
                "devices": len(sharding.device_set),
            }
        )
    return records


def param_shardings(shardings: Any, params: dict, reference: Any = None) -> list[dict]:
    """Each param's sharding in ``shardings`` against the one it came in with (or ``reference``)."""
    reference = params if reference is None else reference
    records = []
    for (path, param), sharding, ref in zip(
        jax.tree_util.tree_leaves_with_path(params),
        jax.tree.leaves(shardings),
        jax.tree.leaves(reference),
        strict=True,
    ):
        ref_sharding = ref if isinstance(ref, jax.sharding.Sharding) else ref.sharding
        records.append(
            {
                "path": jax.tree_util.keystr(path),
                "sharding": repr(sharding),
                "reference": repr(ref_sharding),
                "same": sharding.is_equivalent_to(ref_sharding, param.ndim),
            }
        )
    return records


def with_sharding(param: jax.Array, sharding: jax.sharding.Sharding) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(param.shape, param.dtype, sharding=sharding)


def collectives(compiled: Any) -> list[dict[str, str]]:
    """Every collective in the compiled HLO, with the op name (named scopes) it came from."""
    found = []
    for line in compiled.as_text().splitlines():
        op = COLLECTIVE.search(line)
        if op:
            name = re.search(r'op_name="([^"]*)"', line)
            found.append({"op": op.group(1), "op_name": name.group(1)[:300] if name else ""})
    return found


def tree_bytes(tree: Any) -> int:
    return sum(leaf.size * leaf.dtype.itemsize for leaf in jax.tree.leaves(tree))


def output_bytes(compiled: Any) -> int | None:
    """The compiled program's output size on one device (what each device must hold)."""
    memory = compiled.memory_analysis()
    return None if memory is None else memory.output_size_in_bytes
