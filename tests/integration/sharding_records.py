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


def with_leading_axes(sharding: Any, count: int) -> Any:
    """``sharding`` for an array with ``count`` more, unsharded, leading axes (a history of
    buffers shaped like the param, as LBFGS keeps)."""
    if count == 0:
        return sharding
    return NamedSharding(sharding.mesh, PartitionSpec(*([None] * count), *sharding.spec))


def state_shardings(state: Any, params: dict, shardings: Any = None) -> list[dict]:
    """One record per state leaf: its sharding next to its param's (``None`` for leaves tied to
    no param: counters and other scalars). A buffer may have leading axes before its param's
    (LBFGS's history); it matches when it is sharded like its param on the param's axes.

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
                    with_leading_axes(match[1].sharding, leaf.ndim - len(match[1].shape)),
                    leaf.ndim,
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
