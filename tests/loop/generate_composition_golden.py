"""Write torch's trajectories of the whole training loop to ``tests/loop/golden/composition.npz``.

The golden file lets tests/loop/test_composition.py compare with torch where torch is not
installed. Regenerate it after changing tests/loop/composition.py, from the repository root::

    python -m tests.loop.generate_composition_golden

Format: for each case and dtype, ``<case>:<dtype>:params:<leaf>`` and
``<case>:<dtype>:averaged:<leaf>`` (after every optimizer step, stacked) and
``<case>:<dtype>:scale``; ``spec:<case>`` holds the case's set-up as JSON so a stale file is
caught; ``torch_version`` records where the values came from.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

GOLDEN_PATH = Path(__file__).resolve().parent / "golden" / "composition.npz"
DTYPES = ("float32", "float64")


def load_golden() -> dict[str, np.ndarray]:
    """The golden arrays by key (plain arrays and strings only; no pickles)."""
    with np.load(GOLDEN_PATH, allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def main() -> None:
    """Run torch's loop for every case and dtype and write the golden file."""
    import torch

    from tests.loop.composition import CASES, LEAVES, run_torch

    arrays: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__)}
    for case in CASES:
        arrays[f"spec:{case.id}"] = np.array(case.spec())
        for dtype in DTYPES:
            run = run_torch(case, np.dtype(dtype).type)
            prefix = f"{case.id}:{dtype}"
            arrays[f"{prefix}:scale"] = run.scale
            for name in LEAVES:
                arrays[f"{prefix}:params:{name}"] = run.params[name]
                arrays[f"{prefix}:averaged:{name}"] = run.averaged[name]
    GOLDEN_PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN_PATH, **arrays)
    print(f"wrote {GOLDEN_PATH} ({len(CASES)} cases x {len(DTYPES)} dtypes)")


if __name__ == "__main__":
    if not __package__:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
