"""The numbers of a torch ``state_dict`` and of an optkit state, converted both ways: param-group
hyperparameters, per-parameter buffers and scalars, step counts, layouts and dtypes."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optkit import _tree
from optkit._base import OptimizerDescription, OptState
from optkit.combinators.hyperparams import InjectHyperparamsState
from optkit.interop._torch_classes import Buffer, Fixed, TorchClass
from optkit.transforms.momentum import TraceState
from optkit.transforms.scaling import ScaleByScheduleState


class Layout(NamedTuple):
    """How one leaf's arrays convert between torch's layout and optkit's."""

    to_optkit: Callable[[np.ndarray], np.ndarray]
    to_torch: Callable[[np.ndarray], np.ndarray]
    transpose: bool


def nodes(tree: Any, state_type: type) -> list[Any]:
    """Every state of ``state_type`` inside ``tree``."""
    is_node = lambda node: isinstance(node, state_type)
    return [node for node in jax.tree.leaves(tree, is_leaf=is_node) if is_node(node)]


# --- hyperparameters ----------------------------------------------------------------------------


def arguments(description: OptimizerDescription, group_state: OptState) -> dict[str, Any]:
    """The optimizer's arguments by optkit name, injected ones at their current values."""
    values = dict(description.arguments)
    for injected in nodes(group_state, InjectHyperparamsState)[:1]:
        values.update(injected.hyperparams)
    return values


def updates_done(table: TorchClass, group_state: OptState) -> tuple[int, int]:
    """The group's ``(count, updates)``: the count of the class's counter (torch's ``step``, or
    how many updates used SGD's momentum buffer), and the update count schedules are read at."""
    counters = nodes(group_state, table.counter) if table.counter is not None else []
    count = int(counters[0].count) if counters else 0
    for state_type in (InjectHyperparamsState, ScaleByScheduleState):
        found = nodes(group_state, state_type)
        if found:
            return count, int(found[0].count)
    return count, count


def _current(value: Any, updates: int) -> Any:
    """A hyperparameter's value for the next update: a schedule's at the update count."""
    return value(jnp.asarray(updates, jnp.int32)) if callable(value) else value


def _check_mask(values: Mapping[str, Any], where: str) -> None:
    if values.get("mask") is not None:
        raise ValueError(
            f"{where}: AdamW's mask= has no torch counterpart. Use optkit.param_groups with "
            "weight_decay=0.0 for the leaves the mask leaves out, as torch does."
        )


def torch_group(
    table: TorchClass, values: Mapping[str, Any], updates: int, where: str
) -> dict[str, Any]:
    """The param-group entries torch's class stores, in its order, from optkit's arguments."""
    _check_mask(values, where)
    group = {}
    for key, source in table.group:
        if isinstance(source, Fixed):
            group[key] = source.value
        elif isinstance(source, tuple):
            group[key] = tuple(python(_current(values[name], updates)) for name in source)
        else:
            group[key] = python(_current(values[source], updates))
    if callable(values.get("learning_rate")):
        group["initial_lr"] = python(_current(values["learning_rate"], 0))
    return group


def check_hyperparameters(
    table: TorchClass,
    description: OptimizerDescription,
    group: Mapping[str, Any],
    injected: set[str],
    where: str,
) -> dict[str, Any]:
    """Compare the state_dict's group with ``tx``'s arguments; return the values to inject.

    Injected arguments take torch's values; schedules are not compared; the others must equal.
    """
    values = description.arguments
    _check_mask(values, where)
    missing = [k for k, source in table.group if not isinstance(source, Fixed) and k not in group]
    if missing:
        raise ValueError(
            f"{where}: the state_dict has no {missing[0]!r}: is it from "
            f"torch.optim.{description.torch_class}, which tx reproduces?"
        )
    taken = {}
    for key, source in table.group:
        if isinstance(source, Fixed):
            if source.checked and key in group and python(group[key]) != source.value:
                raise ValueError(
                    f"{where}: {key} is {group[key]!r} in the state_dict, but "
                    f"torch.optim.{description.torch_class} (tx) has {key}={source.value!r}."
                )
            continue
        names = source if isinstance(source, tuple) else (source,)
        theirs = python(group[key])
        given = theirs if isinstance(source, tuple) else (theirs,)
        ours = tuple(values[name] for name in names)
        for name, mine, value in zip(names, ours, given, strict=True):
            if name in injected:
                taken[name] = value
            elif not callable(mine) and not _same(mine, value):
                shown = tuple(map(python, ours)) if isinstance(source, tuple) else python(mine)
                raise ValueError(
                    f"{where}: {key} is {theirs!r} in the state_dict but {shown!r} in tx. Build "
                    "tx with the checkpoint's hyperparameters, or through "
                    "optkit.inject_hyperparams to take the state_dict's values."
                )
    return taken


