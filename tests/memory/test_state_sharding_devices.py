"""ZeRO-1 on 8 simulated CPU devices: placement, per-device bytes, trajectories, orbax.

``state_sharding_devices.py`` runs in a fresh interpreter with 8 CPU devices (the count is fixed
when JAX starts) and prints its observations as JSON; the tests here assert on them. For each
optimizer and layout, 10 float32 steps with the state placed by ``optkit.state_sharding`` are
compared with the same steps with the state placed like the params.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("state_sharding_devices.py")
REPO = Path(__file__).resolve().parents[2]
OPTIMIZERS = (
    "adamw",
    "sgd",
    "adafactor",
    "param_groups",
    "inject_hyperparams",
    "flatten",
    "training_loop",
)
LAYOUTS = ("data", "data_model")


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    }
    env.pop("JAX_ENABLE_X64", None)
    checkpoints = tmp_path_factory.mktemp("zero_checkpoints")
    done = subprocess.run(
        [sys.executable, str(SCRIPT), str(checkpoints)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, f"state_sharding_devices.py failed:\n{done.stderr[-5000:]}"
    return json.loads(done.stdout.splitlines()[-1])


def test_every_optimizer_ran(results):
    assert set(results) == set(OPTIMIZERS)
    assert all(set(results[name]) == set(LAYOUTS) for name in OPTIMIZERS)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", OPTIMIZERS)
def test_partitioned_state_trains_like_the_replicated_state(results, name, layout):
    record = results[name][layout]

    # Elementwise math gives the same bits; a global norm or a flat vector's reductions may sum
    # in another order (observed up to 2e-7).
    assert record["params_error"] <= 1e-6, record["params_error"]
    assert record["state_error"] <= 1e-6, record["state_error"]
    # The step kept the state where state_sharding put it (the out_shardings of init and step).
    assert record["placed_as_asked"]


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_each_device_holds_an_eighth_of_the_state_of_replicated_params(results, name):
    record = results[name]["data"]
    zero, replicated = record["zero"], record["replicated"]
    # Every buffer of this model has a dimension divisible by 8: total / 8, plus the scalars.
    eighth = zero["array_bytes"] // 8 + zero["scalar_bytes"]

    assert zero["array_bytes"] % 8 == 0
    assert set(zero["per_device"].values()) == {eighth}, zero["per_device"]
    assert len(zero["per_device"]) == 8
    # Without ZeRO-1 every device holds all of it.
    assert set(replicated["per_device"].values()) == {
        replicated["array_bytes"] + replicated["scalar_bytes"]
    }


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_model_sharded_state_is_also_split_over_data(results, name):
    record = results[name]["data_model"]
    zero = set(record["zero"]["per_device"].values())
    replicated = set(record["replicated"]["per_device"].values())

    assert len(zero) == 1 and len(replicated) == 1  # balanced over the devices
    assert zero.pop() < replicated.pop()


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", ["adamw", "training_loop"])
def test_partitioned_state_round_trips_through_orbax(results, name, layout):
    assert results[name][layout]["orbax"] == {
        "same_structure": True,
        "same_values": True,
        "same_shardings": True,
    }
