"""The checks that a torch ``state_dict`` fits an optkit optimizer and its params: paths, param
groups, which parameters have state, and their step counts."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from optkit import _tree
from optkit._base import OptimizerDescription, OptState, Params
from optkit.combinators.hyperparams import InjectHyperparamsState
from optkit.interop._torch_classes import TorchClass
from optkit.interop._torch_values import Layout, integer, nodes
from optkit.transforms.scaling import ScaleByScheduleState


class Group(NamedTuple):
    """One param group as both sides see it: torch's class layout, optkit's description, and
    the group's leaf paths in ``param_paths`` order."""

    table: TorchClass
    description: OptimizerDescription
    paths: list[str]


def check_paths(
    params: Params,
    param_paths: Sequence[str],
    layouts: Mapping[str, Any] | None,
    where: str,
) -> tuple[dict[str, int], dict[str, Layout]]:
    """torch's id of each leaf path, and the layout of each leaf laid out unlike torch's."""
    leaves = dict(_tree.leaves_with_paths(params))
    if isinstance(param_paths, str) or not all(isinstance(p, str) for p in param_paths):
        raise TypeError(f"{where}: param_paths must be a list of leaf paths (strings).")
    ids: dict[str, int] = {}
    for index, path in enumerate(param_paths):
        if path in ids:
            raise ValueError(f"{where}: param_paths lists {path!r} twice.")
        if path not in leaves:
            raise ValueError(
                f"{where}: param_paths[{index}] is {path!r}, which is not a leaf of params; "
                f"its leaves are {_tree.listed(list(leaves))}."
            )
        ids[path] = index
    missing = [path for path in leaves if path not in ids]
    if missing:
        raise ValueError(
            f"{where}: params has leaves that param_paths does not list: {_tree.listed(missing)}. "
            "List every leaf, in the order of the torch optimizer's parameters."
        )
    layout_of = {}
    for path, layout in (layouts or {}).items():
        if path not in leaves:
            raise ValueError(f"{where}: layouts names {path!r}, which is not a leaf of params.")
        if layout == "transpose":
            layout_of[path] = Layout(np.transpose, np.transpose, True)
        elif isinstance(layout, tuple | list) and len(layout) == 2 and all(map(callable, layout)):
            layout_of[path] = Layout(layout[0], layout[1], False)
        else:
            raise TypeError(
                f"{where}: layouts[{path!r}] must be 'transpose' or a pair of functions "
                f"(to_optkit, to_torch), got {layout!r}."
            )
    return ids, layout_of


def match_groups(
    state_dict: Mapping[str, Any], groups: list[Group], param_paths: Sequence[str], where: str
) -> list[Mapping[str, Any]]:
    """torch's param groups, checked to hold the same parameters as ``tx``'s, in order."""
    torch_groups = list(state_dict["param_groups"])
    if len(torch_groups) != len(groups):
        hint = (
            " Build tx with optkit.param_groups, one group per torch group."
            if len(groups) == 1
            else ""
        )
        raise ValueError(
            f"{where}: the state_dict has {len(torch_groups)} param groups, tx has "
            f"{len(groups)}.{hint}"
        )
    listed = [i for group in torch_groups for i in group["params"]]
    count = len(param_paths)
    beyond = [i for i in listed if not (isinstance(i, int) and 0 <= i < count)]
    if beyond:
        raise ValueError(
            f"{where}: the state_dict has parameter {beyond[0]!r}, but param_paths lists "
            f"{count} parameters (ids 0 to {count - 1}): a parameter of the torch optimizer "
            "is missing from param_paths."
        )
    missing = [param_paths[i] for i in range(count) if i not in set(listed)]
    if missing:
        raise ValueError(
            f"{where}: {_tree.listed(missing)} of param_paths are missing from the state_dict, "
            f"whose param groups list {len(listed)} parameters for param_paths' {count}."
        )
    torch_owner = {
        param_paths[i]: g for g, group in enumerate(torch_groups) for i in group["params"]
    }
    for index, group in enumerate(groups):
        for path in group.paths:
            if torch_owner[path] != index:
                raise ValueError(
                    f"{where}: parameter {path!r} is in torch's param group "
                    f"{torch_owner[path]} but in tx's group {index}: list tx's groups in "
                    "torch's order, with the same parameters."
                )
    return torch_groups


def records(
    state_dict: Mapping[str, Any], ids: Mapping[str, int], where: str
) -> dict[str, dict[str, Any]]:
    """torch's per-parameter state by optkit path; entries that are ``None`` are left out."""
    paths = {index: path for path, index in ids.items()}
    records = {}
    for index, record in state_dict["state"].items():
        if index not in paths:
            raise ValueError(
                f"{where}: the state_dict has state for parameter {index!r}, which no param "
                "group lists."
            )
        record = {key: value for key, value in record.items() if value is not None}
        if record:
            records[paths[index]] = record
    return records


def check_all_or_none(
    paths: list[str], present: Mapping[str, Any], ids: Mapping[str, int], where: str
) -> None:
    with_state = [path for path in paths if path in present]
    without = [path for path in paths if path not in present]
    if with_state and without:
        raise ValueError(
            f"{where}: parameter {without[0]!r} (torch id {ids[without[0]]}) has no state in "
            f"the state_dict, but {with_state[0]!r} (id {ids[with_state[0]]}) of the same group "
            "has: torch creates a parameter's state at its first step with a gradient, so "
            f"{without[0]!r} never had one (frozen or unused). optkit updates every leaf of a "
            "group: give such parameters a group of their own in both frameworks."
        )


def group_step(
    group: Group,
    present: Mapping[str, Mapping[str, Any]],
    ids: Mapping[str, int],
    step: int | None,
    where: str,
) -> int | None:
    """The number of updates the group has taken: torch's common ``step``, or ``step=``."""
    if not group.table.step:
        return step
    steps = {}
    for path in group.paths:
        if path not in present:
            continue
        if "step" not in present[path]:
            raise ValueError(f"{where}: parameter {path!r} has state but no 'step'.")
        steps[path] = integer(present[path]["step"], f"{where}: parameter {path!r}'s step")
    first = next(iter(steps), None)
    for path, value in steps.items():
        if value != steps[first]:
            raise ValueError(
                f"{where}: parameter {path!r} (torch id {ids[path]}) is at step {value}, but "
                f"{first!r} (id {ids[first]}) of the same group is at step {steps[first]}: "
                "torch skipped some steps for it (no gradient), and optkit keeps one step count "
                "per group. Give such parameters a group of their own in both frameworks."
            )
    torch_step = steps[first] if first is not None else 0
    if step is not None and step != torch_step:
        raise ValueError(f"{where}: step={step}, but the state_dict's step is {torch_step}.")
    return torch_step


def check_step_known(group: Group, group_state: OptState, step: int | None, where: str) -> None:
    scheduled = any(node.scheduled for node in nodes(group_state, InjectHyperparamsState))
    if step is None and (scheduled or nodes(group_state, ScaleByScheduleState)):
        raise ValueError(
            f"{where}: torch.optim.{group.description.torch_class} does not record how many "
            "steps it has taken, and tx's schedule needs it: pass step= (the number of "
            "optimizer steps torch took)."
        )
