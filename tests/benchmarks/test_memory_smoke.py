"""Smoke test of the memory-and-scale benchmark: a tiny run writes the documented outputs.

No timing is asserted. What is checked: every optimizer's record lands in results.json, the
state bytes per parameter follow from the state formats (float32 moments: 8; 8-bit codes plus a
float32 scale per 256: 2 + 8/256; 4-bit: 1 + 8/128), and the ZeRO-1 subprocess on 8 simulated
devices finds each device holding 1/8 of the state plus the replicated scalars.
"""

from __future__ import annotations

import json

import pytest

pytest.importorskip("optax")
pytest.importorskip("matplotlib")

from benchmarks import memory, memory_report

# Large enough that the embedding (256 x 32) and MLP kernels (32 x 128) are quantized.
TINY = [
    "--quick",
    "--layers=1",
    "--width=32",
    "--vocab=256",
    "--seq-len=8",
    "--rounds=2",
    "--samples-per-round=1",
    "--warmup=1",
    "--min-sample-seconds=0",
]
LARGE_LEAF_BYTES_PER_PARAM = {
    "optax adamw": 8.0,
    "optkit adamw": 8.0,
    "optkit adamw 8-bit": 2 + 2 * 4 / 256,
    "optkit adamw 4-bit": 1 + 2 * 4 / 128,
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("memory")
    return out, memory.main([*TINY, f"--out={out}"])


def test_writes_json_markdown_and_png(tiny_run):
    out, results = tiny_run
    assert json.loads((out / "results.json").read_text()) == json.loads(json.dumps(results))
    assert (out / "results.png").read_bytes().startswith(b"\x89PNG")
    markdown = (out / "results.md").read_text()
    for heading in ("## State and memory", "## Step time", "## ZeRO-1 on 8 simulated CPU"):
        assert heading in markdown
    assert markdown == memory_report.render_markdown(results)
    for key in ("date", "command", "cpu_model", "device_kind", "load_average_at_end"):
        assert results["machine"][key], key
    assert results["machine"]["command"].startswith("python -m benchmarks.memory")


def test_every_optimizer_is_measured(tiny_run):
    _, results = tiny_run
    assert list(results["optimizers"]) == list(memory.CONFIGS)
    for name, record in results["optimizers"].items():
        assert len(record["samples_s"]) == 2 and record["step"]["median"] > 0, name
        assert record["memory"]["live_state_bytes"] == record["state"]["bytes"], name
        assert record["xla_memory"]["peak_bytes"] > record["state"]["bytes"], name
        # Up to the scalars (step counts), a few bytes over the tree's ~16K large-leaf params.
        expected = LARGE_LEAF_BYTES_PER_PARAM[name]
        assert record["state"]["large_leaf_bytes_per_param"] == pytest.approx(expected, abs=2e-3)
    reference = results["optimizers"][memory.REFERENCE]
    assert reference["step_ratio_to_reference"] == 1.0


def test_zero_one_holds_an_eighth_per_device(tiny_run):
    _, results = tiny_run
    zero = results["zero"]
    assert zero["devices"] == 8
    assert list(zero["optimizers"]) == list(memory.CONFIGS)
    for name, entry in zero["optimizers"].items():
        # Every per-parameter buffer splits 8 ways here; what stays whole is the step counts.
        sharded = entry["total_bytes"] - entry["replicated"]["bytes"]
        assert entry["per_device_max_bytes"] == sharded / 8 + entry["replicated"]["bytes"], name
        assert entry["replicated"]["bytes"] <= 64, name
        assert len(set(entry["per_device_bytes"].values())) == 1, name
