"""SparseAdam: Adam that updates only the entries whose gradient is present (non-zero)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _numerics, _tree, _validation
from optkit._base import GradientTransformation, Params, Scalar, ScalarOrSchedule, Updates
from optkit._kernel import leaf_kernel
from optkit.optimizers._compose import chain_present, described, maybe_negate
from optkit.transforms.scaling import scale_by_learning_rate_unless_half


class ScaleBySparseAdamState(NamedTuple):
    """Update count, first moment ``mu`` and second moment ``nu``; an entry of the moments
    changes only at updates where its gradient is non-zero."""

    count: jax.Array
    mu: Updates
    nu: Updates

    # Buffers that are never negative: quantize_state stores them with an unsigned map.
    non_negative_fields = ("nu",)


class SparseAdamLeaf(NamedTuple):
    mu: jax.Array
    nu: jax.Array
    update: jax.Array


@leaf_kernel
def _sparse_adam(
    mu, nu, update, *, one_minus_b1, one_minus_b2, eps, correction, step_size
) -> SparseAdamLeaf:
    present = update != 0
    # torch adds (g - m) * (1 - b1) to the old values at the gradient's indices, rounding each
    # op (sub, mul_, add_; pow, sub_, mul_, add_) on 16-bit params.
    rounded = _numerics.rounded
    new_mu = rounded(mu + rounded(rounded(update - mu) * one_minus_b1)).astype(mu.dtype)
    square = rounded(update * update)
    new_nu = rounded(nu + rounded(rounded(square - nu) * one_minus_b2)).astype(nu.dtype)
    # torch's exp_avg_sq.sqrt_().add_(eps), eps rounded to a 16-bit dtype (1e-8 is 0 in float16).
    denominator = rounded(rounded(jnp.sqrt(new_nu)) + _numerics.rounded_scalar(eps))
    if _numerics.storing_half() and step_size is not None:
        # torch's param.add_(-step_size * numer.div_(denom)): two rounded ops before the add.
        step = step_size * rounded(new_mu / denominator)
    else:
        step = new_mu / denominator * correction
    return SparseAdamLeaf(
        mu=jnp.where(present, new_mu, mu),
        nu=jnp.where(present, new_nu, nu),
        update=jnp.where(present, step, 0),
    )


def scale_by_sparse_adam(
    b1: Scalar = 0.9, b2: Scalar = 0.999, eps: Scalar = 1e-8
) -> GradientTransformation:
    r"""Scale updates by Adam's moments, entry by entry, only where the gradient is non-zero.

    .. math::
        M_t &= \{i : g_{t,i} \neq 0\} \\
        m_{t,i} &= m_{t-1,i} + (1 - \beta_1)(g_{t,i} - m_{t-1,i}), \quad
        v_{t,i} = v_{t-1,i} + (1 - \beta_2)(g_{t,i}^2 - v_{t-1,i}) \quad (i \in M_t) \\
        u_{t,i} &= \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t} \cdot
            \frac{m_{t,i}}{\sqrt{v_{t,i}} + \epsilon} \quad (i \in M_t), \qquad
        u_{t,i} = 0,\ m, v \text{ unchanged} \quad (i \notin M_t)

    torch's "masked Adam" for a dense gradient whose exact zeros are absent entries (what
    ``grad.to_sparse()`` drops). ``eps`` is added to :math:`\sqrt{v}` before the bias
    corrections are applied (the "epsilon hat" form, unlike ``scale_by_adam``), and :math:`t`
    counts every update, as torch's per-parameter ``step`` counts every step with a gradient.

    Args:
        b1: first-moment decay in ``[0, 1)``.
        b2: second-moment decay in ``[0, 1)``.
        eps: added to the denominator, outside the square root (``>= 0``).

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_sparse_adam()
        >>> updates, state = tx.update(jnp.array([0.5, 0.0, -2.0]), tx.init(jnp.zeros(3)))
        >>> updates.round(4)  # first step: sign(g) where present
        Array([ 1.,  0., -1.], dtype=float32)
        >>> state.nu  # the absent entry's moments did not move
        Array([0.00025, 0.     , 0.004  ], dtype=float32)
    """
    return _scale_by_sparse_adam(b1, b2, eps, None)


def _scale_by_sparse_adam(
    b1: Scalar, b2: Scalar, eps: Scalar, learning_rate: ScalarOrSchedule | None
) -> GradientTransformation:
    """:func:`scale_by_sparse_adam`; given ``learning_rate``, its float16/bfloat16 leaves' updates
    are the whole step, ``-learning_rate`` included (:func:`scale_by_learning_rate_unless_half`
    follows it)."""
    _validation.hyperparameters(b1=b1, b2=b2, eps=eps)

    def init(params: Params) -> ScaleBySparseAdamState:
        _tree.refuse_complex(
            params, "scale_by_sparse_adam", "torch.optim.SparseAdam refuses complex params too."
        )
        return ScaleBySparseAdamState(
            count=_numerics.zero_count(params),
            mu=_tree.zeros_like(params),
            nu=_tree.zeros_like(params),
        )

    def update(
        updates: Updates,
        state: ScaleBySparseAdamState,
        params: Params | None = None,
        **extra_args: Any,
    ) -> tuple[Updates, ScaleBySparseAdamState]:
        del params, extra_args
        updates = _tree.check_updates(state.mu, updates, "scale_by_sparse_adam")
        count = _numerics.increment(state.count)
        correction = jnp.sqrt(_numerics.bias_correction(b2, count)) / _numerics.bias_correction(
            b1, count
        )
        step_size = None
        if learning_rate is not None:
            lr = _numerics.value_at(learning_rate, state.count, "sparse_adam: learning_rate")
            step_size = -lr * correction
        new = _sparse_adam(
            state.mu,
            state.nu,
            updates,
            one_minus_b1=1.0 - b1,
            one_minus_b2=1.0 - b2,
            eps=eps,
            correction=correction,
            step_size=step_size,
        )
        return new.update, ScaleBySparseAdamState(count=count, mu=new.mu, nu=new.nu)

    return GradientTransformation(init, update)


def sparse_adam(
    learning_rate: ScalarOrSchedule = 1e-3,
    b1: Scalar = 0.9,
    b2: Scalar = 0.999,
    eps: Scalar = 1e-8,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""Masked Adam for sparse gradients. Same math and defaults as ``torch.optim.SparseAdam``.

    .. math::
        M_t &= \{i : g_{t,i} \neq 0\} \quad \text{(the entries present in the gradient)} \\
        m_{t,i} &= \beta_1 m_{t-1,i} + (1 - \beta_1) g_{t,i}, \quad
        v_{t,i} = \beta_2 v_{t-1,i} + (1 - \beta_2) g_{t,i}^2 \quad (i \in M_t) \\
        \theta_{t,i} &= \theta_{t-1,i} - \gamma \frac{\sqrt{1 - \beta_2^t}}{1 - \beta_1^t}
            \frac{m_{t,i}}{\sqrt{v_{t,i}} + \epsilon} \quad (i \in M_t)

    Entries whose gradient is exactly zero are absent: their moments and params do not change.
    torch's SparseAdam takes sparse-layout gradients (``nn.Embedding(sparse=True)``); JAX's
    gradients are dense, so optkit reads a dense gradient's exact zeros as the absent entries,
    which is what torch computes from ``grad.to_sparse()``. An embedding table's rows that a
    batch does not look up have exactly zero gradient, so they keep their moments, where
    :func:`adam` would decay them and move the rows. (A looked-up entry whose gradient is
    exactly 0.0 is present for ``nn.Embedding(sparse=True)`` and absent here.) ``eps`` is
    outside the square root and before the bias corrections, and :math:`t` counts every
    update. optax has no SparseAdam.

    torch rejects ``lr = 0`` and ``eps = 0`` here (its other optimizers accept them); optkit
    accepts both, as everywhere.

    The chain is ``negate`` (maximize) -> ``scale_by_sparse_adam`` -> ``scale_by_learning_rate``.

    Args:
        learning_rate: :math:`\gamma`, a number or a schedule (torch's ``lr``; default ``1e-3``).
        b1: :math:`\beta_1` in ``[0, 1)`` (torch's ``betas[0]``; default 0.9).
        b2: :math:`\beta_2` in ``[0, 1)`` (torch's ``betas[1]``; default 0.999).
        eps: :math:`\epsilon \ge 0` (default ``1e-8``).
        maximize: ascend the objective instead of descending it.

    Examples:
        >>> import jax, jax.numpy as jnp, optkit
        >>> table = jnp.ones((4, 2))  # an embedding table
        >>> tx = optkit.sparse_adam(learning_rate=0.1)
        >>> state = tx.init(table)
        >>> grads = jax.grad(lambda t: jnp.sum(t[jnp.array([0, 2])] ** 2))(table)
        >>> updates, state = tx.update(grads, state, table)
        >>> optkit.apply_updates(table, updates).round(4)  # rows 1 and 3 were not looked up
        Array([[0.9, 0.9],
               [1. , 1. ],
               [0.9, 0.9],
               [1. , 1. ]], dtype=float32)

    References:
        Kingma and Ba, `Adam: A Method for Stochastic Optimization
        <https://arxiv.org/abs/1412.6980>`_, 2014.
    """
    _validation.hyperparameters(learning_rate=learning_rate)
    transform = chain_present(
        maybe_negate(maximize),
        _scale_by_sparse_adam(b1, b2, eps, learning_rate),
        scale_by_learning_rate_unless_half(learning_rate),
    )
    return described(
        transform,
        "SparseAdam",
        elementwise=True,
        learning_rate=learning_rate,
        b1=b1,
        b2=b2,
        eps=eps,
        maximize=maximize,
    )
