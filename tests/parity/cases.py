"""Every parity case, derived from the optimizer registry: optkit optimizer vs torch.optim.

Per registry row (``tests/support/registry.py``):

* one case per hyperparameter variant (``<name>-<variant>``), together switching on every flag,
  alone and combined;
* ``<name>-tensor_lr``: the first variant with the learning rate given as an array (a
  ``torch.tensor`` of the run's dtype in torch, a JAX array of the same dtype in optkit);
* ``<name>-param_groups``: the first variant split into two param groups, the second with the
  row's ``group_overrides`` (``optkit.param_groups`` vs torch's list of group dicts), for rows
  whose torch class takes param groups (``OptimizerInfo.param_groups``).

Plus the clipping rows: ``clip`` and ``clip_by_global_norm`` chained before SGD against
``torch.nn.utils.clip_grad_value_`` / ``clip_grad_norm_``.

torch is referenced by name (``"SGD"``, ``"clip_grad_norm_"``) so this table imports without torch:
the golden-file tests need only optkit and numpy.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Sequence

import jax.numpy as jnp
import numpy as np

import optkit
from tests.parity import problem
from tests.support.optimizer_info import Kwargs, OptimizerInfo, to_torch_kwargs
from tests.support.registry import REGISTRY

Wrap = Callable[[optkit.GradientTransformation], optkit.GradientTransformation]
MakeOptkit = Callable[[type[np.floating], Wrap], optkit.GradientTransformation]
"""``(dtype, wrap) -> transform``: ``wrap`` is the runner's path (e.g. ``optkit.flatten``),
applied to the optimizer itself, inside any param groups."""
Groups = tuple[tuple[tuple[str, ...], Kwargs], ...]


@dataclasses.dataclass(frozen=True)
class Case:
    """One parity case: an optkit optimizer and the torch.optim setup it must reproduce.

    Attributes:
        id: Unique name, used for test ids and golden-file keys.
        family: The golden file the case is stored in (the registry row's name, or ``clip``).
        make_optkit: Builds the optkit transform for a run's dtype and path (a fresh one per
            run).
        torch_optimizer: Class name in ``torch.optim``.
        torch_kwargs: Keyword arguments for that class (everything except the params).
        torch_clip: Optional ``(function name in torch.nn.utils, threshold)`` applied to the
            gradients before each ``optimizer.step()``.
        torch_groups: Optional param groups: ``(leaf names, torch overrides)`` per group.
        tensor_lr: torch's ``lr`` is a tensor of the run's dtype.
        problem: The name of the parity problem in ``tests/parity/problem.py``.
        closure: torch steps with ``optimizer.step(closure)`` (LBFGS); optkit's update gets
            ``value=``, ``grad=`` and ``value_fn=``.
        sparse_grads: torch's gradients are made sparse (``p.grad = p.grad.to_sparse()``, which
            drops exact zeros) before each step, as ``torch.optim.SparseAdam`` requires.
    """

    id: str
    family: str
    make_optkit: MakeOptkit
    torch_optimizer: str
    torch_kwargs: Kwargs
    torch_clip: tuple[str, float] | None = None
    torch_groups: Groups | None = None
    tensor_lr: bool = False
    problem: str = "standard"
    closure: bool = False
    sparse_grads: bool = False

    def torch_spec(self) -> str:
        """The torch side as canonical JSON; stored with the goldens to detect stale files."""
        spec = {
            "optimizer": self.torch_optimizer,
            "kwargs": dict(self.torch_kwargs),
            "clip": self.torch_clip,
            "groups": self.torch_groups and [[list(n), dict(k)] for n, k in self.torch_groups],
            "tensor_lr": self.tensor_lr,
            "problem": self.problem,
            "closure": self.closure,
        }
        if self.sparse_grads:  # Only when set, so the other families' goldens keep their specs.
            spec["sparse_grads"] = True
        return json.dumps(spec, sort_keys=True)


def _plain(factory: Callable[..., optkit.GradientTransformation], kwargs: Kwargs) -> MakeOptkit:
    return lambda dtype, wrap: wrap(factory(**kwargs))


def _with_tensor_lr(
    factory: Callable[..., optkit.GradientTransformation], kwargs: Kwargs
) -> MakeOptkit:
    def make(dtype: type[np.floating], wrap: Wrap) -> optkit.GradientTransformation:
        learning_rate = jnp.asarray(kwargs["learning_rate"], dtype)
        return wrap(factory(**{**kwargs, "learning_rate": learning_rate}))

    return make


def _in_groups(
    factory: Callable[..., optkit.GradientTransformation], kwargs: Kwargs, groups: Groups
) -> MakeOptkit:
    spec = [{"params": list(names), **overrides} for names, overrides in groups]

    def make(dtype: type[np.floating], wrap: Wrap) -> optkit.GradientTransformation:
        return optkit.param_groups(lambda **kw: wrap(factory(**kw)), spec, **kwargs)

    return make


def split_leaves(leaves: Sequence[str], overrides: Kwargs) -> Groups:
    """Two groups: the first half of the leaves with the defaults, the rest with ``overrides``."""
    half = len(leaves) // 2
    return ((tuple(leaves[:half]), {}), (tuple(leaves[half:]), dict(overrides)))


def cases_for(info: OptimizerInfo) -> list[Case]:
    """Every parity case of one registry row."""
    factory = info.factory
    common = {
        "family": info.name,
        "torch_optimizer": info.torch_class,
        "problem": info.problem,
        "closure": info.closure,
        "sparse_grads": info.sparse_gradients,
    }
    cases = [
        Case(
            id=f"{info.name}-{name}",
            make_optkit=_plain(factory, kwargs),
            torch_kwargs=to_torch_kwargs(kwargs),
            **common,
        )
        for name, kwargs in info.variants.items()
    ]
    first = next(iter(info.variants.values()))
    cases.append(
        Case(
            id=f"{info.name}-tensor_lr",
            make_optkit=_with_tensor_lr(factory, first),
            torch_kwargs=to_torch_kwargs(first),
            tensor_lr=True,
            **common,
        )
    )
    if not info.param_groups:
        return cases
    groups = split_leaves(list(problem.PROBLEMS[info.problem].leaf_shapes), info.group_overrides)
    cases.append(
        Case(
            id=f"{info.name}-param_groups",
            make_optkit=_in_groups(factory, first, groups),
            torch_kwargs=to_torch_kwargs(first),
            torch_groups=tuple((names, to_torch_kwargs(over)) for names, over in groups),
            **common,
        )
    )
    return cases


# Thresholds well below the problem's gradients (max |g| ~ 4.4, norm ~ 14 at the start), so
# clipping stays active for (nearly) all 30 steps; test_parity.py checks that it bites.
CLIP_VALUE = 0.5
CLIP_NORM = 2.0
CLIPPED_SGD: Kwargs = {"learning_rate": 0.05, "momentum": 0.5}


def _clip_then_sgd(clip: Callable[[float], optkit.GradientTransformation], threshold: float):
    """optkit's side of a clip row: the clip primitive chained before the same SGD."""
    return lambda dtype, wrap: wrap(optkit.chain(clip(threshold), optkit.sgd(**CLIPPED_SGD)))


CLIP_CASES: tuple[Case, ...] = (
    Case(
        id="clip_value-sgd",
        family="clip",
        make_optkit=_clip_then_sgd(optkit.clip, CLIP_VALUE),
        torch_optimizer="SGD",
        torch_kwargs=to_torch_kwargs(CLIPPED_SGD),
        torch_clip=("clip_grad_value_", CLIP_VALUE),
    ),
    Case(
        id="clip_global_norm-sgd",
        family="clip",
        make_optkit=_clip_then_sgd(optkit.clip_by_global_norm, CLIP_NORM),
        torch_optimizer="SGD",
        torch_kwargs=to_torch_kwargs(CLIPPED_SGD),
        torch_clip=("clip_grad_norm_", CLIP_NORM),
    ),
)

CASES: tuple[Case, ...] = (*(c for info in REGISTRY for c in cases_for(info)), *CLIP_CASES)

CASES_BY_ID: dict[str, Case] = {case.id: case for case in CASES}
if len(CASES_BY_ID) != len(CASES):
    raise ValueError("parity case ids must be unique")

FAMILIES: dict[str, tuple[Case, ...]] = {}
for _case in CASES:
    FAMILIES[_case.family] = (*FAMILIES.get(_case.family, ()), _case)
