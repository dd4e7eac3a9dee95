"""Write torch's GradScaler trajectories for every case to ``tests/loop/golden/grad_scaler.npz``.

The golden file lets the grad_scaler parity tests run where torch is not installed. Regenerate
it after changing the case table, from the repository root::

    python -m tests.loop.generate_grad_scaler_golden

Format: one compressed ``.npz`` holding, for each case, ``<id>:scales`` (the scale after each
step, float64 holding float32 values), ``<id>:skipped`` (skipped steps so far) and
``<id>:params`` (the params after each step); ``spec:<id>`` stores each case's torch setup as
JSON, so a stale file is caught by the tests; ``update_scale`` holds torch's
``_amp_update_scale_`` on ``UPDATE_SCALE_INPUTS`` and ``torch_version`` where it all came from.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

GOLDEN_PATH = Path(__file__).resolve().parent / "golden" / "grad_scaler.npz"


@dataclasses.dataclass(frozen=True)
class Golden:
    torch_version: str
    specs: dict[str, str]
    scales: dict[str, np.ndarray]
    skipped: dict[str, np.ndarray]
    params: dict[str, np.ndarray]
    update_scale: np.ndarray


def load_golden() -> Golden:
    """Read the golden file (plain arrays and strings only; no pickles)."""
    with np.load(GOLDEN_PATH, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}

    def field(suffix: str) -> dict[str, np.ndarray]:
        return {k.removesuffix(suffix): v for k, v in arrays.items() if k.endswith(suffix)}

    return Golden(
        torch_version=str(arrays["torch_version"]),
        specs={k.removeprefix("spec:"): str(v) for k, v in arrays.items() if k.startswith("spec:")},
        scales=field(":scales"),
        skipped=field(":skipped"),
        params=field(":params"),
        update_scale=arrays["update_scale"],
    )


def main() -> None:
    """Run torch for every case and write the golden file."""
    import torch

    from tests.loop.grad_scaler_cases import CASES
    from tests.loop.grad_scaler_oracle import torch_run, torch_update_scale

    arrays: dict[str, np.ndarray] = {
        "torch_version": np.array(torch.__version__),
        "update_scale": torch_update_scale(),
    }
    for case in CASES:
        run = torch_run(case)
        arrays[f"spec:{case.id}"] = np.array(case.torch_spec())
        arrays[f"{case.id}:scales"] = run.scales
        arrays[f"{case.id}:skipped"] = run.skipped
        arrays[f"{case.id}:params"] = run.params
    GOLDEN_PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN_PATH, **arrays)
    print(f"wrote {GOLDEN_PATH} ({len(CASES)} cases, {GOLDEN_PATH.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    if not __package__:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
