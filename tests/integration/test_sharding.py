"""optkit state under sharding, on 8 simulated CPU devices.

The device count is fixed when JAX starts, so ``sharding_checks.py`` runs each scenario group in a
fresh interpreter with ``--xla_force_host_platform_device_count=8`` and prints what it observed
as JSON; the tests here assert on it. One subprocess per group, shared by the module.

Layouts: ``model_sharded`` (Megatron's column- then row-parallel pair: kernels sharded on one axis,
biases replicated), ``model_sharded_hidden_bias`` (the same with the column-parallel layer's bias
sharded like its output), and ``data_parallel`` (params replicated, batch sharded).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.support.registry import BY_NAME, NAMES, REGISTRY

SCRIPT = Path(__file__).with_name("sharding_checks.py")
REPO = Path(__file__).resolve().parents[2]
DEVICES = 8

# The rows of sharding_checks.OPTIMIZERS (not imported: it sets XLA_FLAGS for its own process).
OPTIMIZERS = (*NAMES, "param_groups", "inject_hyperparams", "training_loop")
# Rows whose math reduces within a leaf (registry ``elementwise=False``): buffers may be their
# param with axes reduced to size 1, and a sharded update all-reduces. The training loop's
# finiteness check and gradient norm reduce over every leaf.
REDUCING = {info.name for info in REGISTRY if not info.elementwise} | {"training_loop"}
PARAMS = {"['l1']['kernel']", "['l1']['bias']", "['l2']['kernel']", "['l2']['bias']"}
# Collectives that move optimizer state between devices; all-reduce is the gradient reduction.
MOVING = {"all-gather", "all-to-all", "collective-permute", "reduce-scatter"}
# Whole-matrix math (Muon's Newton-Schulz) gathers and reduces a sharded matrix by design.
MATRIX_FUNCTIONS = {f"jit({name})" for info in REGISTRY for name in info.matrix_functions}


def outside_matrix_functions(found: list[dict[str, str]]) -> list[dict[str, str]]:
    """The collectives that do not come from inside a registry row's ``matrix_functions``."""
    return [c for c in found if not any(f in c["op_name"] for f in MATRIX_FUNCTIONS)]