def python(value: Any) -> Any:
    """A hyperparameter as torch stores it: a Python bool, int, float, None, str or tuple."""
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, tuple | list):
        return tuple(python(v) for v in value)
    array = to_numpy(value)
    if array.dtype == np.bool_:
        return bool(array)
    return int(array) if np.issubdtype(array.dtype, np.integer) else float(array)


def _same(ours: Any, theirs: Any) -> bool:
    """Whether torch's value is optkit's, compared in the dtype of an optkit array."""
    if isinstance(ours, tuple | list) or isinstance(theirs, tuple):
        return (
            isinstance(ours, tuple | list)
            and isinstance(theirs, tuple)
            and len(ours) == len(theirs)
            and all(map(_same, ours, theirs))
        )
    if ours is None or theirs is None or isinstance(ours, str) or isinstance(theirs, str):
        return ours == theirs
    if isinstance(ours, bool | np.bool_) or isinstance(theirs, bool):
        return isinstance(ours, bool | np.bool_) and isinstance(theirs, bool) and ours == theirs
    array = np.asarray(ours)
    dtype = array.dtype if np.issubdtype(array.dtype, np.floating) else np.float64
    return bool(np.asarray(theirs, dtype) == array.astype(dtype))


# --- arrays -------------------------------------------------------------------------------------


def to_numpy(value: Any) -> np.ndarray:
    """A copy of a tensor (on any device, of any dtype) or array as NumPy."""
    if hasattr(value, "detach"):
        tensor = value.detach().cpu()
        try:
            return tensor.numpy().copy()
        except TypeError:  # bfloat16 and other dtypes NumPy lacks: exact in float32
            return tensor.float().numpy()
    return np.array(value)


def integer(value: Any, what: str) -> int:
    number = float(to_numpy(value))
    if not (number.is_integer() and number >= 0):
        raise ValueError(f"{what} must be a whole number >= 0, got {number}.")
    return int(number)


def like(value: Any, old: jax.Array) -> jax.Array:
    """``value`` in the dtype and placement of the state leaf it replaces."""
    array = jnp.asarray(value, dtype=old.dtype)
    return jax.device_put(array, old.sharding) if _tree.is_committed(old) else array


def convert(
    table: TorchClass, arrays: dict[str, np.ndarray], layout: Layout | None, to_torch: bool
) -> dict[str, np.ndarray]:
    """One parameter's buffers from torch's layout to optkit's (or back, ``to_torch``).

    A transposed matrix's row statistics are the other side's column statistics, transposed.
    """
    if layout is None:
        return arrays
    apply = layout.to_torch if to_torch else layout.to_optkit
    converted = {key: apply(value) for key, value in arrays.items()}
    if table.factored and table.factored[0] in arrays:
        rows, columns = table.factored
        if not (layout.transpose and arrays[rows].ndim == 2):
            raise ValueError(
                "layouts: only 'transpose' of a 2-D parameter converts row and column "
                "statistics (Adafactor's); other layouts of factored parameters are not supported."
            )
        converted[rows], converted[columns] = arrays[columns].T, arrays[rows].T
    return converted


def gathered(
    table: TorchClass,
    group_state: OptState,
    group: Mapping[str, Any],
    paths: list[str],
    layouts: Mapping[str, Layout],
) -> dict[str, dict[str, np.ndarray]]:
    """Each parameter's buffers, in torch's layout, by path."""
    out: dict[str, dict[str, np.ndarray]] = {path: {} for path in paths}
    for buffer in table.buffers:
        if buffer.when is not None and not buffer.when(group):
            continue
        for node in nodes(group_state, buffer.state_type)[:1]:
            tree = getattr(node, buffer.field)
            for path, leaf in _tree.leaves_with_paths(tree):
                out[path][buffer.key] = np.array(leaf)
    return {path: convert(table, arrays, layouts.get(path), True) for path, arrays in out.items()}


# --- filling an optkit state --------------------------------------------------------------------


