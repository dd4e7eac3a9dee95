"""ZeRO-1: optimizer state partitioned over the data-parallel replicas.

In data-parallel training every replica holds the whole model, its gradients (after the
all-reduce) and, by default, the whole optimizer state: Adam's two moments are twice the
params' bytes on every device. The update is elementwise, so nothing requires that: each replica
can keep and update a slice of the state and the slices of the new params be gathered. That is
stage 1 of ZeRO (Rajbhandari et al., 2020), torch's ``ZeroRedundancyOptimizer``. Under XLA's
SPMD partitioner it is a placement, not a program: :func:`state_sharding` says where each
buffer lives, and ``jax.jit`` with those shardings as the state's input and output shardings
computes each slice of the update on the device that holds it and all-gathers the parameters'
updates.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AbstractMesh, Mesh, NamedSharding, PartitionSpec

from optkit import _tree
from optkit._base import GradientTransformation, Params, check_transform

_WHERE = "state_sharding"


def state_sharding(
    tx: GradientTransformation,
    params: Params,
    *,
    mesh: Mesh | AbstractMesh,
    shard_axis: str = "data",
    param_specs: Any = None,
) -> Any:
    """The ``NamedSharding`` of every leaf of ``tx``'s state that partitions it over ``shard_axis``.

    ZeRO-1 (optimizer-state partitioning): returns a pytree with the structure of
    ``jax.eval_shape(tx.init, params)`` whose leaves are ``NamedSharding`` objects on ``mesh``. Use
    it as ``jax.jit(tx.init, out_shardings=shardings)`` and as the state's input and output
    shardings of the train step: with replicated params on ``d`` devices of ``shard_axis``,
    each device holds ``1/d`` of the optimizer state, computes that part of the update, and the
    step gives the same parameters as the replicated run (the same elementwise arithmetic;
    reductions such as a global gradient norm may sum in another order).

    Each leaf's partition spec:

    * a **per-parameter buffer** (a leaf of a subtree of the state with the params' tree
      structure, as ``optax.tree_utils.tree_map_params`` finds them: moments, accumulators,
      averaged params, inside chains, param groups, masks and wrappers) keeps its param's spec
      (axes it reduces to size 1 unpartitioned, leading axes it adds, as L-BFGS's history,
      unpartitioned), and is additionally partitioned over ``shard_axis`` on its first
      dimension that is not already partitioned and whose size is divisible by the size of
      ``shard_axis``; replicated over ``shard_axis`` when there is none, or when the param is
      already partitioned over ``shard_axis`` (FSDP-style params keep their spec);
    * a **leaf tied to no param** (the flat vectors of :func:`optkit.flatten`, the codes and
      scales of a blockwise-quantized buffer, L-BFGS's per-pair curvatures) starts from a
      replicated spec and is partitioned over ``shard_axis`` on its first dimension when that
      is divisible, so a device holds whole rows (whole blocks of a ``(num_blocks,
      bytes_per_block)`` buffer, never part of one); replicated otherwise;
    * **scalars** (counts, injected hyperparameters, loss scales) are replicated.

    The params' specs are read from their shardings: arrays placed with a ``NamedSharding``
    (``jax.device_put(x, NamedSharding(mesh, spec))``) or ``jax.ShapeDtypeStruct(shape, dtype,
    sharding=NamedSharding(mesh, spec))`` (nothing is allocated), or given as ``param_specs``,
    a pytree of ``PartitionSpec`` with the params' structure. Params with no ``NamedSharding``
    (NumPy arrays, arrays on one device) count as replicated when every axis of ``mesh`` other
    than ``shard_axis`` has size 1; otherwise their layout over those axes is needed and they
    are refused.

    Same role as torch's ``torch.distributed.optim.ZeroRedundancyOptimizer`` (and the
    optimizer-state sharding of FSDP's ``SHARD_GRAD_OP``), without a wrapper: the optimizer is
    unchanged and the partitioning is the state's placement. optax has no equivalent; its
    ``tree_map_params`` is the matching this function does for you.

    Args:
        tx: the optimizer (any optkit or optax transform); only ``tx.init`` is traced, with
            ``jax.eval_shape`` (nothing is computed or allocated).
        params: the params, or ``jax.ShapeDtypeStruct`` leaves describing them, carrying their
            ``NamedSharding`` unless ``param_specs`` is given.
        mesh: the device mesh (a ``jax.sharding.Mesh``, or an ``AbstractMesh`` to inspect the
            specs without devices).
        shard_axis: the mesh axis the state is partitioned over (the data-parallel axis).
        param_specs: optional pytree of ``PartitionSpec`` with the params' structure; when
            given, it is used instead of the params' shardings.

    Returns:
        A pytree of ``NamedSharding`` with the structure of ``jax.eval_shape(tx.init, params)``.

    Raises:
        TypeError: if ``tx`` is not a gradient transformation, ``mesh`` is not a mesh, or a
            param has a sharding that is not a ``NamedSharding`` and not replicated.
        ValueError: if ``shard_axis`` is not an axis of ``mesh``; if a param has no sharding on
            a mesh that needs one; if a param's spec names an axis ``mesh`` lacks (or of another
            size) or has more entries than the param has dimensions; if ``param_specs`` does not
            have the params' structure (the paths that differ are named).

    Examples:
        Specs on 8 data-parallel devices, inspected on an abstract mesh (no devices needed):
        ``w``'s moments are split in 8 along their first axis, ``b``'s 4 entries are not
        divisible by 8 and stay replicated, the count is replicated.

        >>> import jax, jax.numpy as jnp, optkit
        >>> from jax.sharding import AbstractMesh
        >>> tx = optkit.adamw(1e-3)
        >>> params = {"w": jnp.zeros((16, 4)), "b": jnp.zeros(4)}
        >>> shardings = optkit.state_sharding(tx, params, mesh=AbstractMesh((8,), ("data",)))
        >>> shardings[0].mu["w"].spec, shardings[0].mu["b"].spec, shardings[0].count.spec
        (P('data',), P(), P())

        On the devices at hand, the shardings place the state when it is built and in the step:

        >>> mesh = jax.sharding.Mesh(jax.devices(), ("data",))
        >>> shardings = optkit.state_sharding(tx, params, mesh=mesh)
        >>> state = jax.jit(tx.init, out_shardings=shardings)(params)
        >>> def step(params, state, grads):
        ...     updates, state = tx.update(grads, state, params)
        ...     return optkit.apply_updates(params, updates), state
        >>> step = jax.jit(step, out_shardings=(None, shardings))
        >>> params, state = step(params, state, jax.tree.map(jnp.ones_like, params))
        >>> params["b"]
        Array([-0.001, -0.001, -0.001, -0.001], dtype=float32)

    References:
        Rajbhandari, Rasley, Ruwase and He, "ZeRO: Memory Optimizations Toward Training
        Trillion Parameter Models", SC 2020.
    """
    check_transform(tx, _WHERE, 0)
    if not isinstance(mesh, Mesh | AbstractMesh):
        raise TypeError(
            f"{_WHERE}: mesh must be a jax.sharding.Mesh (or AbstractMesh), got "
            f"{type(mesh).__name__}."
        )
    axis_sizes = dict(mesh.shape)
    if not isinstance(shard_axis, str) or shard_axis not in axis_sizes:
        raise ValueError(
            f"{_WHERE}: shard_axis={shard_axis!r} is not an axis of the mesh, whose axes are "
            f"{tuple(axis_sizes)}."
        )
    specs = _param_specs(params, param_specs, axis_sizes, shard_axis)
    placement = _Placement(mesh, shard_axis, axis_sizes[shard_axis], params, specs)
    return jax.tree.map(placement.of, jax.eval_shape(tx.init, params), is_leaf=placement.matches)


class _Placement:
    """Finds the per-parameter subtrees of a state and gives each leaf its sharding."""

    def __init__(
        self, mesh: Any, axis: str, axis_size: int, params: Params, specs: list[PartitionSpec]
    ) -> None:
        self.mesh, self.axis, self.axis_size = mesh, axis, axis_size
        self.params_def = jax.tree.structure(params)
        self.shapes = [tuple(np.shape(leaf)) for leaf in jax.tree.leaves(params)]
        self.specs = specs

    def _pieces(self, node: Any) -> list[Any] | None:
        """``node`` cut at the params' leaves, if it is a per-parameter subtree: it has the
        params' structure (a piece may be ``None``, a masked placeholder or a buffer stored as
        a small tree, as a quantized one), at least one piece is an array, and every array
        piece is its param's shape, reduced to 1 along some axes or with leading axes added."""
        try:
            pieces = self.params_def.flatten_up_to(node)
        except (ValueError, TypeError):
            return None
        arrays = [
            (piece, shape)
            for piece, shape in zip(pieces, self.shapes, strict=True)
            if _is_array(piece)
        ]
        if arrays and all(_follows(piece.shape, shape) for piece, shape in arrays):
            return pieces
        return None

    def matches(self, node: Any) -> bool:
        return self._pieces(node) is not None

    def of(self, node: Any) -> Any:
        pieces = self._pieces(node)
        if pieces is None:
            return self._unmatched(node)
        placed = []
        for piece, spec, shape in zip(pieces, self.specs, self.shapes, strict=True):
            if _is_array(piece):
                entries = _buffer_entries(spec, shape, piece.shape)
                placed.append(self._sharding(entries, piece.shape))
            else:
                placed.append(jax.tree.map(self._unmatched, piece))
        return self.params_def.unflatten(placed)

    def _unmatched(self, leaf: Any) -> NamedSharding:
        """A leaf tied to no param: split over the shard axis along its first dimension only,
        so each device holds whole rows (whole blocks of a blockwise-quantized buffer)."""
        return self._sharding([None] * len(leaf.shape), leaf.shape[:1])

    def _sharding(self, entries: list[Any], splittable: Sequence[int]) -> NamedSharding:
        """``entries`` partitioned over the shard axis on the first free dimension among the
        ``splittable`` ones (the leading dimensions' sizes) that the axis size divides."""
        if self.axis not in _axes_named(entries):
            for index, size in enumerate(splittable):
                if entries[index] is None and size > 0 and size % self.axis_size == 0:
                    entries = [*entries[:index], self.axis, *entries[index + 1 :]]
                    break
        while entries and entries[-1] is None:
            entries = entries[:-1]
        return NamedSharding(self.mesh, PartitionSpec(*entries))


