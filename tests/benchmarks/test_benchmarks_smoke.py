"""Smoke test of the benchmark harness: a tiny run, in-process, writes the documented outputs.

No timing is asserted (the numbers of a tiny run on a shared machine mean nothing); what is
checked is that every measurement lands in results.json with the documented schema, that the
markdown and PNG are produced, that the compile-time guard records what it skips, and that each
optkit/optax pair really computes the same update.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("optax")
pytest.importorskip("psutil")
pytest.importorskip("matplotlib")

from benchmarks import bench, guard, measure, report, run
from benchmarks.pairs import APPLY_UPDATES, LIBRARIES, OPTKIT_PATHS, PAIRS
from benchmarks.workloads import many_leaves

TINY = [
    "--quick",
    "--workloads=leaves,transformer",
    "--optimizers=sgd,adamw",
    "--leaf-counts=4",
    "--leaf-size=16",
    "--layers=1",
    "--width=8",
    "--vocab=16",
    "--seq-len=4",
    "--samples=2",
    "--rounds=2",
    "--warmup=2",
    "--compile-repeats=1",
    "--min-sample-seconds=0",
]

LIBRARY_KEYS = {
    "state",
    "lower_s",
    "compile_s",
    "lower",
    "compile",
    "lower_plus_compile_median_s",
    "init_lower_s",
    "init_compile_s",
    "program",
    "xla_memory",
    "warmup_s",
    "memory",
    "steps_per_sample",
    "samples_s",
    "step",
    "bandwidth_bytes_per_s",
    "roofline_ratio_flat",
    "roofline_ratio_tree",
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    return out, run.main([*TINY, f"--out={out}"])


def test_writes_json_markdown_and_png(tiny_run):
    out, results = tiny_run
    on_disk = json.loads((out / "results.json").read_text())
    assert on_disk["schema_version"] == run.SCHEMA_VERSION
    assert on_disk["measurements"] == json.loads(json.dumps(results["measurements"]))
    assert (out / "results.png").read_bytes().startswith(b"\x89PNG")
    markdown = (out / "results.md").read_text()
    assert (
        "| optimizer | metric | optkit | optkit.flatten | optax | optkit/optax "
        "| optkit.flatten/optax |" in markdown
    )
    for workload in results["workloads"]:
        assert f"### {workload['name']}" in markdown
    assert "| floor (`p - lr * g`) lower+compile, s |" in markdown


def test_machine_and_workloads(tiny_run):
    _, results = tiny_run
    machine = results["machine"]
    for key in ("date", "command", "cpu_model", "cpu_cores_logical", "ram_bytes", "device_kind"):
        assert machine[key], key
    assert set(machine["versions"]) == {"jax", "jaxlib", "optax", "optkit"}
    leaves = [workload["num_leaves"] for workload in results["workloads"]]
    assert leaves == sorted(leaves), "workloads run fewest leaves first"
    assert [w["family"] for w in results["workloads"]] == ["leaves", "transformer"]


def test_every_measurement_has_the_schema(tiny_run):
    _, results = tiny_run
    entries = results["measurements"]
    assert len(entries) == len(results["workloads"]) * 2
    for entry in entries:
        assert entry["status"] == "ok", entry.get("reason")
        assert set(entry["libraries"]) == set(LIBRARIES)
        for record in entry["libraries"].values():
            assert set(record) >= LIBRARY_KEYS
            assert len(record["lower_s"]) == len(record["compile_s"]) == 1
            assert len(record["samples_s"]) == 2
            assert record["step"]["median"] > 0
            assert record["bandwidth_bytes_per_s"] > 0
            assert record["program"]["stablehlo_lines"] > 0
            moments = {"sgd": 1, "adamw": 2}[entry["optimizer"]]
            assert record["state"]["bytes_per_param"] >= 4 * moments
        floor = entry[bench.FLOOR]
        assert floor["lower"]["n"] == floor["compile"]["n"] == 1
        optax_total = entry["libraries"]["optax"]["lower_plus_compile_median_s"]
        assert floor["over_optax"] == pytest.approx(
            floor["lower_plus_compile_median_s"] / optax_total
        )
        assert floor["over_optax"] > 0
        assert set(entry["ratios"]) == set(OPTKIT_PATHS)
        for path_ratios in entry["ratios"].values():
            assert set(path_ratios) == set(bench.RATIO_FIELDS)
            assert path_ratios["lower_plus_compile"] > 0 and path_ratios["step"] > 0
    for copies in results["copies"]:
        for kind in ("flat", "tree"):
            assert copies[kind]["status"] == "ok"
            assert copies[kind]["bandwidth_bytes_per_s"] > 0


def test_compile_guard_skips_and_says_why(tiny_run):
    _, results = tiny_run
    args = run.parse_args([*TINY, "--max-compile-seconds=5"])
    session = bench.Bench(args)
    for lib in LIBRARIES:
        session.history[(lib, "sgd")] = [(10, 0.5), (100, 2.0)]
    # 1000 leaves extrapolate to >= 20 s: skipped before anything is compiled or allocated.
    workload = many_leaves(1000, 8)
    entry = session.pair(workload, PAIRS["sgd"], LIBRARIES, inputs=None, copies={})
    assert entry["status"] == "skipped"
    assert "predicted" in entry["reason"] and "--max-compile-seconds 5" in entry["reason"]
    assert entry["libraries"]["optax"]["state"]["bytes_per_param"] == pytest.approx(4.0)
    results = {
        **results,
        "workloads": [*results["workloads"], workload.summary()],
        "measurements": [*results["measurements"], entry],
    }
    markdown = report.render_markdown(results)
    assert "| leaves-1000x8 | sgd | skipped |" in markdown
    assert "| sgd | skipped: over --max-compile-seconds 5" in markdown


def test_prediction_follows_the_trend():
    assert guard.predict_seconds([(100, 1.0)], 1000) is None
    linear = guard.predict_seconds([(100, 1.0), (1000, 10.0)], 2000)
    assert linear.seconds == pytest.approx(20.0)
    quadratic = guard.predict_seconds([(100, 1.0), (1000, 100.0)], 2000)
    assert quadratic.seconds == pytest.approx(400.0)
    # Fixed costs flatten small trees; extrapolation never assumes sub-linear growth.
    flat = guard.predict_seconds([(1, 1.0), (10, 1.5)], 100)
    assert flat.seconds == pytest.approx(15.0)
    assert guard.predict_seconds([(10, 2.0), (100, 3.0)], 10).seconds == 2.0


@pytest.mark.parametrize("name", sorted(PAIRS))
def test_pairs_compute_the_same_update(name):
    pair = PAIRS[name]
    rng = np.random.default_rng(0)
    start = {
        "w": jnp.asarray(rng.standard_normal((3, 4)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal(4), jnp.float32),
    }
    target = jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape), jnp.float32), start)

    def train(lib):
        tx = pair.factory(lib)()
        params, state = start, tx.init(start)
        for _ in range(4):
            grads = jax.tree.map(lambda p, x: p - x, params, target)
            updates, state = tx.update(grads, state, params)
            params = APPLY_UPDATES[lib](params, updates)
        return params

    reference = jax.jit(train, static_argnums=0)("optax")
    for path in OPTKIT_PATHS:
        final = jax.jit(train, static_argnums=0)(path)
        jax.tree.map(
            lambda a, b: np.testing.assert_allclose(a, b, rtol=2e-6, atol=1e-7), final, reference
        )


def test_floor_step_is_plain_gradient_descent_on_the_train_steps_loss():
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.ones(3)}
    data = {"w": jnp.full((2, 3), 2.0), "b": jnp.zeros(3)}
    stepped = jax.jit(measure.make_floor_step(0.25))(params, data)
    # loss = 0.5 * sum((p - x)**2), so g = p - x and the step is p - 0.25 * (p - x).
    expected = jax.tree.map(lambda p, x: p - 0.25 * (p - x), params, data)
    jax.tree.map(np.testing.assert_allclose, stepped, expected)
