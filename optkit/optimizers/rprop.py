"""Rprop: per-element step sizes that grow while the gradient keeps its sign and shrink when it
flips; only the gradient's sign is used."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _numerics, _tree, _validation
from optkit._base import GradientTransformation, Params, ScalarOrSchedule, Updates
from optkit._kernel import leaf_kernel
from optkit.optimizers._compose import chain_present, described, maybe_negate
from optkit.transforms.scaling import negate


class ScaleByRpropState(NamedTuple):
    """Update count (torch's ``step``), each element's step size (torch's
    ``state[p]["step_size"]``) and the previous gradient, zeroed where its sign flipped (torch's
    ``state[p]["prev"]``)."""

    count: jax.Array
    step_size: Updates
    prev: Updates

    # Buffers that are never negative: quantize_state stores them with an unsigned map.
    non_negative_fields = ("step_size",)


class RpropLeaf(NamedTuple):
    step_size: jax.Array
    prev: jax.Array
    update: jax.Array


def _sign(x: jax.Array) -> jax.Array:
    """torch's CPU ``sign``: 0 for NaN (``jnp.sign`` gives NaN), so a NaN gradient entry does
    not move its param, and the next update treats it as having no previous sign."""
    return (x > 0).astype(x.dtype) - (x < 0).astype(x.dtype)


@leaf_kernel
def _rprop(
    step_size, prev, update, *, etaminus, etaplus, step_size_min, step_size_max
) -> RpropLeaf:
    # On 16-bit leaves torch's product is rounded (it can underflow to 0: no sign), and the
    # etas are stored in the product's dtype before they scale the step sizes.
    rounded, as_dtype = _numerics.rounded, _numerics.rounded_scalar
    agreement = _sign(rounded(update * prev))
    factor = jnp.where(
        agreement > 0, as_dtype(etaplus), jnp.where(agreement < 0, as_dtype(etaminus), 1.0)
    )
    # torch clamps every element, the unchanged ones too (a first step larger than the maximum).
    step_size = rounded(jnp.clip(rounded(step_size * factor), step_size_min, step_size_max))
    step_size = step_size.astype(step_size.dtype)
    # After a sign flip the element does not move, and the next update sees no previous sign.
    update = jnp.where(agreement < 0, 0, update)
    return RpropLeaf(step_size=step_size, prev=update, update=_sign(update) * step_size)


def _checked(etas: Any, step_sizes: Any) -> tuple[tuple[Any, Any], tuple[Any, Any]]:
    """torch's check of ``etas``, and the matching one of ``step_sizes`` (torch has none)."""
    etas = _validation.pair("etas", etas)
    step_sizes = _validation.pair("step_sizes", step_sizes)
    etaminus, etaplus = (_validation.concrete_scalar("etas", e) for e in etas)
    if etaminus is not None and not 0.0 < etaminus < 1.0:
        raise ValueError(f"etas must satisfy 0 < etaminus < 1 < etaplus, got etas={etas!r}.")
    if etaplus is not None and not etaplus > 1.0:
        raise ValueError(f"etas must satisfy 0 < etaminus < 1 < etaplus, got etas={etas!r}.")
    low, high = (_validation.concrete_scalar("step_sizes", s) for s in step_sizes)
    if (low is not None and not low >= 0.0) or (
        low is not None and high is not None and not low <= high
    ):
        raise ValueError(
            f"step_sizes must be (min, max) with 0 <= min <= max, got step_sizes={step_sizes!r}."
        )
    return etas, step_sizes


def scale_by_rprop(
    learning_rate: ScalarOrSchedule = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50),
) -> GradientTransformation:
    r"""Scale the sign of each gradient element by its own adaptive step size (Rprop).

    .. math::
        s_t &= \operatorname{sign}(g_t \cdot g'_{t-1}) \\
        \Delta_t &= \operatorname{clip}(\Delta_{t-1} \cdot
            \{\eta_+ \text{ if } s_t > 0,\ \eta_- \text{ if } s_t < 0,\ 1 \text{ else}\},
            \Delta_{\min}, \Delta_{\max}) \\
        g'_t &= 0 \text{ where } s_t < 0, \text{ else } g_t \\
        u_t &= \operatorname{sign}(g'_t)\, \Delta_t

    with :math:`\Delta_0` the learning rate and :math:`g'_0 = 0`; end a chain with ``negate()``
    to descend. Same rule as ``torch.optim.Rprop``: every step size is clamped at every update,
    so a learning rate above :math:`\Delta_{\max}` is clipped at the first one. optax's
    ``scale_by_rprop`` clips only the step sizes it grows or shrinks, returns each step one
    update late (its first update is zero), and takes the four numbers as separate arguments.

    The learning rate only initializes the step sizes, when the state is built (a schedule: its
    value at count 0). Later values are never read, as torch never reads ``lr`` again after its
    first step (a torch LR scheduler has no effect on Rprop).

    Args:
        learning_rate: :math:`\Delta_0 \ge 0`, the initial step size (torch's ``lr``).
        etas: ``(etaminus, etaplus)`` with ``0 < etaminus < 1 < etaplus``: the factors
            applied to a step size when the gradient's sign flips or stays.
        step_sizes: ``(min, max)`` with ``0 <= min <= max``: the range of the step sizes
            (torch does not check it).

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_rprop(learning_rate=0.1)
        >>> state = tx.init(jnp.zeros(2))
        >>> updates, state = tx.update(jnp.array([3.0, -0.5]), state)
        >>> updates  # sign(g) * 0.1
        Array([ 0.1, -0.1], dtype=float32)
        >>> updates, state = tx.update(jnp.array([2.0, 0.5]), state)
        >>> updates  # same sign: 0.1 * 1.2; flipped: no move, the step size halves
        Array([0.12, 0.  ], dtype=float32)
    """
    _validation.hyperparameters(learning_rate=learning_rate)
    (etaminus, etaplus), (step_size_min, step_size_max) = _checked(etas, step_sizes)

    def init(params: Params) -> ScaleByRpropState:
        first = _numerics.value_at(learning_rate, _numerics.zero_count(), "scale_by_rprop")
        return ScaleByRpropState(
            count=_numerics.zero_count(params),
            step_size=_tree.full_like(params, first),
            prev=_tree.zeros_like(params),
        )

    def update(
        updates: Updates, state: ScaleByRpropState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, ScaleByRpropState]:
        del params, extra_args
        updates = _tree.check_updates(state.prev, updates, "scale_by_rprop")
        new = _rprop(
            state.step_size,
            state.prev,
            updates,
            etaminus=etaminus,
            etaplus=etaplus,
            step_size_min=step_size_min,
            step_size_max=step_size_max,
        )
        return new.update, ScaleByRpropState(
            count=_numerics.increment(state.count), step_size=new.step_size, prev=new.prev
        )

    return GradientTransformation(init, update)


