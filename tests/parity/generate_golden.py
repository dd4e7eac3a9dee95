"""Write torch.optim's trajectories for every parity case to ``tests/parity/golden/``.

The golden files let the parity tests run where torch is not installed. Regenerate them after
changing a registry row, the clip cases or a problem, from the repository root::

    python -m tests.parity.generate_golden              every family
    python -m tests.parity.generate_golden adam sgd     those families only

Format: one compressed ``.npz`` per family (a registry row's name, or ``clip``) and dtype,
``<family>.<dtype>.npz``. For each case id it holds ``<id>:<leaf>`` arrays shaped
``(steps + 1, *leaf_shape)`` (the initial params, then the params after each step) and
``spec:<id>``, the case's torch setup as JSON, so a stale file is caught by the tests. It also
records the torch version and the number of steps.
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import numpy as np

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
_SPEC_PREFIX = "spec:"


@dataclasses.dataclass(frozen=True)
class Golden:
    """The contents of one golden file."""

    torch_version: str
    steps: int
    specs: dict[str, str]
    trajectories: dict[str, dict[str, np.ndarray]]


def golden_path(family: str, dtype_name: str) -> Path:
    """Where one family's golden trajectories for ``dtype_name`` ("float32", "float64") live."""
    return GOLDEN_DIR / f"{family}.{dtype_name}.npz"


def load_golden(family: str, dtype_name: str) -> Golden:
    """Read one golden file (plain arrays and strings only; no pickles)."""
    with np.load(golden_path(family, dtype_name), allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    specs, trajectories = {}, {}
    for key, value in arrays.items():
        if key.startswith(_SPEC_PREFIX):
            specs[key.removeprefix(_SPEC_PREFIX)] = str(value)
        elif ":" in key:
            case_id, leaf = key.split(":", 1)
            trajectories.setdefault(case_id, {})[leaf] = value
    return Golden(
        torch_version=str(arrays["torch_version"]),
        steps=int(arrays["steps"]),
        specs=specs,
        trajectories=trajectories,
    )


def main(families: list[str]) -> None:
    """Run torch for every case of ``families`` (all when empty) in both dtypes; write the files."""
    # Imported here, not at the top, so that running this file directly can first put the
    # repository root on sys.path; the tests import only the loader above.
    import torch

    from tests.parity.cases import FAMILIES
    from tests.parity.runner import DTYPES, STEPS, run_torch, stack

    unknown = sorted(set(families) - set(FAMILIES))
    if unknown:
        raise SystemExit(f"unknown families {unknown}; known: {sorted(FAMILIES)}")
    GOLDEN_DIR.mkdir(exist_ok=True)
    for family in families or FAMILIES:
        cases = FAMILIES[family]
        for dtype_name, dtype in DTYPES.items():
            arrays: dict[str, np.ndarray] = {
                "torch_version": np.array(torch.__version__),
                "steps": np.array(STEPS),
            }
            for case in cases:
                arrays[_SPEC_PREFIX + case.id] = np.array(case.torch_spec())
                for leaf, path in stack(run_torch(case, dtype)).items():
                    arrays[f"{case.id}:{leaf}"] = path
            target = golden_path(family, dtype_name)
            np.savez_compressed(target, **arrays)
            size_kib = target.stat().st_size / 1024
            print(f"wrote {target} ({len(cases)} cases, {size_kib:.0f} KiB)")


if __name__ == "__main__":
    if not __package__:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main(sys.argv[1:])
