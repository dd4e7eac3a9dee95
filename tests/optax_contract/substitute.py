"""Load optax's own test modules with optkit's implementations in place of the optax names it
claims, without touching optax itself.

A test module is executed afresh under a private name, with an ``__import__`` that hands it, for
every optax module it imports (``from optax._src import alias``, ``from optax.transforms import
_masking``), a copy of that module's namespace in which the claimed names are optkit's. Names
bound when the module is executed (parameter lists built from ``transform.scale_by_adam``)
therefore see optkit too; optax's tooling (``optax.tree.map_params``, ``test_utils``) stays
optax's, which is the point: it runs on optkit's states.
"""

from __future__ import annotations

import builtins
import importlib.util
import pathlib
import types
import unittest
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jax
import optax

OPTAX_ROOT = pathlib.Path(optax.__file__).parent


def _namespace(module: types.ModuleType, replacements: Mapping[str, Any]) -> types.ModuleType:
    """A module object with ``module``'s names, ``replacements`` overriding some."""
    copy = types.ModuleType(module.__name__, module.__doc__)
    copy.__dict__.update(vars(module))
    copy.__dict__.update(replacements)
    return copy


def _substituting_import(substitutes: Mapping[str, Mapping[str, Any]]) -> Callable[..., Any]:
    real_import = builtins.__import__

    def substituted(module: types.ModuleType) -> types.ModuleType:
        return _namespace(module, substitutes.get(module.__name__, {}))

    def import_(name, globals=None, locals=None, fromlist=(), level=0):
        module = real_import(name, globals, locals, fromlist, level)
        if not module.__name__.startswith("optax"):
            return module
        if not fromlist:  # `import optax.tree` binds the package `optax`
            return substituted(module)
        items = {}
        for item in fromlist:
            value = getattr(module, item)
            if isinstance(value, types.ModuleType):
                items[item] = substituted(value)
            elif item in substitutes.get(module.__name__, {}):
                items[item] = substitutes[module.__name__][item]
        return _namespace(module, items) if items else module

    return import_


def load_test_module(
    relative_path: str, substitutes: Mapping[str, Mapping[str, Any]]
) -> types.ModuleType:
    """Execute ``optax/<relative_path>`` with ``substitutes`` (optax module name -> {name:
    optkit object}) in place, and return the module."""
    path = OPTAX_ROOT / relative_path
    name = "optkit_contract_" + relative_path.replace("/", "_").removesuffix(".py")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    module.__builtins__ = {**vars(builtins), "__import__": _substituting_import(substitutes)}
    spec.loader.exec_module(module)
    return module


def test_names(case: type[unittest.TestCase]) -> list[str]:
    """The test methods of a TestCase class (parameterized ones expanded), sorted."""
    return list(unittest.TestLoader().getTestCaseNames(case))


def contract_case(
    case: type[unittest.TestCase],
    *,
    prefix: str,
    only: Iterable[str] | Callable[[str, Any], bool] | None = None,
    excluded: Iterable[str] = (),
    pending: Iterable[str] = (),
) -> type[unittest.TestCase]:
    """A subclass of optax's ``case`` that pytest collects as ``<prefix><case name>``.

    ``only`` selects what runs: the names of test methods, or a predicate on
    ``(name, method)`` (absl's generated methods carry their parameters in
    ``__x_params_repr__``). ``excluded`` methods are removed (a deliberate difference, listed
    with its reason by the caller); ``pending`` methods must still fail
    (``unittest.expectedFailure``: a pass is reported as an unexpected success, which fails the
    run). Every listed name must be a selected test, so the lists cannot go stale silently.
    Each test runs as optax's suite does, with 64-bit types off (optkit's suite turns them on).
    """
    if only is None:
        chosen = lambda name, method: True
    elif callable(only):
        chosen = only
    else:
        wanted = set(only)
        missing = sorted(wanted - set(test_names(case)))
        assert not missing, f"{case.__name__}: no such tests {missing}"
        chosen = lambda name, method: name in wanted
    names = [n for n in test_names(case) if chosen(n, getattr(case, n))]
    excluded, pending = set(excluded), set(pending)
    unknown = sorted((excluded | pending) - set(names))
    assert not unknown, f"{case.__name__}: no such selected tests {unknown}"

    def set_up(self: unittest.TestCase) -> None:
        x64 = jax.enable_x64(False)
        x64.__enter__()
        self.addCleanup(x64.__exit__, None, None, None)
        case.setUp(self)

    overrides: dict[str, Any] = {"setUp": set_up}
    for method in test_names(case):
        if method in excluded or method not in names:
            overrides[method] = None
        elif method in pending:
            overrides[method] = unittest.expectedFailure(getattr(case, method))
    return type(prefix + case.__name__, (case,), overrides)


def selected_count(case: type[unittest.TestCase]) -> int:
    """How many tests a :func:`contract_case` class runs."""
    return len(test_names(case))


def optkit_claims() -> dict[str, dict[str, Any]]:
    """optax module name -> the names in it that optkit implements under the same name."""
    import optkit
    from optkit import schedules
    from optkit.combinators import masking

    transforms = {
        "add_decayed_weights": optkit.add_decayed_weights,
        "clip": optkit.clip,
        "clip_by_global_norm": optkit.clip_by_global_norm,
    }
    combining = {
        "chain": optkit.chain,
        "partition": optkit.partition,
        "PartitionState": optkit.PartitionState,
    }
    masked = {
        "masked": optkit.masked,
        "MaskedNode": optkit.MaskedNode,
        "MaskedState": optkit.MaskedState,
        "_mask_callable": masking.mask_is_function,
    }
    aliases = {
        name: getattr(optkit, name)
        for name in [
            *("adadelta", "adafactor", "adagrad", "adam", "adamax", "adamw"),
            *("lbfgs", "nadam", "radam", "rmsprop", "rprop", "sgd"),
        ]
    }
    scalers = {
        name: getattr(optkit, name)
        for name in [
            *("scale", "scale_by_learning_rate", "scale_by_adam"),
            *("trace", "TraceState", "ScaleByAdamState"),
        ]
    }
    inject = {
        "inject_hyperparams": optkit.inject_hyperparams,
        "InjectHyperparamsState": optkit.InjectHyperparamsState,
    }
    injected = {**inject, "join_schedules": schedules.join_schedules}
    injected["warmup_cosine_decay_schedule"] = schedules.warmup_cosine_decay
    packaged = {**transforms, **combining, **masked}
    return {
        "optax": {
            **aliases,
            **scalers,
            **packaged,
            **injected,
            "apply_updates": optkit.apply_updates,
            "global_norm": optkit.global_norm,
        },
        "optax.transforms": packaged,
        "optax.schedules": injected,
        "optax._src.update": {"apply_updates": optkit.apply_updates},
        "optax._src.base": {
            "identity": optkit.identity,
            "stateless": optkit.stateless,
            "EmptyState": optkit.EmptyState,
        },
        "optax._src.combine": combining,
        "optax.transforms._combining": combining,
        "optax._src.wrappers": masked,
        "optax.transforms._masking": masked,
        "optax.transforms._adding": transforms,
        "optax.transforms._clipping": transforms,
        "optax._src.linear_algebra": {"global_norm": optkit.global_norm},
        "optax._src.transform": {**transforms, **scalers},
        "optax._src.alias": aliases,
        "optax.schedules._inject": inject,
        "optax.schedules._join": {"join_schedules": schedules.join_schedules},
        "optax.schedules._schedule": {
            "warmup_cosine_decay_schedule": schedules.warmup_cosine_decay
        },
    }
