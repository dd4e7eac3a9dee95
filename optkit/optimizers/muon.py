"""Muon: momentum orthogonalized by a bfloat16 Newton-Schulz iteration, for 2-D weights."""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from optkit import _numerics, _tree, _validation
from optkit._base import GradientTransformation, Params, Scalar, ScalarOrSchedule, Updates
from optkit._kernel import leaf_kernel
from optkit.optimizers._compose import chain_present, described
from optkit.optimizers._newton_schulz import newton_schulz
from optkit.transforms.scaling import scale_by_learning_rate_unless_half
from optkit.transforms.weight_decay import add_decayed_weights_unless_half

NS_COEFFICIENTS = (3.4445, -4.775, 2.0315)
"""Keller Jordan's quintic Newton-Schulz coefficients ``(a, b, c)``, torch's default."""

ADJUST_LR_FNS = ("original", "match_rms_adamw")

_PATTERN = (
    "Give Muon the 2-D weights and another optimizer the other leaves, e.g. "
    "optkit.partition({'muon': optkit.muon(0.02), 'adamw': optkit.adamw(3e-4)}, "
    "lambda params: jax.tree.map(lambda p: 'muon' if p.ndim == 2 else 'adamw', params))"
    " (optkit.param_groups splits one optimizer's hyperparameters, not two optimizers)."
)


class ScaleByMuonState(NamedTuple):
    """The momentum buffer (one per 2-D param leaf, in the param's dtype)."""

    momentum_buffer: Updates


class MuonLeaf(NamedTuple):
    momentum_buffer: jax.Array
    update: jax.Array


def _buffer(momentum_buffer: jax.Array, update: jax.Array, weight: Any) -> jax.Array:
    """torch's ``buf.lerp_(grad, 1 - momentum)``, rounded to the buffer's dtype."""
    rounded = _numerics.rounded(_numerics.lerp(momentum_buffer, update, weight))
    return rounded.astype(momentum_buffer.dtype)


def _orthogonalized(
    momentum_buffer, update, *, momentum, one_minus_momentum, nesterov, a, b, c, ns_steps, eps
) -> MuonLeaf:
    """The new momentum buffer and torch's bfloat16 Newton-Schulz output (bfloat16)."""
    momentum_buffer = _buffer(momentum_buffer, update, one_minus_momentum)
    orthogonalized = momentum_buffer
    if nesterov:
        # torch's grad.lerp(buf, momentum), rounded to a 16-bit grad's dtype before the iteration.
        orthogonalized = _numerics.rounded(_numerics.lerp(update, momentum_buffer, momentum))
    ortho = newton_schulz(orthogonalized, coefficients=(a, b, c), steps=ns_steps, eps=eps)
    return MuonLeaf(momentum_buffer, ortho)


@leaf_kernel
def _muon(momentum_buffer, update, *, one_minus_momentum, a, b, c, ns_steps, eps) -> MuonLeaf:
    return _orthogonalized(
        momentum_buffer,
        update,
        momentum=None,
        one_minus_momentum=one_minus_momentum,
        nesterov=False,
        a=a,
        b=b,
        c=c,
        ns_steps=ns_steps,
        eps=eps,
    )


@leaf_kernel
def _nesterov_muon(
    momentum_buffer, update, *, momentum, one_minus_momentum, a, b, c, ns_steps, eps
) -> MuonLeaf:
    return _orthogonalized(
        momentum_buffer,
        update,
        momentum=momentum,
        one_minus_momentum=one_minus_momentum,
        nesterov=True,
        a=a,
        b=b,
        c=c,
        ns_steps=ns_steps,
        eps=eps,
    )


class _MuonStepLeaf(NamedTuple):
    momentum_buffer: jax.Array
    update: jax.Array
    param: jax.Array


