"""benchmarks/phases.py: XLA's CPU compile log is split into passes and backend, per process."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("optax")
pytest.importorskip("psutil")

import optkit
from benchmarks import phases

LOG = """\
I1124 04:14:57.56 1 hlo_pass_pipeline.cc:176] HLO pass: copy-insertion time: 1.2 s (1200000 us) (c)
I1124 04:14:57.57 1 hlo_pass_pipeline.cc:176] HLO pass: fusion time: 300 ms (300000 us) (c)
I1124 04:14:57.58 1 hlo_pass_pipeline.cc:176] HLO pass: copy-insertion time: 5 ms (5000 us) (c)
cpu_compiler.cc:1269] Running HLO passes on [jit_step] for CPU time: 1.6 s (1600000 us) (c)
cpu_compiler.cc:1300] Compiling [jit_step] for CPU using JIT time: 2 s (2000000 us) (c)
"""


def test_parse_log_sums_each_pass_and_reads_the_totals() -> None:
    parsed = phases.parse_log(LOG)
    assert parsed["hlo_passes_s"] == pytest.approx(1.6)
    assert parsed["backend_s"] == pytest.approx(2.0)
    assert parsed["largest_passes_s"] == pytest.approx({"copy-insertion": 1.205, "fusion": 0.3})


def test_parse_log_without_cpu_lines_reports_none() -> None:
    assert phases.parse_log("nothing here") == {
        "hlo_passes_s": None,
        "backend_s": None,
        "largest_passes_s": {},
    }


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="parses XLA:CPU's compile log")
def test_tiny_run_splits_compile_time(tmp_path) -> None:
    configs = (
        "--configs=floor,flatten.floor,optkit.flatten,shape.independent,shape.gather,adam.packed"
    )
    argv = ["--leaves=3", "--leaf-size=8", "--optimizer=sgd", configs]
    results = phases.main([*argv, f"--out={tmp_path}"])
    assert [(row["leaves"], row["config"]) for row in results["rows"]] == [
        (3, "floor"),
        (3, "flatten.floor"),
        (3, "optkit.flatten"),
        (3, "shape.independent"),
        (3, "shape.gather"),
        (3, "adam.packed"),
    ]
    for row in results["rows"]:
        assert row["lower_s"] > 0 and row["compile_s"] > 0
        assert 0 < row["hlo_passes_s"] < row["compile_s"]
        assert 0 < row["backend_s"] < row["compile_s"]
        assert row["rest_of_compile_s"] == pytest.approx(
            row["compile_s"] - row["hlo_passes_s"] - row["backend_s"]
        )
        assert row["largest_passes_s"]
    assert json.loads((tmp_path / "phases.json").read_text())["rows"] == results["rows"]
    markdown = (tmp_path / "phases.md").read_text()
    assert "| 3 | optkit.flatten |" in markdown


def test_packed_adam_follows_optkit_adam() -> None:
    """The packed-moments step is Adam: same trajectory as optkit.adam, state in one buffer."""
    keys = jax.random.split(jax.random.key(0), 3)
    params = {
        "w": jax.random.normal(keys[0], (4, 3), jnp.float32),
        "b": jax.random.normal(keys[1], (3,), jnp.float32),
    }
    target = jax.tree.map(lambda p: jax.random.normal(keys[2], p.shape, p.dtype), params)
    packed, reference = phases.packed_adam(0.1), optkit.adam(0.1)
    state, ref_state = packed.init(params), reference.init(params)
    assert jax.tree.map(lambda m: m.dtype, state[1]) == {"w": jnp.complex64, "b": jnp.complex64}
    p, ref_p = params, params
    for _ in range(6):
        updates, state = jax.jit(packed.update)(jax.tree.map(jnp.subtract, p, target), state)
        p = optkit.apply_updates(p, updates)
        ref_updates, ref_state = reference.update(
            jax.tree.map(jnp.subtract, ref_p, target), ref_state
        )
        ref_p = optkit.apply_updates(ref_p, ref_updates)
    assert int(state[0]) == 6
    for leaf, ref_leaf in zip(jax.tree.leaves(p), jax.tree.leaves(ref_p), strict=True):
        np.testing.assert_allclose(leaf, ref_leaf, rtol=1e-6, atol=1e-7)
    assert not np.allclose(p["w"], params["w"])