class Filler:
    """Writes one param group's torch records into the group's optkit state."""

    def __init__(
        self,
        torch_class: str,
        table: TorchClass,
        group: Mapping[str, Any],
        records: Mapping[str, Mapping[str, Any]],
        layouts: Mapping[str, Layout],
        ids: Mapping[str, int],
        where: str,
    ) -> None:
        self.table, self.group, self.ids, self.where = table, group, ids, where
        known = {b.key for b in (*table.buffers, *table.scalars)} | (
            {"step"} if table.step else set()
        )
        self.arrays = {}
        for path, record in records.items():
            unknown = sorted(set(record) - known)
            if unknown:
                raise ValueError(
                    f"{where}: parameter {path!r} has {unknown[0]!r} in the state_dict, which "
                    f"torch.optim.{torch_class} does not keep (its keys: {sorted(known)})."
                )
            arrays = {key: to_numpy(value) for key, value in record.items() if key != "step"}
            scalars = {s.key for s in table.scalars}
            buffers = {k: v for k, v in arrays.items() if k not in scalars}
            converted = convert(table, buffers, layouts.get(path), False)
            self.arrays[path] = {**converted, **{k: v for k, v in arrays.items() if k in scalars}}
        self.used: set[tuple[str, str]] = set()

    def state(
        self, group_state: OptState, step: int | None, injected: Mapping[str, Any], values: Any
    ) -> OptState:
        """``group_state`` with torch's buffers, scalars, step and injected hyperparameters."""
        table = self.table
        types = {b.state_type for b in (*table.buffers, *table.scalars)}
        known = (InjectHyperparamsState, ScaleByScheduleState, TraceState, *types)

        def replace(node: Any) -> Any:
            if isinstance(node, InjectHyperparamsState):
                return self._injected(node, step, injected, values, rebuild)
            if not isinstance(node, known):
                return node
            fields = {}
            for entry in (*table.buffers, *table.scalars):
                if entry.state_type is type(node) and getattr(node, entry.field) is not None:
                    fill = self._scalar if entry in table.scalars else self._buffer
                    fields[entry.field] = fill(getattr(node, entry.field), entry)
            if isinstance(node, TraceState):
                # The momentum buffer exists once a step has used it (torch: at momentum != 0).
                started = any((path, "momentum_buffer") in self.used for path in self.arrays)
                fields["count"] = like((step or 1) if started else 0, node.count)
            elif step is not None and "count" in node._fields:
                fields["count"] = like(step, node.count)
            return node._replace(**fields)

        def rebuild(tree: Any) -> Any:
            return jax.tree.map(replace, tree, is_leaf=lambda node: isinstance(node, known))

        new = rebuild(group_state)
        unused = [
            (p, k) for p, arrays in self.arrays.items() for k in arrays if (p, k) not in self.used
        ]
        if unused:
            path, key = unused[0]
            raise ValueError(
                f"{self.where}: parameter {path!r}'s {key!r} has no place in tx's state; build "
                "tx with the torch optimizer's flags (amsgrad, centered, momentum > 0, ...)."
            )
        return new

    def _injected(self, node, step, injected, values, rebuild) -> InjectHyperparamsState:
        hyperparams = {
            name: like(injected[name], old) if name in injected else old
            for name, old in node.hyperparams.items()
        }
        scheduled = node.scheduled
        if step:  # the values the latest update used, as get_hyperparams reports them
            scheduled = {
                name: like(np.asarray(values[name](jnp.asarray(step - 1, jnp.int32))), old)
                for name, old in node.scheduled.items()
            }
        return node._replace(
            count=like(step, node.count) if step is not None else node.count,
            hyperparams=hyperparams,
            scheduled=scheduled,
            inner_state=rebuild(node.inner_state),
        )

    def _buffer(self, tree: Any, buffer: Buffer) -> Any:
        leaves = []
        for path, leaf in _tree.leaves_with_paths(tree):
            arrays = self.arrays.get(path)
            if arrays is None:  # no state yet: torch has not stepped this parameter
                leaves.append(leaf)
                continue
            if buffer.key not in arrays:
                if buffer.when is not None and not buffer.when(self.group):
                    leaves.append(leaf)
                    continue
                raise ValueError(
                    f"{self.where}: parameter {path!r} (torch id {self.ids[path]}) has no "
                    f"{buffer.key!r} in the state_dict, which tx's state keeps."
                )
            value = arrays[buffer.key]
            if value.shape != np.shape(leaf):
                hint = ""
                if value.shape == np.shape(leaf)[::-1]:
                    hint = f" (transposed: pass layouts={{{path!r}: 'transpose'}})"
                raise ValueError(
                    f"{self.where}: parameter {path!r} (torch id {self.ids[path]}): "
                    f"{buffer.key!r} has shape {value.shape} in the state_dict, but its optkit "
                    f"leaf has shape {np.shape(leaf)}{hint}."
                )
            self.used.add((path, buffer.key))
            leaves.append(like(value, leaf))
        return jax.tree.unflatten(jax.tree.structure(tree), leaves)

    def _scalar(self, leaf: jax.Array, scalar: Buffer) -> jax.Array:
        """A scalar torch keeps per parameter and optkit once per group: all must agree."""
        first = None
        for path, arrays in self.arrays.items():
            if scalar.key not in arrays:
                raise ValueError(f"{self.where}: parameter {path!r} has no {scalar.key!r}.")
            value = arrays[scalar.key]
            if first is None:
                first = (path, value)
            elif value != first[1]:
                raise ValueError(
                    f"{self.where}: parameter {path!r} has {scalar.key}={float(value)}, but "
                    f"{first[0]!r} of the same group has {float(first[1])}: optkit keeps one "
                    "per group."
                )
            self.used.add((path, scalar.key))
        return leaf if first is None else like(first[1], leaf)