@leaf_kernel
def _muon_step(
    momentum_buffer,
    update,
    param,
    *,
    momentum,
    one_minus_momentum,
    nesterov,
    a,
    b,
    c,
    ns_steps,
    eps,
    adjust_lr_fn,
    learning_rate,
    shrink,
) -> _MuonStepLeaf:
    """The orthogonalized update times the shape ratio, except on float16/bfloat16 leaves: there
    it is the whole step, learning rate and decoupled decay included, rounded where torch's ops
    round the param: ``param.mul_(1 - lr * wd)`` then ``param.add_(ortho, alpha=-lr * ratio)``
    (returned as the new param minus the old, for ``apply_updates`` to add back exactly)."""
    new = _orthogonalized(
        momentum_buffer,
        update,
        momentum=momentum,
        one_minus_momentum=one_minus_momentum,
        nesterov=nesterov,
        a=a,
        b=b,
        c=c,
        ns_steps=ns_steps,
        eps=eps,
    )
    ratio = lr_ratio(adjust_lr_fn, update.shape)
    if not _numerics.storing_half():
        return _MuonStepLeaf(new.momentum_buffer, new.update.astype(update.dtype) * ratio, param)
    rounded = _numerics.rounded
    stepped = param if shrink is None else rounded(param * shrink)
    # add_ rounds its alpha to the common dtype of param and update: bfloat16 for a bfloat16
    # param, float32 for a float16 one (float16 and bfloat16 promote to float32).
    alpha = -learning_rate * ratio
    if _numerics.storage_dtype() == jnp.dtype(jnp.bfloat16):
        alpha = _numerics.rounded_scalar(alpha)
    stepped = rounded(stepped + alpha * new.update.astype(jnp.float32))
    # An infinite param that torch leaves as it is moves by 0 (inf - inf would be NaN).
    step = jnp.where(stepped == param, 0.0, stepped - param)
    return _MuonStepLeaf(new.momentum_buffer, step, param)


def lr_ratio(adjust_lr_fn: str | None, shape: tuple[int, ...]) -> float:
    """torch's ``_adjust_lr`` factor for a ``(A, B)`` matrix: ``sqrt(max(1, A / B))``
    (``None``, ``"original"``) or ``0.2 * sqrt(max(A, B))`` (``"match_rms_adamw"``)."""
    rows, cols = shape[:2]
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(rows, cols))
    return math.sqrt(max(1, rows / cols))


def _check_matrices(tree: Any, where: str) -> None:
    """Every leaf must be a matrix; the message names the first that is not, and what to do.
    Inside ``optkit.flatten`` (one vector per dtype, not the matrices) it always fails."""
    _tree.require_own_leaves(where)
    for path, leaf in _tree.leaves_with_paths(tree):
        if np.ndim(leaf) != 2:
            raise ValueError(
                f"{where}: Muon orthogonalizes matrices and takes 2-D leaves only, but leaf "
                f"{path!r} has shape {np.shape(leaf)}. {_PATTERN}"
            )


def _coefficients(ns_coefficients: Any) -> tuple[float, float, float]:
    values = tuple(ns_coefficients) if isinstance(ns_coefficients, tuple | list) else ()
    numbers_only = all(
        isinstance(v, numbers.Real | np.floating | np.integer) and not isinstance(v, bool)
        for v in values
    )
    if len(values) != 3 or not numbers_only or not all(math.isfinite(v) for v in values):
        raise ValueError(
            "ns_coefficients must be a tuple of three finite numbers (a, b, c), got "
            f"{ns_coefficients!r}."
        )
    return tuple(float(v) for v in values)  # type: ignore[return-value]


def _adjustment(adjust_lr_fn: Any) -> Callable[[tuple[int, ...]], float]:
    if adjust_lr_fn is not None and adjust_lr_fn not in ADJUST_LR_FNS:
        raise ValueError(
            f"adjust_lr_fn must be None, 'original' or 'match_rms_adamw', got {adjust_lr_fn!r}."
        )
    return lambda shape: lr_ratio(adjust_lr_fn, shape)


