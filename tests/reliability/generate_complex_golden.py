"""Write torch.optim's trajectories on complex params to ``tests/reliability/golden/``.

The golden files let the complex tests run where torch is not installed. Regenerate them after
changing a registry row or ``tests/reliability/complex_runs.py``, from the repository root::

    python -m tests.reliability.generate_complex_golden

Format: one compressed ``.npz`` per dtype, ``complex.<dtype>.npz``, holding ``<case id>:<leaf>``
arrays shaped ``(steps + 1, *leaf_shape)`` (complex), ``spec:<case id>`` (the case's torch
set-up as JSON, to catch a stale file) and the torch version.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
_SPEC_PREFIX = "spec:"


def golden_path(dtype_name: str) -> Path:
    return GOLDEN_DIR / f"complex.{dtype_name}.npz"


def load_golden(dtype_name: str) -> tuple[str, dict[str, str], dict[str, dict[str, np.ndarray]]]:
    """The torch version, the specs and the trajectories of one golden file (no pickles)."""
    with np.load(golden_path(dtype_name), allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    specs, trajectories = {}, {}
    for key, value in arrays.items():
        if key.startswith(_SPEC_PREFIX):
            specs[key.removeprefix(_SPEC_PREFIX)] = str(value)
        elif ":" in key:
            case_id, leaf = key.split(":", 1)
            trajectories.setdefault(case_id, {})[leaf] = value
    return str(arrays["torch_version"]), specs, trajectories


def main() -> None:
    import torch

    from tests.reliability.complex_runs import CASES, DTYPES, run_torch, torch_spec

    GOLDEN_DIR.mkdir(exist_ok=True)
    for dtype_name in DTYPES:
        arrays = {"torch_version": np.array(torch.__version__)}
        for case in CASES:
            arrays[_SPEC_PREFIX + case.id] = np.array(torch_spec(case))
            for leaf, path in run_torch(case, dtype_name).items():
                arrays[f"{case.id}:{leaf}"] = path
        target = golden_path(dtype_name)
        np.savez_compressed(target, **arrays)
        print(f"wrote {target} ({len(CASES)} cases, {target.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    if not __package__:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
