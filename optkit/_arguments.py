"""Argument names a factory does not take: torch's spellings and typos, named with the optkit ones.

optkit's optimizers take torch's arguments under optax's names (``learning_rate`` for ``lr``,
``b1, b2`` for ``betas``). A user porting torch code writes ``optkit.adam(lr=1e-3)``; Python's
own error ("unexpected keyword argument 'lr'") does not say what to write instead. One table
(:data:`TORCH_SPELLINGS`) says it, for the factories' keyword arguments
(:func:`refuse_foreign_names`) and for :func:`optkit.param_groups`' group keys
(:func:`unknown_names`).
"""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

Factory = TypeVar("Factory", bound=Callable[..., Any])

_COMPILED = "XLA compiles and fuses the step under jax.jit; optkit has no such switch"

TORCH_SPELLINGS: dict[str, tuple[tuple[str, ...], str]] = {
    "lr": (("learning_rate",), ""),
    "betas": (("b1", "b2"), "torch's betas=(b1, b2) are two arguments"),
    "eps": (("eps1", "eps2"), "torch's eps=(eps1, eps2) are two arguments"),
    "decoupled_weight_decay": (
        (),
        "for torch's Adam(decoupled_weight_decay=True) use optkit.adamw",
    ),
    "params": ((), "optkit factories take no params: pass them to init(params)"),
    "foreach": ((), _COMPILED),
    "fused": ((), _COMPILED),
    "capturable": ((), _COMPILED),
    "differentiable": ((), "every optkit step is differentiable with jax.grad"),
}
"""torch argument name -> (the optkit names that replace it, a note). A torch name is only
reported where the factory does not take it itself (Adafactor's ``eps`` is its own)."""


def _parameters(factory: Callable[..., Any]) -> dict[str, inspect.Parameter] | None:
    """The factory's named parameters, or ``None`` when it takes any keyword (``**kwargs``) or
    has no inspectable signature: then only a call can tell which names it takes."""
    try:
        parameters = inspect.signature(factory).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        return None
    return {
        name: p
        for name, p in parameters.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }


def hint(name: str, accepted: Iterable[str]) -> str:
    """What to write instead of ``name``: the optkit spelling of a torch argument, else the
    closest accepted names (a typo), else the accepted names."""
    accepted = list(accepted)
    replacements, note = TORCH_SPELLINGS.get(name, ((), ""))
    if replacements:
        # A renamed torch argument, reported where this factory takes its optkit names.
        replacements = [r for r in replacements if r in accepted]
        if replacements:
            use = " and ".join(repr(r) for r in replacements)
            return f"optkit spells torch's {name!r} as {use}" + (f" ({note})" if note else "")
    elif note:
        return note
    close = difflib.get_close_matches(name, accepted, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(repr(c) for c in close) + "?"
    return f"it takes {', '.join(accepted) or 'no keyword arguments'}"


def unknown_names(factory: Callable[..., Any], names: Iterable[str]) -> dict[str, str] | None:
    """Each of ``names`` that ``factory`` does not take, with a :func:`hint`; ``None`` when the
    factory's accepted names cannot be known before calling it (``**kwargs``)."""
    parameters = _parameters(factory)
    if parameters is None:
        return None
    return {name: hint(name, parameters) for name in names if name not in parameters}


def refuse_foreign_names(factory: Factory) -> Factory:
    """``factory``, failing on an argument name it does not take with a TypeError that says the
    optkit name (``lr`` -> ``learning_rate``) or the closest one (a typo).

    The wrapper keeps the factory's name, signature and docstring; a valid call costs one set
    lookup per keyword.
    """
    where = getattr(factory, "__name__", repr(factory))
    parameters = _parameters(factory)
    if parameters is None:
        return factory

    @functools.wraps(factory)
    def checked(*args: Any, **kwargs: Any) -> Any:
        unknown = [name for name in kwargs if name not in parameters]
        if unknown:
            reasons = "; ".join(f"{name!r}: {hint(name, parameters)}" for name in unknown)
            raise TypeError(
                f"{where}() got unexpected keyword argument(s) {', '.join(map(repr, unknown))}"
                f" ({reasons})."
            )
        return factory(*args, **kwargs)

    return checked  # type: ignore[return-value]