def scale_by_muon(
    momentum: Scalar = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: Scalar = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
) -> GradientTransformation:
    r"""Orthogonalize each matrix's momentum with torch's bfloat16 Newton-Schulz iteration.

    .. math::
        B_t &= B_{t-1} + (1 - \mu)(G_t - B_{t-1}), \qquad
        M_t = G_t + \mu (B_t - G_t) \text{ (nesterov) or } B_t \\
        X_0 &= M_t / \max(\|M_t\|_F, \epsilon), \qquad
        X_{k+1} = a X_k + (b A_k + c A_k^2) X_k, \quad A_k = X_k X_k^\top \\
        u_t &= r(A, B)\, X_{n}

    with :math:`n` = ``ns_steps``, the iteration run on :math:`M_t^\top` for a tall matrix, and
    :math:`r(A, B)` the learning-rate ratio of an :math:`A \times B` matrix:
    :math:`\sqrt{\max(1, A/B)}` (``adjust_lr_fn`` ``None`` or ``"original"``) or
    :math:`0.2 \sqrt{\max(A, B)}` (``"match_rms_adamw"``). The momentum buffer is torch's
    ``lerp``, :math:`\mu B_{t-1} + (1 - \mu) G_t`, not the :math:`\mu B_{t-1} + G_t` of torch's
    docstring. The iteration runs in bfloat16 with torch's CPU rounding, bit for bit for
    matrices up to 16**3 multiply-adds per product; see ``optkit.optimizers._newton_schulz``.

    Every leaf must be 2-D (a ``ValueError`` names the first that is not).

    Args:
        momentum: :math:`\mu \ge 0` (default 0.95).
        nesterov: orthogonalize :math:`G_t + \mu (B_t - G_t)` instead of :math:`B_t`.
        ns_coefficients: the iteration's :math:`(a, b, c)` (default ``(3.4445, -4.775,
            2.0315)``).
        eps: :math:`\epsilon \ge 0`, the smallest norm divided by (default ``1e-7``).
        ns_steps: Newton-Schulz iterations, an integer in ``[0, 99]`` (default 5).
        adjust_lr_fn: ``None``/``"original"`` (Keller Jordan's ratio) or ``"match_rms_adamw"``
            (Moonshot's, so AdamW's learning rate and weight decay carry over).

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> tx = optkit.scale_by_muon(momentum=0.0, nesterov=False, ns_steps=0)
        >>> tx.update(jnp.array([[3.0, 4.0]]), tx.init(jnp.zeros((1, 2))))[0]  # G / ||G||
        Array([[0.6015625 , 0.80078125]], dtype=float32)
    """
    init, step = _muon_parts(momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn)

    def update(
        updates: Updates, state: ScaleByMuonState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, ScaleByMuonState]:
        del params, extra_args
        return step(updates, state)

    return GradientTransformation(init, update)


