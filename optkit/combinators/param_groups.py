"""torch-style parameter groups: one optimizer, different hyperparameters for parts of the model."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax

from optkit import _arguments, _state, _tree
from optkit._base import (
    DescribedTransformation,
    GradientTransformation,
    ParamGroupsDescription,
    Params,
    Updates,
    description_of,
)
from optkit.combinators.masking import MaskedState, masked

Selector = str | Sequence[str] | Callable[[str, Any], bool] | Any
"""Which leaves a group holds: a glob over the leaf's path (``*`` within a segment, ``**`` across
segments), a list of globs, a function ``(path, leaf) -> bool``, or a bool pytree (or prefix)."""


class ParamGroupsState(NamedTuple):
    """One state per group, in the order the groups were given (torch's ``param_groups[i]``)."""

    groups: tuple[MaskedState, ...]


def glob_to_regex(pattern: str) -> re.Pattern[str]:
    """Compile a path glob: ``*`` and ``?`` match within one segment, ``**`` any number of them.

    ``base/**`` matches ``base`` and everything below it; ``**/bias`` matches every ``bias``.
    """
    # "**/**" means the same as "**"; collapsing repeats keeps one separator rule per "**".
    given = pattern.split("/")
    segments = [s for i, s in enumerate(given) if s != "**" or given[i - 1 : i] != ["**"]]
    if segments == ["**"]:
        return re.compile(r".*\Z")
    regex = ""
    for i, segment in enumerate(segments):
        if segment == "**":
            # Leading: zero or more "name/" before the next segment; else zero or more "/name".
            regex += "(?:[^/]+/)*" if i == 0 else "(?:/[^/]+)*"
            continue
        if i > 0 and not (i == 1 and segments[0] == "**"):
            regex += "/"
        regex += "".join(
            "[^/]*" if ch == "*" else "[^/]" if ch == "?" else re.escape(ch) for ch in segment
        )
    return re.compile(regex + r"\Z")


def _selector_fn(selector: Selector, index: int) -> Callable[[Any], list[bool]]:
    """A function from a tree to one bool per leaf (in ``leaves_with_paths`` order), failing when
    the selector (or one of its globs) matches no leaf: a misspelled ``"**/bais"`` would
    otherwise leave its leaves to another group's hyperparameters."""
    where = f"param_groups: group {index}"

    def nothing_matched(tree: Any, what: str) -> ValueError:
        paths = [path for path, _ in _tree.leaves_with_paths(tree)]
        return ValueError(
            f"{where}: {what} matches no leaf. The tree's leaf paths are "
            f"{_tree.listed(paths) or 'none'}; paths are the '/'-joined keys (see "
            "optkit.param_groups)."
        )

    if isinstance(selector, str) or (
        isinstance(selector, list | tuple)
        and selector
        and all(isinstance(s, str) for s in selector)
    ):
        globs = [selector] if isinstance(selector, str) else list(selector)
        regexes = [glob_to_regex(g) for g in globs]

        def match(tree: Any) -> list[bool]:
            paths = [path for path, _ in _tree.leaves_with_paths(tree)]
            for glob, regex in zip(globs, regexes, strict=True):
                if not any(regex.match(path) for path in paths):
                    raise nothing_matched(tree, f"the glob {glob!r}")
            return [any(r.match(path) for r in regexes) for path in paths]

        return match
    if callable(selector):

        def call(tree: Any) -> list[bool]:
            picks = []
            for path, leaf in _tree.leaves_with_paths(tree):
                pick = selector(path, leaf)
                if not isinstance(pick, bool):
                    raise TypeError(
                        f"{where}: the selector returned {type(pick).__name__} for {path!r}; "
                        "it must return a Python bool."
                    )
                picks.append(pick)
            if not any(picks):
                raise nothing_matched(tree, f"the selector {selector!r}")
            return picks

        return call

    def mask(tree: Any) -> list[bool]:
        picks = jax.tree.leaves(_tree.resolve_mask(selector, tree, where))
        if not any(picks):
            raise nothing_matched(tree, "the mask (every entry is False)")
        return picks

    return mask


def _check_names(optimizer: Callable[..., Any], names: Sequence[str], where: str) -> None:
    """Fail on a hyperparameter name the optimizer does not take (torch's ``lr``, a typo), when
    its signature says which it takes; otherwise the optimizer's own call reports it."""
    unknown = _arguments.unknown_names(optimizer, names)
    if unknown:
        name, why = next(iter(unknown.items()))
        raise ValueError(
            f"param_groups: {where} names the hyperparameter {name!r}, which "
            f"{getattr(optimizer, '__name__', 'the optimizer')} does not take: {why}"
            + ("" if why.endswith("?") else ".")
        )


def _check_groups(groups: Any) -> list[Mapping[str, Any]]:
    if isinstance(groups, Mapping) or not isinstance(groups, Sequence) or not groups:
        raise TypeError(
            "param_groups: groups must be a non-empty list of dicts, each with a 'params' selector."
        )
    for index, group in enumerate(groups):
        if not isinstance(group, Mapping) or "params" not in group:
            raise TypeError(f"param_groups: group {index} must be a dict with a 'params' entry.")
    return list(groups)


def param_groups(
    optimizer: Callable[..., GradientTransformation],
    groups: Sequence[Mapping[str, Any]],
    **defaults: Any,
) -> GradientTransformation:
    """One optimizer with per-group hyperparameters, as torch's ``optimizer(param_groups, ...)``.

    Each group is a dict with ``"params"`` (a :data:`Selector`) and any hyperparameters of
    ``optimizer`` to override; missing ones come from ``defaults``. Each group gets its own
    ``optimizer(**defaults, **overrides)``, whose state holds only that group's leaves.

    Leaf paths are the ``/``-joined keys of the tree: ``params/Dense_0/bias`` in a Flax linen
    tree, ``l1/bias`` in an ``nnx.State``, ``0/w`` for a list entry. Selectors see the params (or
    the updates when ``update`` gets no params).

    In torch, the two common set-ups (per-module learning rates; no decay on biases)::

        optim.SGD([{'params': model.base.parameters(), 'lr': 1e-2},
                   {'params': model.classifier.parameters()}], lr=1e-3, momentum=0.9)
        optim.SGD([{'params': others}, {'params': bias_params, 'weight_decay': 0}],
                  weight_decay=1e-2, lr=1e-2)

    Examples:
        The same two set-ups in optkit:

        >>> import jax.numpy as jnp, optkit
        >>> params = {
        ...     "base": {"w": jnp.ones(2)},
        ...     "classifier": {"w": jnp.ones(2), "bias": jnp.ones(1)},
        ... }
        >>> tx = optkit.param_groups(
        ...     optkit.sgd,
        ...     [{"params": "base/**", "learning_rate": 1e-2}, {"params": "classifier/**"}],
        ...     learning_rate=1e-3, momentum=0.9,
        ... )
        >>> no_bias_decay = optkit.param_groups(
        ...     optkit.sgd,
        ...     [{"params": lambda path, leaf: "bias" not in path},
        ...      {"params": lambda path, leaf: "bias" in path, "weight_decay": 0.0}],
        ...     weight_decay=1e-2, learning_rate=1e-2,
        ... )
        >>> state = no_bias_decay.init(params)

    Raises:
        ValueError: at construction if a group (or ``defaults``) names a hyperparameter the
            optimizer does not take (torch's ``lr`` or ``betas``, a typo such as
            ``weight_decy``; the message gives the optkit name), or a group's hyperparameters are
            invalid; at ``init``/``update`` if a group's selector (or one of its globs) matches
            no leaf, or a leaf is in no group or in more than one (the messages list paths).
        TypeError: at construction if ``groups`` is malformed.
    """
    groups = _check_groups(groups)
    _check_names(optimizer, list(defaults), "the defaults")
    transforms = []
    selectors = []
    for index, group in enumerate(groups):
        overrides = {key: value for key, value in group.items() if key != "params"}
        _check_names(optimizer, list(overrides), f"group {index}")
        try:
            transforms.append(optimizer(**{**defaults, **overrides}))
        except (TypeError, ValueError) as error:
            raise type(error)(f"param_groups: group {index}: {error}") from error
        selectors.append(_selector_fn(group["params"], index))

    def assign(tree: Any) -> list[int]:
        """The group index of every leaf, failing on leaves in no group or in several."""
        picks = [select(tree) for select in selectors]
        paths = [path for path, _ in _tree.leaves_with_paths(tree)]
        owners = [[g for g in range(len(groups)) if picks[g][i]] for i in range(len(paths))]
        orphans = [paths[i] for i, o in enumerate(owners) if not o]
        shared = [f"{paths[i]!r} (groups {o})" for i, o in enumerate(owners) if len(o) > 1]
        if orphans:
            raise ValueError(
                f"param_groups: {len(orphans)} leaves are in no group: {_tree.listed(orphans)}. "
                "Every leaf needs a group; give frozen leaves one with learning_rate=0."
            )
        if shared:
            raise ValueError(
                f"param_groups: {len(shared)} leaves are in more than one group: "
                + ", ".join(shared[:5])
            )
        return [o[0] for o in owners]

    def group_transforms(tree: Any) -> list[GradientTransformation]:
        owner = assign(tree)
        treedef = jax.tree.structure(tree)
        return [
            masked(tx, jax.tree.unflatten(treedef, [o == g for o in owner]))
            for g, tx in enumerate(transforms)
        ]

    def init(params: Params) -> ParamGroupsState:
        return ParamGroupsState(groups=tuple(t.init(params) for t in group_transforms(params)))

    def update(
        updates: Updates, state: ParamGroupsState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, ParamGroupsState]:
        new_states = []
        for tx, group_state in zip(
            group_transforms(updates if params is None else params), state.groups, strict=True
        ):
            updates, group_state = tx.update(updates, group_state, params, **extra_args)
            new_states.append(group_state)
        return updates, ParamGroupsState(groups=tuple(new_states))

    description = ParamGroupsDescription(
        groups=tuple(description_of(tx) for tx in transforms), group_of=assign
    )
    update = _state.checking_state(init, update, "param_groups update")
    return DescribedTransformation(init, update, description)
