"""A state_dict that does not fit the optimizer or the params is an error naming what differs.

Runs without torch: the state_dicts are torch's, stored as NumPy arrays in the golden file
(``tests/interop/generate_golden.py``), edited per case. The export errors are raised before
torch is imported.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from tests.interop.generate_golden import load_golden
from tests.parity import problem

LEAVES = list(problem.STANDARD.leaf_shapes)  # scalar, vector, matrix, tensor: ids 0 to 3
PARAMS = {name: jnp.asarray(v) for name, v in problem.STANDARD.initial_params(np.float64).items()}
GOLDEN = load_golden()


def adam_dict() -> dict[str, Any]:
    return copy.deepcopy(GOLDEN.state_dicts["adam"])


def _two_groups(state_dict: dict) -> dict:
    group = state_dict["param_groups"][0]
    state_dict["param_groups"] = [{**group, "params": [0, 1]}, {**group, "params": [2, 3]}]
    return state_dict


ADAM = optkit.adam(learning_rate=1e-2, b2=0.99, weight_decay=1e-4, amsgrad=True)  # the golden's
Case = tuple[Callable[[], Any], Callable[[], dict], dict[str, Any], type, str]
CASES: dict[str, Case] = {
    "different_steps": (
        lambda: ADAM,
        lambda: _set_state(adam_dict(), 2, "step", np.float32(6)),
        {},
        ValueError,
        r"parameter 'matrix' \(torch id 2\) is at step 6, but 'scalar' \(id 0\)",
    ),
    "partial_state": (
        lambda: ADAM,
        lambda: _drop_state(adam_dict(), 1),
        {},
        ValueError,
        r"parameter 'vector' \(torch id 1\) has no state in the state_dict, but 'scalar'",
    ),
    "mismatched_size": (
        lambda: ADAM,
        lambda: _set_state(adam_dict(), 2, "exp_avg", np.zeros((4, 3))),
        {},
        ValueError,
        r"parameter 'matrix' \(torch id 2\): 'exp_avg' has shape \(4, 3\) in the state_dict, "
        r"but its optkit leaf has shape \(3, 4\) \(transposed: pass layouts=\{'matrix'",
    ),
    "missing_parameter": (
        lambda: ADAM,
        lambda: _drop_parameter(adam_dict(), 3),
        {},
        ValueError,
        r"'tensor' of param_paths are missing from the state_dict",
    ),
    "parameter_not_in_param_paths": (
        lambda: ADAM,
        adam_dict,
        {"params": {k: v for k, v in PARAMS.items() if k != "tensor"}, "param_paths": LEAVES[:3]},
        ValueError,
        r"the state_dict has parameter 3, but param_paths lists 3 parameters",
    ),
    "unknown_path": (
        lambda: ADAM,
        adam_dict,
        {"param_paths": [*LEAVES[:3], "tensr"]},
        ValueError,
        r"param_paths\[3\] is 'tensr', which is not a leaf of params",
    ),
    "leaf_not_listed": (
        lambda: ADAM,
        adam_dict,
        {"param_paths": LEAVES[:3]},
        ValueError,
        r"params has leaves that param_paths does not list: 'tensor'",
    ),
    "duplicate_path": (
        lambda: ADAM,
        adam_dict,
        {"param_paths": [*LEAVES[:3], "scalar"]},
        ValueError,
        r"param_paths lists 'scalar' twice",
    ),
    "hyperparameter": (
        lambda: optkit.adam(learning_rate=1e-2, weight_decay=1e-4, amsgrad=True),
        adam_dict,
        {},
        ValueError,
        r"param group 0: betas is \(0.9, 0.99\) in the state_dict but \(0.9, 0.999\) in tx",
    ),
    "flag": (
        lambda: optkit.adam(learning_rate=1e-2, b2=0.99, weight_decay=1e-4),
        adam_dict,
        {},
        ValueError,
        r"amsgrad is True in the state_dict but False in tx",
    ),
    "other_class": (
        lambda: ADAM,
        lambda: copy.deepcopy(GOLDEN.state_dicts["sgd"]),
        {},
        ValueError,
        r"the state_dict has no 'betas': is it from torch.optim.Adam",
    ),
    "group_count": (
        lambda: ADAM,
        lambda: _two_groups(adam_dict()),
        {},
        ValueError,
        r"the state_dict has 2 param groups, tx has 1. Build tx with optkit.param_groups",
    ),
    "group_members": (
        lambda: optkit.param_groups(
            optkit.adam,
            [{"params": ["scalar", "matrix"]}, {"params": ["vector", "tensor"]}],
            learning_rate=1e-2,
            b2=0.99,
            weight_decay=1e-4,
            amsgrad=True,
        ),
        lambda: _two_groups(adam_dict()),
        {},
        ValueError,
        r"parameter 'matrix' is in torch's param group 1 but in tx's group 0",
    ),
    "step_given": (lambda: ADAM, adam_dict, {"step": 3}, ValueError, r"step=3, but .* step is 7"),
    "unknown_key": (
        lambda: ADAM,
        lambda: _set_state(adam_dict(), 0, "momentum_buffer", np.zeros(())),
        {},
        ValueError,
        r"parameter 'scalar' has 'momentum_buffer' in the state_dict",
    ),
    "lbfgs": (optkit.lbfgs, adam_dict, {}, ValueError, r"torch.optim.LBFGS keeps one flat record"),
    "not_described": (
        lambda: optkit.chain(optkit.clip(1.0), ADAM),
        adam_dict,
        {},
        TypeError,
        r"tx does not say which torch optimizer it is",
    ),
    "not_a_state_dict": (
        lambda: ADAM,
        lambda: {"model": {}, "optimizer": adam_dict()},
        {},
        ValueError,
        r"expected a torch optimizer's state_dict\(\).*pass its optimizer entry",
    ),
    "bad_layout": (
        lambda: ADAM,
        adam_dict,
        {"layouts": {"matrix": "transposed"}},
        TypeError,
        r"layouts\['matrix'\] must be 'transpose' or a pair of functions",
    ),
    "factored_layout": (
        lambda: optkit.adafactor(learning_rate=0.1, eps=(None, 1e-2), weight_decay=1e-4),
        lambda: copy.deepcopy(GOLDEN.state_dicts["adafactor"]),
        {"layouts": {"matrix": (np.asarray, np.asarray)}},
        ValueError,
        r"only 'transpose' of a 2-D parameter converts row and column statistics",
    ),
}


def _set_state(state_dict: dict, index: int, key: str, value: Any) -> dict:
    state_dict["state"][index][key] = value
    return state_dict


def _drop_state(state_dict: dict, index: int) -> dict:
    del state_dict["state"][index]
    return state_dict


def _drop_parameter(state_dict: dict, index: int) -> dict:
    state_dict["param_groups"][0]["params"].remove(index)
    return _drop_state(state_dict, index)


@pytest.mark.parametrize("case", CASES.values(), ids=CASES)
def test_import_error_names_what_differs(case):
    make_tx, make_state_dict, overrides, error, message = case
    arguments = {"params": PARAMS, "param_paths": LEAVES, **overrides}
    with pytest.raises(error, match=message):
        optkit.from_torch_state_dict(
            make_tx(),
            arguments.pop("params"),
            make_state_dict(),
            arguments.pop("param_paths"),
            **arguments,
        )


def test_golden_adam_dict_fits_the_adam_used_here():
    optkit.from_torch_state_dict(ADAM, PARAMS, adam_dict(), LEAVES)  # the cases' baseline


@pytest.mark.parametrize(
    ("tx", "message"),
    [
        (optkit.lbfgs(), r"torch.optim.LBFGS keeps one flat record"),
        (
            optkit.adamw(mask={"scalar": False, "vector": True, "matrix": True, "tensor": True}),
            "mask",
        ),
        (optkit.flatten(optkit.adam()), "does not say which torch optimizer"),
    ],
    ids=["lbfgs", "adamw_mask", "flatten"],
)
def test_export_error_is_raised_before_torch_is_needed(tx, message):
    with pytest.raises((ValueError, TypeError), match=message):
        optkit.to_torch_state_dict(tx, tx.init(PARAMS), PARAMS, LEAVES)


def test_without_torch_a_file_or_an_export_says_torch_is_needed(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now fails
    with pytest.raises(ImportError, match="needs torch"):
        optkit.from_torch_state_dict(ADAM, PARAMS, tmp_path / "optimizer.pt", LEAVES)
    with pytest.raises(ImportError, match="needs torch"):
        optkit.to_torch_state_dict(ADAM, ADAM.init(PARAMS), PARAMS, LEAVES)
    optkit.from_torch_state_dict(ADAM, PARAMS, adam_dict(), LEAVES)  # a dict in memory: fine
