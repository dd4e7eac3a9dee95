"""Write torch's optimizer state_dicts, as NumPy arrays, to ``tests/interop/golden/``.

For every row of ``tests/interop/runs.py`` (the registry but LBFGS): the params and the
``state_dict()`` after torch's ``STEPS`` steps and the params after each of ``STEPS`` more. With
it, ``from_torch_state_dict`` is tested where torch is not installed: it reads a state_dict whose
tensors are NumPy arrays as one of tensors. (A file written by ``torch.save`` cannot be read
without torch: ``torch.load`` is torch's own unpickler.) Regenerate after changing a row's
typical set-up or problem, from the repository root::

    python -m tests.interop.generate_golden

Format: one compressed ``.npz``: ``spec:<row>`` (the torch set-up as JSON, to catch a stale
file), ``groups:<row>`` (the param groups as JSON), ``state:<row>:<id>:<key>`` (each tensor;
SparseAdam's int step as an int64 scalar), ``params:<row>:<leaf>`` and ``continued:<row>:<leaf>``
(the params at the checkpoint, and after each later step), and ``torch_version``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN_PATH = Path(__file__).resolve().parent / "golden" / "torch_state_dicts.npz"
STEPS = 7
"""torch's steps before the checkpoint, and after it."""


def row_spec(info: Any) -> str:
    """A row's torch set-up as canonical JSON."""
    from tests.support.optimizer_info import to_torch_kwargs

    spec = {
        "optimizer": info.torch_class,
        "kwargs": to_torch_kwargs(info.typical),
        "problem": info.problem,
        "sparse_gradients": info.sparse_gradients,
        "steps": STEPS,
    }
    return json.dumps(spec, sort_keys=True)


@dataclasses.dataclass(frozen=True)
class Golden:
    """The golden file's contents, by row name."""

    torch_version: str
    specs: dict[str, str]
    state_dicts: dict[str, dict[str, Any]]
    params: dict[str, dict[str, np.ndarray]]
    continued: dict[str, list[dict[str, np.ndarray]]]


def _group(entry: dict[str, Any]) -> dict[str, Any]:
    """A param group back from JSON: its lists were tuples (betas, etas, eps), but 'params'."""
    return {
        k: v if k == "params" or not isinstance(v, list) else tuple(v) for k, v in entry.items()
    }


def load_golden() -> Golden:
    """Read the golden file (plain arrays and strings only; no pickles)."""
    with np.load(GOLDEN_PATH, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    specs = {k.split(":")[1]: str(v) for k, v in arrays.items() if k.startswith("spec:")}
    state_dicts = {
        name: {
            "state": {},
            "param_groups": [_group(g) for g in json.loads(str(arrays[f"groups:{name}"]))],
        }
        for name in specs
    }
    params: dict[str, dict[str, np.ndarray]] = {name: {} for name in specs}
    continued: dict[str, dict[str, np.ndarray]] = {name: {} for name in specs}
    for key, value in arrays.items():
        kind, _, rest = key.partition(":")
        if kind == "state":
            name, index, field = rest.split(":")
            state_dicts[name]["state"].setdefault(int(index), {})[field] = value
        elif kind in ("params", "continued"):
            name, leaf = rest.split(":")
            (params if kind == "params" else continued)[name][leaf] = value
    trajectories = {
        name: [{leaf: values[i] for leaf, values in leaves.items()} for i in range(STEPS)]
        for name, leaves in continued.items()
    }
    return Golden(str(arrays["torch_version"]), specs, state_dicts, params, trajectories)


def main() -> None:
    """Run torch for every row and write the golden file."""
    # Imported here so that running this file directly can first put the repository root on
    # sys.path; the tests import only the loader above.
    import torch

    from tests.interop import runs
    from tests.support.registry import BY_NAME

    arrays: dict[str, np.ndarray] = {"torch_version": np.array(torch.__version__)}
    for name in runs.NAMES:
        reference = runs.torch_reference(name)
        arrays[f"spec:{name}"] = np.array(row_spec(BY_NAME[name]))
        arrays[f"groups:{name}"] = np.array(json.dumps(reference.state_dict["param_groups"]))
        for index, record in reference.state_dict["state"].items():
            for field, value in record.items():
                stored = np.asarray(value) if isinstance(value, int) else value.numpy()
                arrays[f"state:{name}:{index}:{field}"] = stored
        for leaf, value in reference.params.items():
            arrays[f"params:{name}:{leaf}"] = value
            arrays[f"continued:{name}:{leaf}"] = np.stack([p[leaf] for p in reference.continued])
    GOLDEN_PATH.parent.mkdir(exist_ok=True)
    np.savez_compressed(GOLDEN_PATH, **arrays)
    size_kib = GOLDEN_PATH.stat().st_size / 1024
    print(f"wrote {GOLDEN_PATH} ({len(runs.NAMES)} optimizers, {size_kib:.0f} KiB)")


if __name__ == "__main__":
    if not __package__:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