def _is_array(node: Any) -> bool:
    return hasattr(node, "shape") and hasattr(node, "dtype")


def _follows(buffer_shape: tuple[int, ...], param_shape: tuple[int, ...]) -> bool:
    """Whether a buffer of ``buffer_shape`` is a per-parameter buffer of a param of
    ``param_shape``: the same trailing axes, each equal or reduced to 1."""
    extra = len(buffer_shape) - len(param_shape)
    if extra < 0:
        return False
    trailing = buffer_shape[extra:]
    return all(b in (p, 1) for b, p in zip(trailing, param_shape, strict=True))


def _buffer_entries(
    spec: PartitionSpec, param_shape: tuple[int, ...], buffer_shape: tuple[int, ...]
) -> list[Any]:
    """The param's spec entries laid on the buffer: leading axes the buffer adds and axes it
    reduces to size 1 are unpartitioned."""
    entries = [*spec, *[None] * (len(param_shape) - len(spec))]
    extra = len(buffer_shape) - len(param_shape)
    trailing = [
        entry if b == p else None
        for entry, b, p in zip(entries, buffer_shape[extra:], param_shape, strict=True)
    ]
    return [None] * extra + trailing


def _axes_named(entries: Sequence[Any]) -> set[str]:
    names: set[str] = set()
    for entry in entries:
        if isinstance(entry, str):
            names.add(entry)
        elif isinstance(entry, tuple):
            names.update(name for name in entry if isinstance(name, str))
    return names


