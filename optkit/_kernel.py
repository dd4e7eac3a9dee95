"""Per-leaf kernels: an optimizer's math written once, for one array, and applied to whole trees.

Most of an optimizer is elementwise per leaf: Adam's new moments and step for a leaf depend only
on that leaf's moments and gradient and on a few scalars. A *kernel* is that math for one leaf,
a plain function decorated with :func:`leaf_kernel`::

    class AdamLeaf(NamedTuple):
        mu: jax.Array
        nu: jax.Array
        update: jax.Array

    @leaf_kernel
    def _adam(mu, nu, update, *, one_minus_b1, ...) -> AdamLeaf:
        ...

    new = _adam(state.mu, state.nu, updates, one_minus_b1=..., ...)  # trees in, trees out
    new.mu, new.nu, new.update                                         # one tree per output

Its positional parameters are the per-leaf arrays (state buffers, the incoming updates, the
params); its keyword-only parameters are scalars shared by every leaf. A kernel returns either
one array or a NamedTuple whose fields each name one of its positional parameters: the new value
of that buffer. Static choices (amsgrad, nesterov, ``eps_root == 0``) are made when the transform
is built, by choosing a kernel, never by passing a flag into one.

The decorator owns what every kernel would otherwise repeat:

* **scalars by name**: a call must pass exactly the kernel's keyword-only parameters;
* **complex leaves**: a row with a complex leaf runs on each leaf seen as real pairs (torch's
  ``view_as_real``: the real and imaginary parts are two entries, so ``g * g`` squares each part)
  and its outputs are put back together as complex numbers;
* **dtypes**: floating JAX-array scalars (bias corrections, injected or traced hyperparameters)
  are cast to the leaf's compute dtype (the promoted dtype of its inputs) before the math, so a
  float64 scalar never promotes float32 or bfloat16 leaves; Python numbers stay weakly typed.
  float16 and bfloat16 leaves are computed in float32, and the kernel rounds to their dtype
  with ``_numerics.rounded`` wherever torch's op on them would (the identity for other dtypes).
  Each output is cast back to the dtype of the input of the same name (a single output: to the
  first input's), so state keeps its dtype step after step. Any rounding *inside* the math (a
  buffer stored in a narrower dtype and then reused) is the kernel's to write;
* **compile cost**: leaves whose abstract types (shape, dtype, weak type, sharding) repeat go
  through one nested ``jax.jit`` of the kernel, so JAX traces and lowers it once per distinct
  type instead of once per leaf (half of a 2000-leaf Adam step's lowering); XLA inlines the
  calls, so the compiled program is the same. Python numbers are compile-time constants of that
  trace, keyed by type and ``repr`` (``0.0`` and ``-0.0``, ``1`` and ``True`` never share one);
  arrays are arguments, so a new bias correction does not retrace.

It is also the seam where a fused or multi-tensor path would plug in.

When to use a kernel: per-leaf arithmetic on state and updates (moments, momentum, weight decay,
scaling, adding updates to params). When not: math across leaves (global norms, a flat vector of
every param), scalar bookkeeping (counts, bias corrections, schedules: compute those once in the
transform's ``update`` and pass them in as scalars), and structure (masking, routing leaves to
transforms), which are tree operations.
"""

from __future__ import annotations

import collections
import functools
import inspect
import typing
from collections.abc import Callable, Sequence
from typing import Any, Generic, TypeVar

import jax
import jax.numpy as jnp
import numpy as np

from optkit import _numerics

Output = TypeVar("Output")

# Keywords of a kernel call that are not scalars.
_CALL_OPTIONS = frozenset({"select", "is_leaf"})

# ``jax.typeof`` (an abstract value: shape, dtype, weak type, sharding) arrived after jax 0.4.35.
_typeof = getattr(jax, "typeof", None) or jax.core.get_aval


