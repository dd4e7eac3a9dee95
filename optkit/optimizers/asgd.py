"""ASGD: stochastic gradient descent with a decaying step size and a running average of the
iterates (Polyak-Ruppert averaging)."""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from optkit import _numerics, _tree, _validation
from optkit._base import (
    GradientTransformation,
    OptState,
    Params,
    Scalar,
    ScalarOrSchedule,
    Updates,
    require_params,
)
from optkit._kernel import leaf_kernel
from optkit.optimizers._compose import chain_present, described, maybe_l2_decay, maybe_negate

# torch keeps eta and mu as tensors of ``_get_scalar_dtype()``: float32 under torch's default
# dtype, whatever the params' dtype. Their float32 rounding enters every step.
SCALAR_DTYPE = jnp.float32


class ScaleByAsgdState(NamedTuple):
    """ASGD's update count; the step size ``eta`` and averaging weight ``mu`` that the next update
    uses (float32 scalars, as torch keeps them, whatever the params' dtype); and ``ax``, the
    averaged params (torch's ``state[p]["ax"]``), shaped like the params. Read ``ax`` with
    :func:`averaged_params`."""

    count: jax.Array
    eta: jax.Array
    mu: jax.Array
    ax: Params


class AsgdLeaf(NamedTuple):
    ax: jax.Array
    update: jax.Array


@leaf_kernel
def _asgd(ax, update, param, *, decay, eta, mu, average) -> AsgdLeaf:
    # torch: p.mul_(1 - lambd * eta), then p.add_(g, alpha=-eta), each rounded to p's dtype
    # (a 16-bit p's add_ rounds its alpha first).
    rounded = _numerics.rounded
    new_param = rounded(param * decay).astype(param.dtype)
    new_param = rounded(new_param - _numerics.rounded_scalar(eta) * update).astype(param.dtype)
    # torch's ax.add_(p.sub(ax).mul_(mu)), each op rounded; ``average`` is mu != 1 decided in
    # float32 by the caller: a bfloat16 leaf would round mu.
    moved = rounded(ax + rounded(rounded(new_param - ax) * mu))
    ax = jnp.where(average, moved, new_param)
    return AsgdLeaf(ax=ax, update=new_param - param)