def _param_specs(
    params: Params, param_specs: Any, axis_sizes: dict[str, int], shard_axis: str
) -> list[PartitionSpec]:
    """One ``PartitionSpec`` per param leaf, in ``jax.tree.leaves`` order, checked against the
    mesh and the param's rank."""
    paths = [path for path, _ in _tree.leaves_with_paths(params)]
    leaves = jax.tree.leaves(params)
    if param_specs is not None:
        specs = _specs_from_tree(params, param_specs)
    else:
        needs_layout = [
            name for name, size in axis_sizes.items() if name != shard_axis and size > 1
        ]
        specs = [
            _spec_of(path, leaf, needs_layout, shard_axis, axis_sizes)
            for path, leaf in zip(paths, leaves, strict=True)
        ]
    for path, leaf, spec in zip(paths, leaves, specs, strict=True):
        if len(spec) > np.ndim(leaf):
            raise ValueError(
                f"{_WHERE}: param {path!r} has {np.ndim(leaf)} dimensions but its partition spec "
                f"{spec} has {len(spec)} entries."
            )
        for name in _axes_named(list(spec)):
            if name not in axis_sizes:
                raise ValueError(
                    f"{_WHERE}: param {path!r} is partitioned over axis {name!r} ({spec}), "
                    f"which the mesh (axes {tuple(axis_sizes)}) does not have."
                )
    return specs


