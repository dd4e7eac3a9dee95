"""benchmarks/phases.py: XLA's CPU compile log is split into passes and backend, per process."""

from __future__ import annotations

import json

import jax
import pytest

pytest.importorskip("optax")
pytest.importorskip("psutil")

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
    configs = "--configs=floor,flatten.floor,optkit.flatten,shape.independent,shape.gather"
    argv = ["--leaves=3", "--leaf-size=8", "--optimizer=sgd", configs]
    results = phases.main([*argv, f"--out={tmp_path}"])
    assert [(row["leaves"], row["config"]) for row in results["rows"]] == [
        (3, "floor"),
        (3, "flatten.floor"),
        (3, "optkit.flatten"),
        (3, "shape.independent"),
        (3, "shape.gather"),
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