def scale_by_asgd(
    learning_rate: ScalarOrSchedule = 1e-2,
    lambd: Scalar = 1e-4,
    alpha: Scalar = 0.75,
    t0: Scalar = 1e6,
) -> GradientTransformation:
    r"""ASGD's step: a decaying step size, a shrink of the params, and the averaged params.

    .. math::
        \theta_t &= \theta_{t-1} (1 - \lambda \eta_t) - \eta_t g_t \\
        \bar\theta_t &= \theta_t \text{ if } \mu_t = 1, \text{ else }
            \bar\theta_{t-1} + \mu_t (\theta_t - \bar\theta_{t-1}) \\
        \eta_{t+1} &= \gamma_t / (1 + \lambda \gamma_t t)^\alpha, \qquad
        \mu_{t+1} = 1 / \max(1, t - t_0)

    with :math:`\eta_1 = \gamma_0` and :math:`\mu_1 = 1`. The update is
    :math:`\theta_t - \theta_{t-1}`: this transform reads the params and must end its chain
    (``apply_updates`` then gives torch's :math:`\theta_t`). The learning rate enters the step
    size nonlinearly, so the transform takes it rather than a ``scale_by_learning_rate`` after
    it: the learning rate :math:`\gamma_t` of update :math:`t` (a schedule's value at count
    :math:`t - 1`, or an injected value) sets :math:`\eta_{t+1}`, so a change takes effect from
    the next update on, as a change to torch's ``param_groups[0]["lr"]`` does. The first step
    size is the learning rate when the state is built (torch: at its first step).
    :math:`\eta` and :math:`\mu` are float32 scalars computed in double and rounded, and
    :math:`\mu_t \neq 1` is decided on the float32 value, as torch does with ``mu.item()``.

    Args:
        learning_rate: :math:`\gamma \ge 0`, a number or a schedule of the 0-based count.
        lambd: :math:`\lambda \ge 0`, the decay term (torch's name).
        alpha: :math:`\alpha` in ``[0, 1]``, the power of the step-size decay.
        t0: :math:`t_0 \ge 0`, the update count after which averaging starts.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_asgd(learning_rate=0.5, lambd=0.0)
        >>> params = jnp.array([1.0, -2.0])
        >>> tx.update(jnp.array([1.0, 1.0]), tx.init(params), params)[0]
        Array([-0.5, -0.5], dtype=float32)
    """
    _validation.hyperparameters(learning_rate=learning_rate, lambd=lambd, alpha=alpha, t0=t0)

    def init(params: Params) -> ScaleByAsgdState:
        first = _numerics.value_at(learning_rate, _numerics.zero_count(), "scale_by_asgd")
        scalars = {
            "eta": jnp.asarray(first).astype(SCALAR_DTYPE),
            "mu": jnp.ones([], SCALAR_DTYPE),
        }
        scalars = _tree.place_scalars(scalars, params)
        return ScaleByAsgdState(
            count=_numerics.zero_count(params), ax=_tree.zeros_like(params), **scalars
        )

    def update(
        updates: Updates, state: ScaleByAsgdState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, ScaleByAsgdState]:
        del extra_args
        params = require_params(params, "scale_by_asgd")
        updates = _tree.check_updates(state.ax, updates, "scale_by_asgd")
        _tree.check_match(state.ax, params, "scale_by_asgd", "optimizer state", "params")
        eta = _numerics.as_double(state.eta)  # torch reads eta.item()
        new = _asgd(
            state.ax,
            updates,
            params,
            decay=1 - lambd * eta,
            eta=eta,
            mu=state.mu,
            average=state.mu != 1,
        )
        # torch's end of step, in Python double: the next eta and mu from this step's values.
        lr = _numerics.as_double(_numerics.value_at(learning_rate, state.count, "scale_by_asgd"))
        count = _numerics.increment(state.count)
        step = _numerics.as_double(count)
        next_eta = lr / (1 + lambd * lr * step) ** alpha
        next_mu = 1 / jnp.maximum(1, step - t0)
        return new.update, ScaleByAsgdState(
            count=count,
            eta=next_eta.astype(SCALAR_DTYPE),
            mu=next_mu.astype(SCALAR_DTYPE),
            ax=new.ax,
        )

    return GradientTransformation(init, update)