def _specs_from_tree(params: Params, param_specs: Any) -> list[PartitionSpec]:
    is_spec = lambda node: isinstance(node, PartitionSpec)
    params_def = jax.tree.structure(params)
    specs_def = jax.tree.structure(param_specs, is_leaf=is_spec)
    if specs_def != params_def:
        param_paths = [path for path, _ in _tree.leaves_with_paths(params)]
        spec_paths = [
            _tree.path_str(path)
            for path, _ in jax.tree_util.tree_leaves_with_path(param_specs, is_leaf=is_spec)
        ]
        missing = [path for path in param_paths if path not in set(spec_paths)]
        extra = [path for path in spec_paths if path not in set(param_paths)]
        details = [f"missing from param_specs: {_tree.listed(missing)}"] if missing else []
        details += [f"not in params: {_tree.listed(extra)}"] if extra else []
        if not details:
            details = [f"params is {params_def}, param_specs is {specs_def}"]
        raise ValueError(
            f"{_WHERE}: param_specs must have the params' tree structure; " + "; ".join(details)
        )
    specs = jax.tree.leaves(param_specs, is_leaf=is_spec)
    for (path, _), spec in zip(_tree.leaves_with_paths(params), specs, strict=True):
        if not is_spec(spec):
            raise TypeError(
                f"{_WHERE}: param_specs entry {path!r} is {type(spec).__name__}, expected a "
                "jax.sharding.PartitionSpec (PartitionSpec() for a replicated param)."
            )
    return specs


def _spec_of(
    path: str, leaf: Any, needs_layout: list[str], shard_axis: str, axis_sizes: dict[str, int]
) -> PartitionSpec:
    sharding = getattr(leaf, "sharding", None)
    if isinstance(sharding, NamedSharding):
        own_sizes = dict(sharding.mesh.shape)
        for name in _axes_named(list(sharding.spec)):
            if name in axis_sizes and own_sizes.get(name) != axis_sizes[name]:
                raise ValueError(
                    f"{_WHERE}: param {path!r} is partitioned over axis {name!r} of size "
                    f"{own_sizes.get(name)}, but that axis has size {axis_sizes[name]} in the mesh."
                )
        return sharding.spec
    multi_device = sharding is not None and len(sharding.device_set) > 1
    if multi_device and not sharding.is_fully_replicated:
        raise TypeError(
            f"{_WHERE}: param {path!r} has a {type(sharding).__name__}, which names no mesh "
            "axes; place the params with a NamedSharding, or pass param_specs."
        )
    if needs_layout and not multi_device:
        raise ValueError(
            f"{_WHERE}: param {path!r} has no NamedSharding, and the mesh has axes "
            f"{tuple(needs_layout)} besides shard_axis={shard_axis!r}, so its layout over them "
            "is needed: place the params with jax.device_put(x, NamedSharding(mesh, spec)), "
            "describe them as jax.ShapeDtypeStruct(shape, dtype, sharding=...), or pass "
            "param_specs."
        )
    return PartitionSpec()
