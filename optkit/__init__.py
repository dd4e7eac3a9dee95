"""optkit: composable JAX optimizers with torch.optim's exact math, speaking the optax protocol.

Every optimizer is a short :func:`chain` of primitives; every primitive is a pure
``(init, update)`` pair that jits, shards and checkpoints, and drops into ``optax.chain``,
``flax.training.train_state.TrainState`` and ``flax.nnx.Optimizer``.
"""

from optkit import schedules
from optkit._base import (
    EmptyState,
    GradientTransformation,
    OptState,
    Params,
    Scalar,
    ScalarOrSchedule,
    Schedule,
    Updates,
    apply_updates,
    chain,
    identity,
    stateless,
)
from optkit.combinators.flatten import FlattenState, flatten
from optkit.combinators.hyperparams import (
    InjectHyperparamsState,
    get_hyperparams,
    inject_hyperparams,
    set_hyperparams,
)
from optkit.combinators.masking import (
    MaskedNode,
    MaskedState,
    PartitionState,
    masked,
    partition,
)
from optkit.combinators.param_groups import ParamGroupsState, Selector, param_groups
from optkit.optimizers.adagrad import ScaleByRssState, adagrad, scale_by_rss
from optkit.optimizers.adam import ScaleByAdamState, adam, adamw, scale_by_adam
from optkit.optimizers.muon import ScaleByMuonState, muon, scale_by_muon
from optkit.optimizers.rmsprop import ScaleByRmsState, rmsprop, scale_by_rms
from optkit.optimizers.sgd import sgd
from optkit.transforms.clipping import clip, clip_by_global_norm, global_norm
from optkit.transforms.momentum import TraceState, trace
from optkit.transforms.plateau import ReduceLROnPlateauState, reduce_lr_on_plateau
from optkit.transforms.scaling import ScaleByScheduleState, negate, scale, scale_by_learning_rate
from optkit.transforms.weight_decay import add_decayed_weights, add_l2_decay

__version__ = "0.1.0.dev0"

__all__ = [
    "EmptyState",
    "FlattenState",
    "GradientTransformation",
    "InjectHyperparamsState",
    "MaskedNode",
    "MaskedState",
    "OptState",
    "ParamGroupsState",
    "Params",
    "PartitionState",
    "ReduceLROnPlateauState",
    "Scalar",
    "ScalarOrSchedule",
    "ScaleByAdamState",
    "ScaleByMuonState",
    "ScaleByRmsState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "Schedule",
    "Selector",
    "TraceState",
    "Updates",
    "adagrad",
    "adam",
    "adamw",
    "add_decayed_weights",
    "add_l2_decay",
    "apply_updates",
    "chain",
    "clip",
    "clip_by_global_norm",
    "flatten",
    "get_hyperparams",
    "global_norm",
    "identity",
    "inject_hyperparams",
    "masked",
    "muon",
    "negate",
    "param_groups",
    "partition",
    "reduce_lr_on_plateau",
    "rmsprop",
    "scale",
    "scale_by_adam",
    "scale_by_learning_rate",
    "scale_by_muon",
    "scale_by_rms",
    "scale_by_rss",
    "schedules",
    "set_hyperparams",
    "sgd",
    "stateless",
    "trace",
]