def _muon_parts(
    momentum: Scalar,
    nesterov: bool,
    ns_coefficients: tuple[float, float, float],
    eps: Scalar,
    ns_steps: int,
    adjust_lr_fn: str | None,
) -> tuple[Callable[..., ScaleByMuonState], Callable[..., tuple[Updates, ScaleByMuonState]]]:
    """:func:`scale_by_muon`'s ``init`` and a step ``(updates, state, params=None,
    learning_rate=None, shrink=None)``: given params and the step's learning rate, the updates
    of float16 and bfloat16 leaves are the whole step (:func:`_muon_step`), for
    :func:`muon`'s ``add_decayed_weights_unless_half`` and
    ``scale_by_learning_rate_unless_half`` to leave alone."""
    _validation.hyperparameters(momentum=momentum, eps=eps, ns_steps=ns_steps)
    nesterov = _validation.boolean("nesterov", nesterov)
    a, b, c = _coefficients(ns_coefficients)
    ratio = _adjustment(adjust_lr_fn)
    scalars = {"a": a, "b": b, "c": c, "ns_steps": int(ns_steps), "eps": eps}

    def init(params: Params) -> ScaleByMuonState:
        _check_matrices(params, "scale_by_muon")
        _tree.refuse_complex(
            params,
            "scale_by_muon",
            "torch.optim.Muon refuses complex params too (its Newton-Schulz iteration is "
            "written for real matrices).",
        )
        return ScaleByMuonState(momentum_buffer=_tree.zeros_like(params))

    def step(
        updates: Updates,
        state: ScaleByMuonState,
        params: Params | None = None,
        learning_rate: Any = None,
        shrink: Any = None,
    ) -> tuple[Updates, ScaleByMuonState]:
        _check_matrices(updates, "scale_by_muon")
        updates = _tree.check_updates(
            state.momentum_buffer, updates, "scale_by_muon", "momentum buffer"
        )
        one_minus_momentum = 1.0 - momentum
        if learning_rate is not None and params is not None:
            _tree.check_match(params, updates, "muon", "params", "updates")
            new = _muon_step(
                state.momentum_buffer,
                updates,
                params,
                momentum=momentum if nesterov else None,
                one_minus_momentum=one_minus_momentum,
                nesterov=nesterov,
                adjust_lr_fn=adjust_lr_fn,
                learning_rate=learning_rate,
                shrink=shrink,
                **scalars,
            )
            return new.update, ScaleByMuonState(momentum_buffer=new.momentum_buffer)
        if nesterov:
            new = _nesterov_muon(
                state.momentum_buffer,
                updates,
                momentum=momentum,
                one_minus_momentum=one_minus_momentum,
                **scalars,
            )
        else:
            new = _muon(
                state.momentum_buffer,
                updates,
                one_minus_momentum=one_minus_momentum,
                **scalars,
            )
        scaled = jax.tree.map(lambda u: u * ratio(u.shape), new.update)
        return scaled, ScaleByMuonState(momentum_buffer=new.momentum_buffer)

    return init, step