def asgd(
    learning_rate: ScalarOrSchedule = 1e-2,
    lambd: Scalar = 1e-4,
    alpha: Scalar = 0.75,
    t0: Scalar = 1e6,
    weight_decay: Scalar = 0.0,
    *,
    maximize: bool = False,
) -> GradientTransformation:
    r"""Averaged stochastic gradient descent. Same math and defaults as ``torch.optim.ASGD``.

    .. math::
        g_t &\leftarrow \nabla_\theta f_t(\theta_{t-1}) + w \theta_{t-1} \\
        \theta_t &= \theta_{t-1} (1 - \lambda \eta_t) - \eta_t g_t \\
        \bar\theta_t &= \bar\theta_{t-1} + \mu_t (\theta_t - \bar\theta_{t-1})
            \quad (\bar\theta_t = \theta_t \text{ while } \mu_t = 1) \\
        \eta_{t+1} &= \gamma / (1 + \lambda \gamma t)^\alpha, \quad
        \mu_{t+1} = 1 / \max(1, t - t_0), \quad \eta_1 = \gamma,\ \mu_1 = 1

    The params follow SGD with the decaying step size :math:`\eta_t`; the averaged params
    :math:`\bar\theta_t` (torch's ``ax``), the mean of the iterates from update :math:`t_0 + 2`
    on (for an integer :math:`t_0`), are kept in the state and change nothing in the updates:
    read them with :func:`averaged_params`, e.g. to evaluate the model. With the default
    ``t0=1e6`` they are a copy of the params for the first million updates. A changed learning
    rate (schedule or ``set_hyperparams``) sets :math:`\eta` from the next update on, as in
    torch. optax has no ASGD.

    The chain is ``negate`` (maximize) -> ``add_l2_decay`` -> ``scale_by_asgd``, which ends the
    chain: it takes the learning rate and the params itself.

    Args:
        learning_rate: :math:`\gamma`, a number or a schedule (torch's ``lr``; default ``1e-2``).
        lambd: :math:`\lambda \ge 0`, the decay term (default ``1e-4``).
        alpha: :math:`\alpha` in ``[0, 1]``, the power of the step-size decay (default 0.75).
            torch does not check it; above 1 the step sizes sum to a finite distance.
        t0: :math:`t_0 \ge 0`, the update count after which averaging starts (default ``1e6``).
        weight_decay: L2 coefficient :math:`w \ge 0`, added to the gradient (default 0).
        maximize: ascend the objective instead of descending it.

    Examples:
        >>> import jax, jax.numpy as jnp, optkit
        >>> params = jnp.array([1.0, -2.0])
        >>> tx = optkit.asgd(learning_rate=0.1, t0=0.0)
        >>> state = tx.init(params)
        >>> for _ in range(3):
        ...     grads = jax.grad(lambda p: jnp.sum(p**2))(params)
        ...     updates, state = tx.update(grads, state, params)
        ...     params = optkit.apply_updates(params, updates)
        >>> params
        Array([ 0.51198363, -1.0239673 ], dtype=float32)
        >>> optkit.averaged_params(state)  # the mean of the 2nd and 3rd iterates
        Array([ 0.5759844, -1.1519688], dtype=float32)

    References:
        Polyak and Juditsky, `Acceleration of Stochastic Approximation by Averaging
        <https://doi.org/10.1137/0330046>`_, 1992; Bottou, `Stochastic Gradient Descent Tricks
        <https://leon.bottou.org/publications/pdf/tricks-2012.pdf>`_, 2012 (the step size).
    """
    _validation.hyperparameters(learning_rate=learning_rate, weight_decay=weight_decay)
    transform = chain_present(
        maybe_negate(maximize),
        maybe_l2_decay(weight_decay),
        scale_by_asgd(learning_rate=learning_rate, lambd=lambd, alpha=alpha, t0=t0),
    )
    return described(
        transform,
        "ASGD",
        elementwise=True,
        learning_rate=learning_rate,
        lambd=lambd,
        alpha=alpha,
        t0=t0,
        weight_decay=weight_decay,
        maximize=maximize,
    )


def averaged_params(state: OptState) -> Params:
    """The averaged params ``ax`` of the ASGD optimizer in ``state``.

    torch's ``optimizer.state[p]["ax"]``, as a tree shaped like the params: the state may be an
    :func:`asgd` or :func:`scale_by_asgd` state, or hold one (a chain, ``inject_hyperparams``).
    Evaluate with these params; keep training with the others. Under ``optkit.flatten`` the
    average is stored flat, one vector per dtype, as the rest of the state.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.asgd(learning_rate=0.1, lambd=0.0)
        >>> params = {"w": jnp.ones(2)}
        >>> state = tx.init(params)
        >>> updates, state = tx.update({"w": jnp.ones(2)}, state, params)
        >>> optkit.averaged_params(state)  # averaging has not started: a copy of the params
        {'w': Array([0.9, 0.9], dtype=float32)}

    Raises:
        ValueError: if ``state`` holds no ASGD state, or several (param groups: pass one
            group's state, ``state.groups[i]``).
    """
    asgd_state = _tree.only_state(
        state,
        ScaleByAsgdState,
        where="averaged_params",
        what="ASGD",
        if_none="build the optimizer with optkit.asgd or optkit.scale_by_asgd",
        if_several=" (param groups?): pass one group's state, state.groups[i]",
    )
    return asgd_state.ax
