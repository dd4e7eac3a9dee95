"""optkit: composable JAX optimizers with torch.optim's exact math, speaking the optax protocol.

Every optimizer is a short :func:`chain` of primitives; every primitive is a pure
``(init, update)`` pair that jits, shards and checkpoints, and drops into ``optax.chain``,
``flax.training.train_state.TrainState`` and ``flax.nnx.Optimizer``.
"""

from optkit import schedules
from optkit._arguments import refuse_foreign_names as _refuse_foreign_names
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
from optkit.combinators.accumulation import (
    AccumulateGradientsState,
    accumulate_gradients,
    optimizer_stepped,
)
from optkit.combinators.averaging import (
    WeightAveragingState,
    get_averaged_params,
    weight_averaging,
)
from optkit.combinators.flatten import FlattenState, flatten
from optkit.combinators.hyperparams import (
    InjectHyperparamsState,
    get_hyperparams,
    inject_hyperparams,
    set_hyperparams,
)
from optkit.combinators.loss_scaling import (
    GradScalerState,
    SkipNonfiniteState,
    grad_scaler,
    loss_scale,
    skip_nonfinite,
)
from optkit.combinators.masking import (
    MaskedNode,
    MaskedState,
    PartitionState,
    masked,
    partition,
)
from optkit.combinators.param_groups import ParamGroupsState, Selector, param_groups
from optkit.combinators.quantization import QuantizedBuffer, quantize_state
from optkit.interop.torch_state_dict import from_torch_state_dict, to_torch_state_dict
from optkit.optimizers.adadelta import ScaleByAdadeltaState, adadelta, scale_by_adadelta
from optkit.optimizers.adafactor import (
    ScaleByAdafactorState,
    adafactor,
    scale_by_adafactor,
    scale_by_relative_step_size,
)
from optkit.optimizers.adagrad import ScaleByRssState, adagrad, scale_by_rss
from optkit.optimizers.adam import ScaleByAdamState, adam, adamw, scale_by_adam
from optkit.optimizers.adamax import ScaleByAdamaxState, adamax, scale_by_adamax
from optkit.optimizers.asgd import ScaleByAsgdState, asgd, averaged_params, scale_by_asgd
from optkit.optimizers.lbfgs import ScaleByLbfgsState, lbfgs, scale_by_lbfgs
from optkit.optimizers.muon import ScaleByMuonState, muon, scale_by_muon
from optkit.optimizers.nadam import ScaleByNadamState, nadam, scale_by_nadam
from optkit.optimizers.radam import ScaleByRadamState, radam, scale_by_radam
from optkit.optimizers.rmsprop import ScaleByRmsState, rmsprop, scale_by_rms
from optkit.optimizers.rprop import ScaleByRpropState, rprop, scale_by_rprop
from optkit.optimizers.sgd import sgd
from optkit.optimizers.sparse_adam import (
    ScaleBySparseAdamState,
    scale_by_sparse_adam,
    sparse_adam,
)
from optkit.sharding import state_sharding
from optkit.transforms.clipping import clip, clip_by_global_norm, global_norm
from optkit.transforms.momentum import TraceState, trace
from optkit.transforms.plateau import (
    ReduceLROnPlateauSettings,
    ReduceLROnPlateauState,
    reduce_lr_on_plateau,
    step_plateau,
)
from optkit.transforms.scaling import ScaleByScheduleState, negate, scale, scale_by_learning_rate
from optkit.transforms.weight_decay import add_decayed_weights, add_l2_decay

# The torch-named optimizers refuse an argument they do not take (torch's `lr=`, `betas=`, a
# typo) with a TypeError naming the optkit argument to use. Wrapped here, in one place, so the
# optimizer modules define plain functions; the wrappers keep their signatures and docstrings.
_OPTIMIZERS = (
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "asgd",
    "lbfgs",
    "muon",
    "nadam",
    "radam",
    "rmsprop",
    "rprop",
    "sgd",
    "sparse_adam",
)
for _name in _OPTIMIZERS:
    globals()[_name] = _refuse_foreign_names(globals()[_name])
del _name

__version__ = "0.1.0.dev0"

__all__ = [
    "AccumulateGradientsState",
    "EmptyState",
    "FlattenState",
    "GradScalerState",
    "GradientTransformation",
    "InjectHyperparamsState",
    "MaskedNode",
    "MaskedState",
    "OptState",
    "ParamGroupsState",
    "Params",
    "PartitionState",
    "QuantizedBuffer",
    "ReduceLROnPlateauSettings",
    "ReduceLROnPlateauState",
    "Scalar",
    "ScalarOrSchedule",
    "ScaleByAdadeltaState",
    "ScaleByAdafactorState",
    "ScaleByAdamState",
    "ScaleByAdamaxState",
    "ScaleByAsgdState",
    "ScaleByLbfgsState",
    "ScaleByMuonState",
    "ScaleByNadamState",
    "ScaleByRadamState",
    "ScaleByRmsState",
    "ScaleByRpropState",
    "ScaleByRssState",
    "ScaleByScheduleState",
    "ScaleBySparseAdamState",
    "Schedule",
    "Selector",
    "SkipNonfiniteState",
    "TraceState",
    "Updates",
    "WeightAveragingState",
    "accumulate_gradients",
    "adadelta",
    "adafactor",
    "adagrad",
    "adam",
    "adamax",
    "adamw",
    "add_decayed_weights",
    "add_l2_decay",
    "apply_updates",
    "asgd",
    "averaged_params",
    "chain",
    "clip",
    "clip_by_global_norm",
    "flatten",
    "from_torch_state_dict",
    "get_averaged_params",
    "get_hyperparams",
    "global_norm",
    "grad_scaler",
    "identity",
    "inject_hyperparams",
    "lbfgs",
    "loss_scale",
    "masked",
    "muon",
    "nadam",
    "negate",
    "optimizer_stepped",
    "param_groups",
    "partition",
    "quantize_state",
    "radam",
    "reduce_lr_on_plateau",
    "rmsprop",
    "rprop",
    "scale",
    "scale_by_adadelta",
    "scale_by_adafactor",
    "scale_by_adam",
    "scale_by_adamax",
    "scale_by_asgd",
    "scale_by_lbfgs",
    "scale_by_learning_rate",
    "scale_by_muon",
    "scale_by_nadam",
    "scale_by_radam",
    "scale_by_relative_step_size",
    "scale_by_rms",
    "scale_by_rprop",
    "scale_by_rss",
    "scale_by_sparse_adam",
    "schedules",
    "set_hyperparams",
    "sgd",
    "skip_nonfinite",
    "sparse_adam",
    "state_sharding",
    "stateless",
    "step_plateau",
    "to_torch_state_dict",
    "trace",
    "weight_averaging",
]
