r"""Resume a torch run in optkit, or hand an optkit run to torch: optimizer ``state_dict`` files.

:func:`from_torch_state_dict` turns a torch optimizer's ``state_dict()`` into an ``opt_state``
for an optkit optimizer of the same class; :func:`to_torch_state_dict` turns an ``opt_state``
into a ``state_dict`` that ``torch_optimizer.load_state_dict`` accepts. optkit's math is
torch's, so a run continued on the other side follows the trajectory it would have followed
at home.

How an optimizer says what it is. A ``state_dict`` needs the hyperparameters of every param group
(torch's ``load_state_dict`` takes them from the dict, not from the optimizer it loads into), and
an ``opt_state`` does not hold them: they are closed over by ``update``. So optkit's torch-named
optimizers (``optkit.adamw`` and the others) return a :class:`optkit._base.DescribedTransformation`:
still the NamedTuple ``(init, update)`` (it unpacks, jits and goes into ``optax.chain``, Flax's
``TrainState`` and ``nnx.Optimizer`` as before), which also carries a read-only ``description``:
the torch class it reproduces and every argument it was built with, defaults included.
:func:`optkit.inject_hyperparams` passes its optimizer's description on and
:func:`optkit.param_groups` describes each group and which leaves it holds. Runtime values win:
an injected hyperparameter is read from the state (:func:`optkit.set_hyperparams` changes it)
and a schedule is evaluated at the group's update count, giving the ``lr`` torch's group would
hold after as many ``scheduler.step()`` calls. The description lives on the optimizer object
rather than in a side table or an extra argument, so it travels through these combinators and
costs nothing inside ``jit``. A chain of an optimizer with other transforms, ``optkit.flatten``
and ``optkit.partition`` are not described (their state is laid out differently, or holds
several optimizers): both functions refuse them with a clear error. For an optimizer behind
stateless transforms in a chain (gradient clipping), convert with the optimizer itself and put
its state at its place in the chain's tuple of states.

Where each torch tensor lives in optkit is a table (``optkit/interop/_torch_classes.py``): per
class, the optkit state field holding each per-parameter tensor (``exp_avg`` is the ``mu`` leaf
at the parameter's path), the ``count`` that is torch's ``step``, and the param-group entries in
torch's order. Every ``count`` in a group's state (the optimizer's, a schedule's,
``inject_hyperparams``') is set to torch's step on import; SGD and Muon keep no step, so an
optimizer with a schedule needs ``step=`` there.

Parameters are matched by position: ``param_paths[i]`` is the optkit leaf (its ``/``-joined
path, as :func:`optkit.param_groups` selectors see it) of the parameter torch numbers ``i`` in
its ``state_dict``: the order of ``model.parameters()`` for one group, the groups' lists one
after the other for several. ``layouts`` converts a leaf whose layout differs: ``"transpose"``
reverses the axes (torch's ``nn.Linear`` weight is ``(out, in)``, Flax's ``Dense`` kernel
``(in, out)``) and also swaps Adafactor's row and column statistics; a pair of functions
``(to_optkit, to_torch)`` converts any other layout (e.g. a convolution kernel), applied to
each buffer of the parameter's shape.

torch is optional: reading a file (``torch.load(path, weights_only=True)``, never a general
unpickler) and writing tensors need it, and it is imported inside those functions only. A
``state_dict`` already in memory is read through NumPy and may hold NumPy arrays instead of
tensors.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from optkit import _tree
from optkit._base import (
    GradientTransformation,
    OptState,
    ParamGroupsDescription,
    Params,
    description_of,
)
from optkit.combinators.hyperparams import InjectHyperparamsState
from optkit.combinators.masking import MaskedState
from optkit.combinators.param_groups import ParamGroupsState
from optkit.interop import _torch_matching as matching
from optkit.interop import _torch_values as values
from optkit.interop._torch_classes import TORCH_CLASSES

Layout = str | tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]
"""``"transpose"``, or ``(to_optkit, to_torch)``: functions from torch's array to optkit's and
back."""
StateDict = dict[str, Any]


def from_torch_state_dict(
    tx: GradientTransformation,
    params: Params,
    state_dict: Mapping[str, Any] | str | os.PathLike,
    param_paths: Sequence[str],
    *,
    layouts: Mapping[str, Layout] | None = None,
    step: int | None = None,
) -> OptState:
    """The ``opt_state`` of ``tx`` that continues a torch optimizer from its ``state_dict()``.

    Same as torch's ``optimizer.load_state_dict(state_dict)``: after it, ``tx.update`` takes the
    steps torch would have taken. ``tx`` is built with the class and hyperparameters of the torch
    optimizer: hyperparameters that ``tx`` holds as numbers must equal the dict's (an error names
    any that differ); injected ones (:func:`optkit.inject_hyperparams`) take the dict's values,
    as torch's ``load_state_dict`` does; schedules are not compared. Several torch param groups
    need :func:`optkit.param_groups` with the same groups, in the same order.

    Args:
        tx: A torch-named optkit optimizer (``optkit.adamw(...)``), possibly built through
            ``inject_hyperparams`` and ``param_groups``. Every class but LBFGS.
        params: The params to continue from (torch's, converted), as ``tx.init`` takes them.
        state_dict: ``torch_optimizer.state_dict()``, or the path of a file saved with
            ``torch.save`` (read with ``torch.load(path, weights_only=True)``).
        param_paths: The optkit leaf path of each parameter, in torch's order (see the module
            docstring): ``param_paths[i]`` is the parameter torch numbers ``i``.
        layouts: ``{path: "transpose" | (to_optkit, to_torch)}`` for leaves laid out unlike
            torch's.
        step: The number of updates torch has taken, for the classes whose state does not
            record it (SGD, Muon) when ``tx`` needs it (a schedule); checked against torch's
            ``step`` otherwise.

    Examples:
        torch's ``SGD(model.parameters(), lr=0.1, momentum=0.9)`` after one step, as
        ``optimizer.state_dict()`` gives it (tensors, or NumPy arrays as here):

        >>> import jax.numpy as jnp, numpy as np, optkit
        >>> state_dict = {
        ...     "state": {0: {"momentum_buffer": np.array([0.5, -0.5])}},
        ...     "param_groups": [{"lr": 0.1, "momentum": 0.9, "dampening": 0,
        ...                       "weight_decay": 0, "nesterov": False, "maximize": False,
        ...                       "foreach": None, "differentiable": False, "fused": None,
        ...                       "params": [0]}],
        ... }
        >>> params = {"w": jnp.array([1.0, 2.0])}
        >>> tx = optkit.sgd(learning_rate=0.1, momentum=0.9)
        >>> opt_state = optkit.from_torch_state_dict(tx, params, state_dict, ["w"])
        >>> opt_state[0].trace["w"]  # the momentum buffer
        Array([ 0.5, -0.5], dtype=float32)
        >>> tx = optkit.sgd(learning_rate=0.1)
        >>> optkit.from_torch_state_dict(tx, params, state_dict, ["w"])  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        ValueError: ...: param group 0: momentum is 0.9 in the state_dict but 0.0 in tx. ...

    Raises:
        ValueError: naming the parameter or hyperparameter, if the state_dict does not fit
            ``tx`` and ``params``: a parameter missing or extra, a buffer of the wrong shape,
            parameters of one group at different steps or some without state, groups that
            differ, a hyperparameter that differs, or an LBFGS optimizer.
        TypeError: if ``tx`` is not described (a chain, an optax transform).
    """
    where = "from_torch_state_dict"
    state_dict = _read(state_dict, where)
    ids, layout_of = matching.check_paths(params, param_paths, layouts, where)
    groups = _groups(tx, params, param_paths, where)
    torch_groups = matching.match_groups(state_dict, groups, param_paths, where)
    records = matching.records(state_dict, ids, where)
    opt_state = tx.init(params)
    new_states = []
    for index, (group, torch_group) in enumerate(zip(groups, torch_groups, strict=True)):
        here = f"{where}: param group {index}"
        group_state = opt_state.groups[index].inner_state if _in_groups(tx) else opt_state
        injected = {
            name
            for node in values.nodes(group_state, InjectHyperparamsState)
            for name in node.hyperparams
        }
        taken = values.check_hyperparameters(
            group.table, group.description, torch_group, injected, here
        )
        present = {path: records[path] for path in group.paths if path in records}
        if group.table.keeps_state(torch_group):
            matching.check_all_or_none(group.paths, present, ids, here)
        group_step = matching.group_step(group, present, ids, step, here)
        matching.check_step_known(group, group_state, group_step, here)
        filler = values.Filler(
            group.description.torch_class, group.table, torch_group, present, layout_of, ids, here
        )
        new_states.append(filler.state(group_state, group_step, taken, group.description.arguments))
    if _in_groups(tx):
        return ParamGroupsState(groups=tuple(MaskedState(inner_state=s) for s in new_states))
    return new_states[0]


def to_torch_state_dict(
    tx: GradientTransformation,
    opt_state: OptState,
    params: Params,
    param_paths: Sequence[str],
    *,
    layouts: Mapping[str, Layout] | None = None,
) -> StateDict:
    """A torch optimizer ``state_dict()`` holding ``opt_state``, for ``load_state_dict``.

    Same as torch's ``optimizer.state_dict()``: per parameter its tensors (``step``,
    ``exp_avg``, ...) and per group the hyperparameters as the torch class stores them, complete
    (torch's ``load_state_dict`` takes them from the dict): the current values of injected ones,
    and a schedule's value at the group's update count as ``lr`` (with ``initial_lr``, its
    value at count 0, which torch's schedulers read when resumed). torch's implementation
    switches (``foreach``, ``capturable``, ``differentiable``, ``fused``) get torch's defaults.
    A parameter has no state before its first update, as in torch (Adagrad's, created by its
    constructor, excepted). Save the result with ``torch.save``. Needs torch.

    Args:
        tx: The optimizer that made ``opt_state`` (see :func:`from_torch_state_dict`).
        opt_state: Its state.
        params: The params (their paths and shapes; the values are not read).
        param_paths: The optkit leaf path of each parameter, in the order of the torch
            optimizer's parameters (each param group's list, one group after the other).
        layouts: ``{path: "transpose" | (to_optkit, to_torch)}`` for leaves laid out unlike
            torch's.

    Returns:
        ``{"state": {id: {key: tensor}}, "param_groups": [{..., "params": [ids]}]}``.

    Examples:
        A Flax ``Dense`` kernel is ``(in, out)``, torch's ``Linear`` weight ``(out, in)``:

        >>> import jax, jax.numpy as jnp, optkit, torch
        >>> params = {"kernel": jnp.ones((3, 2)), "bias": jnp.zeros(2)}
        >>> tx = optkit.adamw(learning_rate=1e-3)
        >>> opt_state = tx.init(params)
        >>> grads = jax.tree.map(jnp.ones_like, params)
        >>> _, opt_state = tx.update(grads, opt_state, params)
        >>> state_dict = optkit.to_torch_state_dict(
        ...     tx, opt_state, params, ["kernel", "bias"], layouts={"kernel": "transpose"}
        ... )
        >>> state_dict["state"][0]["exp_avg"].shape, state_dict["state"][0]["step"]
        (torch.Size([2, 3]), tensor(1.))
        >>> linear = torch.nn.Linear(3, 2)
        >>> optimizer = torch.optim.AdamW(linear.parameters(), lr=1e-3)
        >>> optimizer.load_state_dict(state_dict)
        >>> optimizer.param_groups[0]["weight_decay"]
        0.01

    Raises:
        ValueError: if ``tx`` is an LBFGS optimizer, or has a hyperparameter torch has no
            place for (AdamW's ``mask``: use param groups with ``weight_decay=0.0``).
        TypeError: if ``tx`` is not described (a chain, an optax transform).
        ImportError: without torch.
    """
    where = "to_torch_state_dict"
    ids, layout_of = matching.check_paths(params, param_paths, layouts, where)
    arrays: dict[int, dict[str, Any]] = {}  # NumPy first: every check runs before torch is needed
    param_groups = []
    for index, group in enumerate(_groups(tx, params, param_paths, where)):
        table = group.table
        group_state = opt_state.groups[index].inner_state if _in_groups(tx) else opt_state
        arguments = values.arguments(group.description, group_state)
        count, updates = values.updates_done(table, group_state)
        torch_group = values.torch_group(table, arguments, updates, f"{where}: param group {index}")
        torch_group["params"] = sorted(ids[path] for path in group.paths)
        param_groups.append(torch_group)
        # torch creates a parameter's state at its first step (Adagrad's when it is built).
        stepped = count > 0 or table.counter is None or table.eager
        if not (stepped and table.keeps_state(torch_group)):
            continue
        buffers = values.gathered(table, group_state, torch_group, group.paths, layout_of)
        scalars = {
            scalar.key: np.asarray(
                getattr(values.nodes(group_state, scalar.state_type)[0], scalar.field)
            )
            for scalar in table.scalars
        }
        step = {"step": count if table.integer_step else np.asarray(float(count))}
        for path in group.paths:
            arrays[ids[path]] = {**(step if table.step else {}), **scalars, **buffers[path]}
    torch = _import_torch(where)
    state = {index: _tensors(torch, record) for index, record in sorted(arrays.items())}
    return {"state": state, "param_groups": param_groups}


# --- the two sides' structure -------------------------------------------------------------------


def _import_torch(where: str) -> Any:
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"{where} needs torch (pip install torch) to read a file or make tensors; "
            "from_torch_state_dict reads a state_dict already in memory without it."
        ) from error
    return torch


def _read(state_dict: Any, where: str) -> Mapping[str, Any]:
    if isinstance(state_dict, str | os.PathLike):
        torch = _import_torch(where)
        state_dict = torch.load(state_dict, map_location="cpu", weights_only=True)
    if not (isinstance(state_dict, Mapping) and {"state", "param_groups"} <= set(state_dict)):
        got = sorted(map(str, state_dict)) if isinstance(state_dict, Mapping) else state_dict
        raise ValueError(
            f"{where}: expected a torch optimizer's state_dict() (a dict with 'state' and "
            f"'param_groups'), got {got!r}. For a whole checkpoint, pass its optimizer entry."
        )
    return state_dict


def _in_groups(tx: GradientTransformation) -> bool:
    return isinstance(description_of(tx), ParamGroupsDescription)


def _groups(
    tx: Any, params: Params, param_paths: Sequence[str], where: str
) -> list[matching.Group]:
    """Each param group's class table, description and leaf paths (in ``param_paths`` order)."""
    description = description_of(tx)
    if description is None:
        raise TypeError(
            f"{where}: tx does not say which torch optimizer it is. Build it with one of "
            "optkit's torch-named optimizers (optkit.adamw(...), ...), directly or through "
            "optkit.inject_hyperparams and optkit.param_groups; chains, optkit.flatten, "
            "optkit.partition and optax transforms carry no such description."
        )
    if isinstance(description, ParamGroupsDescription):
        owner = dict(
            zip(
                [path for path, _ in _tree.leaves_with_paths(params)],
                description.group_of(params),
                strict=True,
            )
        )
        count = len(description.groups)
        members = [[path for path in param_paths if owner[path] == g] for g in range(count)]
        described = list(zip(description.groups, members, strict=True))
    else:
        described = [(description, list(param_paths))]
    groups = []
    for index, (group_description, paths) in enumerate(described):
        if group_description is None:
            raise TypeError(f"{where}: param group {index}'s optimizer is not described.")
        torch_class = group_description.torch_class
        if torch_class not in TORCH_CLASSES:
            raise ValueError(
                f"{where}: torch.optim.{torch_class} keeps one flat record for all its "
                "parameters (LBFGS's history of directions and steps), not a state per "
                "parameter, so its state_dict cannot be converted. Restart LBFGS's history."
            )
        groups.append(matching.Group(TORCH_CLASSES[torch_class], group_description, paths))
    return groups


def _tensors(torch: Any, record: dict[str, Any]) -> dict[str, Any]:
    """One parameter's record with tensors: ``step`` a float tensor of torch's
    ``_get_scalar_dtype()`` (float32 unless torch's default dtype is float64; SparseAdam's stays
    an int), the arrays CPU copies (bfloat16, which NumPy lacks, through float32)."""
    tensors = {}
    for key, value in record.items():
        if isinstance(value, int):  # SparseAdam's step
            tensors[key] = value
        elif key == "step":
            dtype = torch.float64 if torch.get_default_dtype() == torch.float64 else torch.float32
            tensors[key] = torch.tensor(float(value), dtype=dtype)
        elif value.dtype.name == "bfloat16":
            tensors[key] = torch.from_numpy(value.astype(np.float32)).to(torch.bfloat16)
        else:
            tensors[key] = torch.from_numpy(np.array(value, copy=True))
    return tensors
