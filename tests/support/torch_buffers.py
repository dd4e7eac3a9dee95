"""Compare an optimizer's state buffers, not only its params, with torch.optim's ``state``.

The parity suite compares trajectories of params. Buffers that match torch's name for name are
what makes a checkpoint convertible; :func:`assert_buffers_match_torch` steps both libraries on
the same non-convex gradient and checks params and the named buffers after every step.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import optkit

_rng = np.random.default_rng(7)
START: dict[str, np.ndarray] = {"w": _rng.normal(size=(3, 4)), "b": _rng.normal(size=(4,))}


def gradient(params: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Of sum(p**2 + cos(p)): non-convex, the same numpy function for both frameworks."""
    return {name: 2 * p - np.sin(p) for name, p in params.items()}


def find_state(state: optkit.OptState, kind: type) -> Any:
    """The one sub-state of type ``kind`` in a (chained) optimizer state."""
    is_kind = lambda node: isinstance(node, kind)
    (found,) = filter(is_kind, jax.tree.leaves(state, is_leaf=is_kind))
    return found


def assert_buffers_match_torch(
    torch: Any,
    torch_optimizer: Any,
    tx: optkit.GradientTransformation,
    state_type: type,
    buffers: Mapping[str, str],
    steps: int = 10,
) -> None:
    """Step ``torch_optimizer`` (built over tensors of :data:`START`, in that order) and ``tx``
    side by side in float64; after every step, params and each optkit field of ``buffers``
    (optkit field -> torch state key; a scalar field such as a count is compared with every
    param's entry) must equal torch's to 1e-12 relative."""
    tensors = dict(zip(START, torch_optimizer.param_groups[0]["params"], strict=True))
    params = {name: jnp.asarray(value) for name, value in START.items()}
    state = tx.init(params)
    for _ in range(steps):
        torch_grads = gradient({k: t.detach().numpy() for k, t in tensors.items()})
        for name, grad in torch_grads.items():
            tensors[name].grad = torch.tensor(grad)
        torch_optimizer.step()
        grads = {k: jnp.asarray(g) for k, g in gradient(jax.tree.map(np.asarray, params)).items()}
        updates, state = tx.update(grads, state, params)
        params = optkit.apply_updates(params, updates)

        ours = find_state(state, state_type)
        for name, tensor in tensors.items():
            np.testing.assert_allclose(params[name], tensor.detach().numpy(), rtol=1e-12)
            for field, key in buffers.items():
                value = getattr(ours, field)  # a tree like the params, or a shared count
                np.testing.assert_allclose(
                    value[name] if isinstance(value, dict) else value,
                    torch_optimizer.state[tensor][key].numpy(),
                    rtol=1e-12,
                    err_msg=f"{field} (torch's {key}) of {name}",
                )


def torch_params(torch: Any) -> list[Any]:
    """Fresh float64 tensors of :data:`START`, in its order, for a torch optimizer."""
    return [torch.tensor(value, requires_grad=True) for value in START.values()]
