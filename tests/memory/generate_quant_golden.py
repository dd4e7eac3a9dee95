"""Write torchao's results for the quantized-state parity cases to ``tests/memory/golden/``.

The golden file lets the parity tests run where torchao is not installed. Regenerate it after
changing a case or the problem in ``quant_cases.py``, from the repository root::

    python -m tests.memory.generate_quant_golden

Format: one compressed ``.npz``: ``<case id>:<leaf>`` (the params after the last step),
``spec:<case id>`` (the case's torchao setup as JSON, so a stale file is caught by the tests),
``map:<bits>-<signed|unsigned>`` (torchao's quantization tables), and the torch and torchao
versions.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np


def main() -> None:
    import torch
    import torchao

    from tests.memory.quant_cases import CASES, GOLDEN, run_torchao, torchao_maps

    arrays: dict[str, np.ndarray] = {
        "torch_version": np.array(torch.__version__),
        "torchao_version": np.array(torchao.__version__),
    }
    for name, table in torchao_maps().items():
        arrays[f"map:{name}"] = table
    for case in CASES:
        arrays[f"spec:{case.id}"] = np.array(case.torch_spec())
        for leaf, value in run_torchao(case).items():
            arrays[f"{case.id}:{leaf}"] = value
        print(f"ran {case.id}")
    GOLDEN.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN, **arrays)
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    if not __package__:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