def muon(
    learning_rate: ScalarOrSchedule = 1e-3,
    weight_decay: Scalar = 0.1,
    momentum: Scalar = 0.95,
    nesterov: bool = True,
    ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
    eps: Scalar = 1e-7,
    ns_steps: int = 5,
    adjust_lr_fn: str | None = None,
) -> GradientTransformation:
    r"""Muon, for 2-D weights. Same math and defaults as ``torch.optim.Muon``.

    .. math::
        B_t &= B_{t-1} + (1 - \mu)(G_t - B_{t-1}), \quad
        M_t = G_t + \mu (B_t - G_t) \text{ (nesterov) or } B_t \\
        O_t &= \mathrm{NS}^{(a,b,c)}_{n}(M_t;\ \epsilon) \quad
            \text{(bfloat16 Newton-Schulz, see } \texttt{scale\_by\_muon}) \\
        \theta_t &= \theta_{t-1} (1 - \gamma \lambda) - \gamma\, r(A, B)\, O_t

    :math:`r(A, B)` adjusts the learning rate to the :math:`A \times B` shape:
    :math:`\sqrt{\max(1, A/B)}` by default and for ``"original"``, :math:`0.2 \sqrt{\max(A, B)}`
    for ``"match_rms_adamw"``. The weight decay is decoupled and uses the unadjusted
    :math:`\gamma`. optax's ``contrib.muon`` differs: a bias-corrected Adam-style momentum, the
    iteration in the params' precision, a shape ratio that reads the matrix as ``(in, out)``
    (:math:`\sqrt{\max(1, B/A)}`), ``eps=1e-8``, no weight decay by default, and an Adam of its
    own for the non-matrix leaves.

    Muon takes 2-D leaves only (a ``ValueError`` names the first other one, also under
    ``optkit.flatten``, whose flat vectors are 1-D). As torch's documentation and the Muon
    authors recommend, give it the hidden layers' weight matrices and train the rest (biases,
    norms, usually embeddings and the output layer) with AdamW, through ``optkit.partition``::

        labels = lambda params: jax.tree.map(lambda p: "muon" if p.ndim == 2 else "adamw", params)
        tx = optkit.partition({"muon": optkit.muon(0.02), "adamw": optkit.adamw(3e-4)}, labels)

    The chain is ``scale_by_muon`` -> ``add_decayed_weights`` -> ``scale_by_learning_rate``;
    on float16 and bfloat16 params the first takes the whole step, rounded as torch's
    ``param.mul_`` and ``param.add_`` round it.

    Args:
        learning_rate: :math:`\gamma`, a number or a schedule (torch's ``lr``; default ``1e-3``).
        weight_decay: decoupled coefficient :math:`\lambda \ge 0` (default 0.1).
        momentum: :math:`\mu \ge 0` (default 0.95).
        nesterov: Nesterov momentum (default ``True``).
        ns_coefficients: the Newton-Schulz :math:`(a, b, c)` (default
            ``(3.4445, -4.775, 2.0315)``).
        eps: :math:`\epsilon \ge 0` in the normalization (default ``1e-7``).
        ns_steps: Newton-Schulz iterations, an integer in ``[0, 99]`` (default 5).
        adjust_lr_fn: ``None`` or ``"original"`` (Keller Jordan's ratio), or
            ``"match_rms_adamw"`` (Moonshot's).

    Examples:
        >>> import jax, jax.numpy as jnp, optkit
        >>> params = {"w": jnp.array([[1.0, 0.0], [0.0, 2.0]]), "b": jnp.ones(2)}
        >>> labels = lambda p: jax.tree.map(lambda x: "muon" if x.ndim == 2 else "adamw", p)
        >>> tx = optkit.partition({"muon": optkit.muon(0.1), "adamw": optkit.adamw(0.1)}, labels)
        >>> grads = {"w": jnp.array([[1.0, 0.0], [0.0, 2.0]]), "b": jnp.ones(2)}
        >>> updates, state = tx.update(grads, tx.init(params), params)
        >>> optkit.apply_updates(params, updates)["w"]
        Array([[0.87828124, 0.        ],
               [0.        , 1.9108593 ]], dtype=float32)

    References:
        Jordan et al., `Muon: An optimizer for hidden layers in neural networks
        <https://kellerjordan.github.io/posts/muon/>`_, 2024; Liu et al., `Muon is Scalable for
        LLM Training <https://arxiv.org/abs/2502.16982>`_, 2025 (``"match_rms_adamw"``).
    """
    _validation.hyperparameters(learning_rate=learning_rate, weight_decay=weight_decay)
    init_muon, step = _muon_parts(momentum, nesterov, ns_coefficients, eps, ns_steps, adjust_lr_fn)
    decays = not _validation.is_static_zero(weight_decay)
    tail = chain_present(
        add_decayed_weights_unless_half(weight_decay) if decays else None,
        scale_by_learning_rate_unless_half(learning_rate),
    )

    def init(params: Params) -> tuple[Any, ...]:
        return (init_muon(params), *tail.init(params))

    def update(
        updates: Updates, state: tuple[Any, ...], params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, tuple[Any, ...]]:
        # The state is the chain's: scale_by_muon's, then the tail's (the learning rate's last).
        lr = learning_rate
        if callable(learning_rate):
            lr = _numerics.value_at(learning_rate, state[-1].count, "muon: learning_rate")
        shrink = 1.0 - lr * weight_decay if decays else None
        updates, muon_state = step(updates, state[0], params, learning_rate=lr, shrink=shrink)
        updates, tail_state = tail.update(updates, tuple(state[1:]), params, **extra_args)
        return updates, (muon_state, *tail_state)

    transform = GradientTransformation(init, update)
    return described(
        transform,
        "Muon",
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        momentum=momentum,
        nesterov=nesterov,
        ns_coefficients=ns_coefficients,
        eps=eps,
        ns_steps=ns_steps,
        adjust_lr_fn=adjust_lr_fn,
    )
