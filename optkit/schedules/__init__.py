"""Learning-rate schedules: pure functions of the 0-based update count.

A schedule ``s`` maps the count :math:`k` to the learning rate of the :math:`k`-th update. Pass it
wherever a learning rate is accepted (``optkit.adam(schedules.cosine_annealing_lr(1e-3, 100))``);
``scale_by_learning_rate`` evaluates it at its own int32 count, under ``jit``.

The torch-named schedules reproduce ``torch.optim.lr_scheduler`` with torch's keyword names:
``s(k)`` equals ``optimizer.param_groups[0]["lr"]`` after ``k`` calls of ``scheduler.step()``,
each made after ``optimizer.step()``. The optimizer's ``lr`` becomes the schedule's first
argument, ``learning_rate``. ``swa_lr`` is ``torch.optim.swa_utils.SWALR``.
``warmup_cosine_decay`` and ``join_schedules`` follow optax.

Values have JAX's default float dtype (float64 under ``jax_enable_x64``) and schedules act
elementwise, so ``s(jnp.arange(n))`` tabulates the first ``n`` values. ``ReduceLROnPlateau``
depends on the monitored loss, not on the count, so it is a transform instead:
``optkit.reduce_lr_on_plateau``. For torch code that calls ``scheduler.step()`` once per epoch,
wrap the schedule in ``per_epoch``.
"""

from optkit.schedules.chained import chained_scheduler
from optkit.schedules.cosine import (
    cosine_annealing_lr,
    cosine_annealing_warm_restarts,
    warmup_cosine_decay,
)
from optkit.schedules.cyclic import cyclic_lr, cyclic_momentum, one_cycle_lr, one_cycle_momentum
from optkit.schedules.decay import (
    constant_lr,
    exponential_lr,
    lambda_lr,
    linear_lr,
    multiplicative_lr,
    multistep_lr,
    polynomial_lr,
    step_lr,
)
from optkit.schedules.epochs import per_epoch
from optkit.schedules.huggingface import get_scheduler
from optkit.schedules.sequence import join_schedules, sequential_lr
from optkit.schedules.swa import swa_lr

__all__ = [
    "chained_scheduler",
    "constant_lr",
    "cosine_annealing_lr",
    "cosine_annealing_warm_restarts",
    "cyclic_lr",
    "cyclic_momentum",
    "exponential_lr",
    "get_scheduler",
    "join_schedules",
    "lambda_lr",
    "linear_lr",
    "multiplicative_lr",
    "multistep_lr",
    "one_cycle_lr",
    "one_cycle_momentum",
    "per_epoch",
    "polynomial_lr",
    "sequential_lr",
    "step_lr",
    "swa_lr",
    "warmup_cosine_decay",
]