class _Constants:
    """Hashable scalar constants for the nested ``jit``: compared by type and ``repr``."""

    __slots__ = ("_key", "values")

    def __init__(self, values: dict[str, Any]) -> None:
        self.values = values
        self._key = tuple((name, type(v), repr(v)) for name, v in sorted(values.items()))

    def __hash__(self) -> int:
        return hash(self._key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Constants) and self._key == other._key


def _is_constant(value: Any) -> bool:
    return value is None or isinstance(value, bool | int | float | complex | str | np.generic)


def _output_fields(fn: Callable[..., Any]) -> tuple[str, ...] | None:
    """The field names of ``fn``'s NamedTuple return annotation, or None for a single array."""
    returned = typing.get_type_hints(fn).get("return")
    fields = getattr(returned, "_fields", None)
    return tuple(fields) if isinstance(returned, type) and fields is not None else None


class LeafKernel(Generic[Output]):
    """A per-leaf function lifted to trees; see :func:`leaf_kernel`."""

    def __init__(self, fn: Callable[..., Output]) -> None:
        functools.update_wrapper(self, fn)
        self.fn = fn
        parameters = inspect.signature(fn).parameters.values()
        self.inputs = tuple(
            p.name for p in parameters if p.kind is inspect.Parameter.POSITIONAL_OR_KEYWORD
        )
        self.scalars = frozenset(p.name for p in parameters if p.kind is p.KEYWORD_ONLY)
        if any(p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in parameters):
            raise TypeError(f"kernel {fn.__name__}: no *args or **kwargs; name every argument.")
        if not self.inputs:
            raise TypeError(f"kernel {fn.__name__}: needs at least one per-leaf array argument.")
        if self.scalars & _CALL_OPTIONS:
            raise TypeError(f"kernel {fn.__name__}: {sorted(_CALL_OPTIONS)} are reserved names.")
        self.output_type = typing.get_type_hints(fn).get("return")
        self.fields = _output_fields(fn)
        unknown = [f for f in self.fields or () if f not in self.inputs]
        if unknown:
            raise TypeError(
                f"kernel {fn.__name__}: outputs {unknown} name no input; each output field must "
                f"be the new value of one of the inputs {list(self.inputs)}."
            )
        # Output position -> input position whose dtype it keeps.
        self._keeps = (
            tuple(self.inputs.index(f) for f in self.fields) if self.fields is not None else (0,)
        )

        def nested(constants: _Constants, arrays: dict[str, Any], *leaves: Any) -> Any:
            return self._apply(constants, arrays, *leaves)

        # Named after the kernel, so jaxprs and profiles show which kernel each call runs.
        nested.__name__ = nested.__qualname__ = fn.__name__
        self._nested = jax.jit(nested, static_argnums=0)

    def _apply(self, constants: _Constants, arrays: dict[str, Any], *leaves: Any) -> Any:
        """The kernel on one row of leaves, with the decorator's casts around it."""
        if any(jnp.iscomplexobj(leaf) for leaf in leaves):
            return self._apply_complex(constants, arrays, *leaves)
        stored = leaves
        compute = jnp.result_type(*leaves)
        # float16/bfloat16 leaves are computed in float32 and the kernel rounds to their dtype
        # where torch's ops do (``_numerics.rounded``), as torch's CPU kernels compute them.
        storage = compute if _numerics.is_half(compute) else None
        if storage is not None:
            compute = jnp.dtype(jnp.float32)
            leaves = tuple(jnp.asarray(leaf).astype(compute) for leaf in leaves)
        real = jnp.finfo(compute).dtype if jnp.issubdtype(compute, jnp.inexact) else None
        cast = {
            name: value.astype(real)
            if real is not None and jnp.issubdtype(value.dtype, jnp.floating)
            else value
            for name, value in arrays.items()
        }
        with _numerics.stored_as(storage):
            out = self.fn(*leaves, **constants.values, **cast)
        leaves = stored
        outputs = tuple(out) if self.fields is not None else (out,)
        kept = tuple(
            _cast_to(value, leaves[i]) for value, i in zip(outputs, self._keeps, strict=True)
        )
        return kept if self.fields is not None else kept[0]

    def _apply_complex(self, constants: _Constants, arrays: dict[str, Any], *leaves: Any) -> Any:
        """The kernel on complex leaves seen as pairs of reals, as torch's ``view_as_real``: the
        real and imaginary parts are two entries each (Adam squares each part, not ``g * g``).

        Each leaf gets a trailing axis of size 2; the outputs are put back together as complex
        numbers. Kernels are elementwise, so the extra axis changes nothing else.
        """
        pairs = [jnp.stack([jnp.real(leaf), jnp.imag(leaf)], axis=-1) for leaf in leaves]
        out = self._apply(constants, arrays, *pairs)
        outputs = tuple(out) if self.fields is not None else (out,)
        merged = []
        for value, i in zip(outputs, self._keeps, strict=True):
            if not jnp.iscomplexobj(leaves[i]):
                raise TypeError(
                    f"kernel {self.fn.__name__}: its output {self.inputs[i]!r} is real but other "
                    "inputs of the leaf are complex; the imaginary part would be dropped."
                )
            merged.append(jax.lax.complex(value[..., 0], value[..., 1]))
        return tuple(merged) if self.fields is not None else merged[0]

    def __call__(
        self,
        *trees: Any,
        select: Sequence[bool] | None = None,
        is_leaf: Callable[[Any], bool] | None = None,
        **scalars: Any,
    ) -> Output:
        """Apply the kernel to every leaf of ``trees`` (one tree per input, same structure).

        ``scalars`` must be exactly the kernel's keyword-only parameters. ``select`` (one bool
        per leaf, single-output kernels only) leaves the unselected leaves of the first tree as
        they are; ``is_leaf`` is ``jax.tree.map``'s. Returns a tree, or the kernel's NamedTuple
        with a tree in each field.
        """
        name = self.fn.__name__
        if len(trees) != len(self.inputs):
            raise TypeError(f"kernel {name}: takes trees {list(self.inputs)}, got {len(trees)}.")
        if scalars.keys() != self.scalars:
            missing = sorted(self.scalars - scalars.keys())
            extra = sorted(scalars.keys() - self.scalars)
            raise TypeError(f"kernel {name}: missing scalars {missing}, unknown scalars {extra}.")
        if select is not None and self.fields is not None:
            raise TypeError(f"kernel {name}: select needs a single-output kernel.")
        treedef = jax.tree.structure(trees[0], is_leaf=is_leaf)
        columns = [treedef.flatten_up_to(tree) for tree in trees]
        rows = list(zip(*columns, strict=True))
        chosen = range(len(rows)) if select is None else [i for i, s in enumerate(select) if s]
        constants = _Constants({k: v for k, v in scalars.items() if _is_constant(v)})
        arrays = {k: jnp.asarray(v) for k, v in scalars.items() if not _is_constant(v)}
        kinds = {i: tuple(_typeof(leaf) for leaf in rows[i]) for i in chosen}
        repeats = collections.Counter(kinds.values())
        results = list(columns[0])
        for i in chosen:
            apply = self._nested if repeats[kinds[i]] > 1 else self._apply
            results[i] = apply(constants, arrays, *rows[i])
        if self.fields is None:
            return treedef.unflatten(results)
        transposed = zip(*results, strict=True) if results else [()] * len(self.fields)
        return self.output_type(*(treedef.unflatten(list(column)) for column in transposed))


def _cast_to(value: Any, reference: Any) -> Any:
    dtype = jnp.result_type(reference)
    return value if jnp.result_type(value) == dtype else jnp.asarray(value).astype(dtype)


def leaf_kernel(fn: Callable[..., Output]) -> LeafKernel[Output]:
    """Lift ``fn``, written for one leaf, to a function of trees (see the module docstring).

    ``fn`` must be defined at module level: its traces are cached on the returned object.
    """
    return LeafKernel(fn)