def run_group(group: str) -> dict:
    env = {
        **os.environ,
        "XLA_FLAGS": f"--xla_force_host_platform_device_count={DEVICES}",
        "JAX_PLATFORMS": "cpu",
        # The checkout's optkit, as in this process (the script's own folder comes first).
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("JAX_ENABLE_X64", None)
    done = subprocess.run(
        [sys.executable, str(SCRIPT), group],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"sharding_checks.py {group} failed:\n{done.stderr[-5000:]}"
    return json.loads(done.stdout.splitlines()[-1])


@pytest.fixture(scope="module")
def init_results() -> dict:
    return run_group("init")


@pytest.fixture(scope="module")
def step_results() -> dict:
    return run_group("step")


@pytest.fixture(scope="module")
def abstract_results() -> dict:
    return run_group("abstract")


def buffers(records: list[dict]) -> list[dict]:
    return [r for r in records if r["param"] is not None]


def scalars(records: list[dict]) -> list[dict]:
    return [r for r in records if r["param"] is None]


def is_small(shape: list[int]) -> bool:
    """A scalar, or an array whose size does not grow with the params (LBFGS's per-pair
    curvatures, one per history entry)."""
    return len(shape) <= 1 and int(np.prod(shape)) <= 1024


def assert_follows_params(records: list[dict]) -> None:
    """Every buffer is sharded like its param; every scalar (or other small array tied to no
    param) is replicated on all devices; every param has a buffer."""
    wrong = [(r["path"], r["sharding"]) for r in buffers(records) if not r["matches_param"]]
    assert not wrong, wrong
    for r in scalars(records):
        assert is_small(r["shape"]), r
        assert r["replicated"] and r["devices"] == DEVICES, r
    assert {r["param"] for r in buffers(records)} == PARAMS


def assert_same(records: list[dict]) -> None:
    wrong = [(r["path"], r["sharding"], r["reference"]) for r in records if not r["same"]]
    assert not wrong, wrong


def test_checks_cover_every_optimizer(init_results, step_results, abstract_results):
    assert set(init_results["optkit"]) == set(OPTIMIZERS)
    assert set(step_results["optkit"]) == set(OPTIMIZERS)
    assert set(abstract_results["optkit"]) == set(OPTIMIZERS)


# --- jax.jit(tx.init) ------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["model_sharded", "data_parallel"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_jit_init_shards_state_like_params(init_results, name, layout):
    records = init_results["optkit"][name][layout]

    assert_follows_params(records)
    kernels = [r for r in buffers(records) if r["param"].endswith("['kernel']")]
    if layout == "model_sharded" and name in REDUCING:
        # A statistic reduced over a kernel's sharded axis is replicated; its partner, reduced
        # over the other axis, is sharded: every kernel keeps sharded state.
        assert kernels and {r["param"] for r in kernels if not r["replicated"]} == {
            r["param"] for r in kernels
        }
    elif layout == "model_sharded":
        assert kernels and all(not r["replicated"] for r in kernels)
    else:
        assert all(r["replicated"] and r["devices"] == DEVICES for r in records)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_eager_init_shards_state_like_params(init_results, name):
    # Eager init places each buffer from its committed param's sharding, without a program.
    assert_follows_params(init_results["optkit_eager"][name])


def test_optax_jit_init_puts_momentum_on_one_device(init_results):
    # optax 0.2.8 for comparison: jax.jit(optax.sgd(0.1, momentum=0.9).init)(params) builds the
    # momentum with zeros_like, which does not depend on the params' values, so jit prunes them
    # and the buffers land on one device, for sharded and replicated params alike (for a
    # model-sharded network: the whole state on device 0). Eager init keeps the shardings.
    # optkit's buffers keep a data dependency on their param (optkit._tree.full_like).
    for layout in ("model_sharded", "data_parallel"):
        records = buffers(init_results["optax"][layout])
        assert records
        assert all(r["devices"] == 1 for r in records), (layout, records)
    sharded = [r for r in buffers(init_results["optax"]["model_sharded"]) if "kernel" in r["path"]]
    assert not any(r["matches_param"] for r in sharded)
    assert all(r["matches_param"] for r in buffers(init_results["optax_eager"]))


# --- a jitted train step, shardings left to propagation ---------------------------------------


def test_model_sharded_step_moves_no_state(step_results):
    found = outside_matrix_functions(step_results["collectives"]["model_sharded_hidden_bias"])

    # Only the row-parallel layer's partial sums are reduced; nothing is gathered or permuted.
    assert not {c["op"] for c in found} & MOVING, found


def test_replicated_bias_step_moves_nothing_the_model_does_not(step_results):
    # Whatever data movement a replicated hidden bias costs is the model's (plain gradient
    # descent has it too), not the optimizer's.
    found = {
        c["op"] for c in outside_matrix_functions(step_results["collectives"]["model_sharded"])
    }
    baseline = {c["op"] for c in step_results["baseline_collectives"]}

    assert found & MOVING <= baseline & MOVING, step_results["collectives"]["model_sharded"]


def test_data_parallel_step_only_reduces_gradients(step_results):
    ops = [c["op"] for c in step_results["collectives"]["data_parallel"]]

    assert ops and set(ops) == {"all-reduce"}


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_optimizer_update_alone_moves_no_state(step_results, name):
    # tx.update + nothing else, on model-sharded grads, state and params: elementwise math needs
    # no collective; per-leaf norms, row/column means and LBFGS's inner products and loss
    # evaluations all-reduce partial results, but nothing is gathered or moved. Whole-matrix
    # math (Muon's Newton-Schulz) communicates by design, and must be there to check.
    assert step_results["update_collectives_unattributed"] == []
    found = step_results["update_collectives"][name]
    outside = outside_matrix_functions(found)
    if name in REDUCING:
        assert outside and {c["op"] for c in outside} == {"all-reduce"}, found
    else:
        assert outside == [], found
    if name in BY_NAME and BY_NAME[name].matrix_functions:
        assert found, "no collective inside the whole-matrix functions: what is checked?"


@pytest.mark.parametrize("layout", ["model_sharded_hidden_bias", "data_parallel"])
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_keeps_params_and_state_sharded(step_results, name, layout):
    record = step_results["optkit"][name][layout]

    assert_same(record["params_out"])  # compiled.output_shardings
    assert_follows_params(record["state_out"])
    assert_same(record["params_after"])  # the arrays three steps later
    assert_follows_params(record["state_after"])
    if layout == "model_sharded_hidden_bias":
        assert_follows_params(record["update_state_out"])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_step_state_follows_params_where_propagation_moves_them(step_results, name):
    # With the hidden bias replicated, its gradient comes out of the column-parallel layer
    # sharded, and propagation returns the bias sharded too (without an optimizer as well). Each
    # param goes where plain gradient descent sends it, and its state goes with it.
    record = step_results["optkit"][name]["model_sharded"]

    assert_same(record["params_out_vs_baseline"])
    assert_follows_params(record["state_out_vs_params_out"])


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_sharded_steps_agree_across_layouts(step_results, name):
    model = step_results["optkit"][name]["model_sharded_hidden_bias"]["losses"]
    data = step_results["optkit"][name]["data_parallel"]["losses"]

    np.testing.assert_allclose(model, data, rtol=1e-5)
    assert model[-1] < model[0]


def test_first_step_compiles_once_after_jit_init(step_results):
    assert step_results["first_steps"]["optkit jit"] == [1, 0, 0]


def test_first_step_compiles_once_after_eager_init(step_results):
    # Eager init places each buffer with its committed (here sharded) param, but the update count
    # is an uncommitted scalar. The first step's outputs are all committed, so the second call
    # has different input shardings and compiles the step again (optax 0.2.8 does the same).
    assert step_results["first_steps"]["optkit eager"] == [1, 0, 0]


@pytest.mark.parametrize("layout", ["model_sharded_hidden_bias", "data_parallel"])
def test_set_hyperparams_keeps_the_sharding_and_the_compiled_update(step_results, layout):
    # An injected learning rate lives replicated on all devices, like every scalar of the state.
    # set_hyperparams must put the new value there too: an array on one device is a different
    # input sharding, so the jitted update compiled before is compiled again.
    record = step_results["set_hyperparams"][layout]

    assert record["same"], (record["before"], record["after"])
    assert record["compiles"] == 0


# --- abstract init ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_eval_shape_of_a_tree_too_large_to_materialize(abstract_results, name):
    record = abstract_results["optkit"][name]
    leaves = record["eval_shape"]

    for leaf in buffers(leaves):
        if ".accumulator" in leaf["path"] and leaf["param_dtype"] == "bfloat16":
            # Gradient accumulation sums 16-bit gradients in float32.
            assert leaf["dtype"] == "float32", leaf
        else:
            assert leaf["dtype"] == leaf["param_dtype"], leaf
        # The param's shape, after any leading axes (LBFGS's history) ...
        trailing = leaf["shape"][len(leaf["shape"]) - len(leaf["param_shape"]) :]
        if name in REDUCING and trailing != leaf["param_shape"]:
            # ... or a row or column statistic: one axis reduced to size 1.
            pairs = list(zip(trailing, leaf["param_shape"], strict=True))
            assert [s for s, p in pairs if s != p] == [1], leaf
        else:
            assert trailing == leaf["param_shape"], leaf
    for leaf in scalars(leaves):
        # Counts, scalar hyperparameters and (accumulation's) a bool flag.
        assert is_small(leaf["shape"]) and leaf["dtype"] in ("int32", "float32", "bool"), leaf
    assert {leaf["param"] for leaf in buffers(leaves)} == {
        "['embed']['kernel']",
        "['proj']['kernel']",
        "['proj']['bias']",
        "['flat']['kernel']",
        "['head']['kernel']",
    }
    # > 16 GiB described, none of it allocated (> 8 GiB for Adafactor, whose two matrices keep
    # only row and column statistics).
    assert record["state_bytes"] > (2**33 if name in REDUCING else 2**34)
    # Compiled (never run) on that tree, jit(tx.init) shards the state like the params.
    wrong = [r["path"] for r in buffers(record["compiled_shardings"]) if not r["matches_param"]]
    assert not wrong
    assert all(r["devices"] == DEVICES for r in record["compiled_shardings"])


def test_compiled_init_of_a_huge_tree_holds_one_shard_per_device(abstract_results):
    per_device = abstract_results["output_bytes_per_device"]
    shards = abstract_results["shard_bytes_per_device"]
    total = sum(r["state_bytes"] for r in abstract_results["optkit"].values())

    assert per_device is not None
    assert shards <= per_device <= shards + 2**16  # plus the output tuple's bookkeeping
    assert per_device < total / (DEVICES - 1)
    # optax's sgd momentum under jit: the whole state on one device.
    assert (
        abstract_results["optax_sgd_output_bytes_per_device"]
        >= (abstract_results["optax_sgd_state_bytes"])
    )


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_jit_init_with_out_shardings_from_the_abstract_state(abstract_results, name):
    record = abstract_results["optkit"][name]

    assert record["out_shardings_honoured"]
    assert record["out_shardings_same_values"]
    assert_follows_params(record["out_shardings_state"])