def rprop(
    learning_rate: ScalarOrSchedule = 1e-2,
    etas: tuple[float, float] = (0.5, 1.2),
    step_sizes: tuple[float, float] = (1e-6, 50),
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""Resilient backpropagation. Same math and defaults as ``torch.optim.Rprop``.

    .. math::
        s_t &= \operatorname{sign}(g_t \cdot g'_{t-1}), \quad g'_0 = 0 \\
        \Delta_t &= \operatorname{clip}(\Delta_{t-1} \cdot
            \{\eta_+ \text{ if } s_t > 0,\ \eta_- \text{ if } s_t < 0,\ 1 \text{ else}\},
            \Delta_{\min}, \Delta_{\max}), \quad \Delta_0 = \gamma \\
        g'_t &= 0 \text{ where } s_t < 0, \text{ else } g_t \\
        \theta_t &= \theta_{t-1} - \operatorname{sign}(g'_t)\, \Delta_t

    Only the gradient's sign is used: each element's step size grows by :math:`\eta_+` while
    its gradient keeps its sign and shrinks by :math:`\eta_-` when it flips (the element then
    stays put for one update). Meant for full-batch training: noisy minibatch signs defeat it.

    The learning rate :math:`\gamma` is only the initial step size, read when the state is built
    (``init``; a schedule's value at count 0): as in torch, where a later change of ``lr`` (by a
    scheduler or by hand) is never read, later schedule values and values set with
    ``set_hyperparams`` have no effect. ``etas`` and ``step_sizes`` are tuples, fixed when the
    optimizer is built (``inject_hyperparams`` passes them through); the state does not depend on
    them, so to change them mid-run build a new ``rprop`` and keep the state.

    The chain is ``negate`` (maximize) -> ``scale_by_rprop`` -> ``negate``, as optax's rprop
    (which clips only the step sizes it changes).

    Args:
        learning_rate: :math:`\gamma \ge 0`, the initial step size (torch's ``lr``; default
            ``1e-2``).
        etas: ``(etaminus, etaplus)``, :math:`0 < \eta_- < 1 < \eta_+` (default ``(0.5, 1.2)``).
        step_sizes: ``(min, max)``, :math:`0 \le \Delta_{\min} \le \Delta_{\max}` (default
            ``(1e-6, 50)``; torch does not check it).
        maximize: ascend the objective instead of descending it.

    Examples:
        >>> import jax, jax.numpy as jnp, optkit
        >>> params = jnp.array([1.0, -2.0])
        >>> tx = optkit.rprop(learning_rate=0.1)
        >>> state = tx.init(params)
        >>> for _ in range(2):
        ...     grads = jax.grad(lambda p: jnp.sum(p**2))(params)
        ...     updates, state = tx.update(grads, state, params)
        ...     params = optkit.apply_updates(params, updates)
        >>> params  # steps of 0.1, then 0.12
        Array([ 0.78, -1.78], dtype=float32)

    References:
        Riedmiller and Braun, `A Direct Adaptive Method for Faster Backpropagation Learning:
        The RPROP Algorithm <https://doi.org/10.1109/ICNN.1993.298623>`_, 1993.
    """
    transform = chain_present(
        maybe_negate(maximize),
        scale_by_rprop(learning_rate=learning_rate, etas=etas, step_sizes=step_sizes),
        negate(),
    )
    return described(
        transform,
        "Rprop",
        elementwise=True,
        learning_rate=learning_rate,
        etas=etas,
        step_sizes=step_sizes,
        maximize=maximize,
    )
