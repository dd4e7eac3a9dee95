"""The optimizer registry: one row per public optimizer, read by every test suite.

Like torch's ``optim_db``: a row (an :class:`~tests.support.optimizer_info.OptimizerInfo`) says
how to build the optimizer, which ``torch.optim`` class it reproduces, which hyperparameter
variants switch on every flag (alone and combined), one typical set-up with every state buffer
on, and what the optimizer needs. Parity, validation, properties, dtypes, runtime
hyperparameters, flatten, sharding, checkpoints, Flax and the docs tests all iterate
:data:`REGISTRY`, so adding an optimizer is one row module under ``tests/support/rows/`` (plus
the optimizer's own module and docs page) and its name in :data:`MODULES`; a suite cannot forget
it: ``tests/test_registry.py`` checks that every public optimizer has a row.
"""

from __future__ import annotations

import importlib

from tests.support.optimizer_info import OptimizerInfo

# One module per algorithm, in the order the suites list them.
MODULES = (
    "sgd",
    "adam",
    "adagrad",
    "rmsprop",
    "adadelta",
    "adamax",
    "nadam",
    "radam",
    "adafactor",
    "asgd",
    "rprop",
    "sparse_adam",
    "lbfgs",
    "muon",
)

REGISTRY: tuple[OptimizerInfo, ...] = tuple(
    row
    for module in MODULES
    for row in importlib.import_module(f"tests.support.rows.{module}").ROWS
)
BY_NAME: dict[str, OptimizerInfo] = {info.name: info for info in REGISTRY}
NAMES: list[str] = list(BY_NAME)
if len(BY_NAME) != len(REGISTRY):
    raise ValueError("registry names must be unique")
