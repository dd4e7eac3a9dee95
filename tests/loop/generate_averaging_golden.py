"""Write torch's weight averages for the averaging table to ``tests/loop/golden/``.

The golden file lets the weight-averaging parity tests run where torch is not installed.
Regenerate it after changing ``tests/loop/averaging_cases.py`` or the scripted set-ups in
``tests/loop/averaging_oracle.py``, from the repository root::

    python -m tests.loop.generate_averaging_golden

Format: one compressed ``.npz``. For each run and dtype, ``run:<id>:<dtype>:params:<leaf>`` (the
params after each update) and ``run:<id>:<dtype>:<averaging id>:<leaf>`` (each set-up's average
after each update), shaped ``(steps, *leaf_shape)``; ``spec:run:<id>`` holds the run's torch
set-up as JSON. For each dtype of the scripted runs, ``scripted:<dtype>:<averaging id>:<leaf>``
(half-precision values stored as float32, which holds them exactly) and ``spec:scripted``.
``torch_version`` records where the values came from; a stale spec fails the tests.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

GOLDEN_PATH = Path(__file__).resolve().parent / "golden" / "weight_averaging.npz"
RUN_DTYPES = {"float32": np.float32, "float64": np.float64}
SCRIPT_DTYPES = ("bfloat16", "float16", "float32", "float64")


def scripted_spec() -> str:
    from tests.loop.averaging_oracle import (
        SCRIPT_AVERAGINGS,
        SCRIPT_SEED,
        SCRIPT_SHAPES,
        SCRIPT_STEPS,
    )

    spec = {
        "averagings": [a.kwargs() for a in SCRIPT_AVERAGINGS],
        "seed": SCRIPT_SEED,
        "shapes": SCRIPT_SHAPES,
        "steps": SCRIPT_STEPS,
        "dtypes": SCRIPT_DTYPES,
    }
    return json.dumps(spec, sort_keys=True)


def load_golden() -> dict[str, np.ndarray]:
    """The golden file's arrays by key (plain arrays and strings only; no pickles)."""
    with np.load(GOLDEN_PATH, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def main() -> None:
    """Run torch for every run, dtype and scripted set-up, and write the golden file."""
    # Imported here so that running this file directly can first put the repository root on
    # sys.path.
    import torch

    from tests.loop.averaging_cases import RUNS
    from tests.loop.averaging_oracle import torch_run, torch_scripted

    arrays: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__)}
    for run in RUNS:
        arrays[f"spec:run:{run.id}"] = np.array(run.torch_spec())
        for dtype_name, dtype in RUN_DTYPES.items():
            for key, value in torch_run(run, dtype).items():
                arrays[f"run:{run.id}:{dtype_name}:{key}"] = value
    arrays["spec:scripted"] = np.array(scripted_spec())
    for dtype_name in SCRIPT_DTYPES:
        for key, value in torch_scripted(dtype_name).items():
            arrays[f"scripted:{dtype_name}:{key}"] = value
    GOLDEN_PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN_PATH, **arrays)
    size_kib = GOLDEN_PATH.stat().st_size / 1024
    print(f"wrote {GOLDEN_PATH} ({len(RUNS)} runs, {size_kib:.0f} KiB)")


if __name__ == "__main__":
    if not __package__:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
