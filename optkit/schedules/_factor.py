r"""Schedules that scale a learning rate by a factor of the count, and how torch chains them.

Most of torch's schedulers scale the optimizer's lr: StepLR, MultiStepLR, ConstantLR, LinearLR,
ExponentialLR, PolynomialLR and MultiplicativeLR multiply the *current* lr by a ratio at every
``step()`` (``lr *= gamma``, ``lr *= f(k) / f(k - 1)``), and the ratios telescope to the closed
form ``initial_lr * f(k)``. LambdaLR and Hugging Face's schedules (LambdaLRs) instead *set* the lr
to ``initial_lr * f(k)``. The difference is invisible for one scheduler but decides what torch's
ChainedScheduler does, since it steps every scheduler on the same lr, one after the other:

- schedulers that multiply compose into the product ``initial_lr * f_1(k) * f_2(k) * ...``;
- a scheduler that sets the lr discards what the schedulers before it in the chain did, and the
  ones after it contribute only their ratio of the current step, ``f_i(k) / f_i(k - 1)``.

Each factory of these schedules returns a :class:`FactorSchedule`, which is a plain function of
the count like every schedule, and also carries its initial lr, its factor and which of the two
kinds it is, so ``schedules.chained_scheduler`` can reproduce torch's chain.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import jax
import jax.numpy as jnp

from optkit._base import Scalar
from optkit.schedules._curves import as_count, as_float

Factor = Callable[[jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True, eq=False)
class FactorSchedule:
    r"""The schedule :math:`\eta_k = \eta_0 f(k)`, with what ``chained_scheduler`` needs to know.

    Called with the count, it is a schedule like any other (elementwise, jittable).

    Attributes:
        learning_rate: :math:`\eta_0`, torch's initial lr (the scheduler's ``base_lrs``).
        factor: :math:`f`, the factor of the count, in the default float dtype.
        torch_name: the torch (or transformers) scheduler it reproduces, for messages.
        sets_lr: ``True`` when torch *sets* the lr to :math:`\eta_0 f(k)` at every step
            (LambdaLR); ``False`` when it multiplies the current lr by the step's ratio.
        ratio: torch's multiplier of the current lr at step :math:`k` (:math:`f(0)` at
            construction), when it is not :math:`f(k) / f(k - 1)`; used for schedules that
            multiply only.
    """

    learning_rate: Scalar
    factor: Factor
    torch_name: str
    sets_lr: bool = False
    ratio: Factor | None = None

    def __call__(self, count: jax.typing.ArrayLike) -> jax.Array:
        return as_float(self.learning_rate) * self.factor(count)

    def step_ratio(self, count: jax.typing.ArrayLike) -> jax.Array:
        """What torch's ``scheduler.step()`` number ``count`` multiplies the current lr by.

        Count 0 is the step torch takes when the scheduler is built: it multiplies by
        :math:`f(0)`. Where :math:`f(k - 1) = 0` (a polynomial or linear decay that has reached
        zero) torch leaves the lr alone, so the ratio is 1.
        """
        if self.ratio is not None:
            return as_float(self.ratio(count))
        count = as_count(count)
        now = self.factor(count)
        before = jnp.where(count > 0, self.factor(jnp.maximum(count - 1, 0)), as_float(1.0))
        reached_zero = before == 0
        return jnp.where(reached_zero, as_float(1.0), now / jnp.where(reached_zero, 1.0, before))
