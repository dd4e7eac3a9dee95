"""The protocol: chain, identity, apply_updates, and interoperability with optax both ways."""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import optkit


def _params() -> dict[str, Any]:
    return {
        "w": jnp.array([[1.0, -2.0], [0.5, 3.0]], jnp.float32),
        "b": jnp.array([0.1, -0.1], jnp.float32),
    }


def _grads() -> dict[str, Any]:
    return {
        "w": jnp.array([[0.3, -4.0], [2.0, 0.1]], jnp.float32),
        "b": jnp.array([5.0, -0.2], jnp.float32),
    }


def _run(tx, steps: int = 4) -> dict[str, Any]:
    params = _params()
    state = tx.init(params)
    for _ in range(steps):
        updates, state = tx.update(_grads(), state, params)
        params = optkit.apply_updates(params, updates)
    return params


def _assert_trees_close(a, b, rtol: float = 1e-6) -> None:
    assert jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=1e-7)


class TestGradientTransformation:
    def test_is_a_named_tuple_of_init_and_update(self):
        tx = optkit.sgd(0.1)
        assert isinstance(tx, tuple)
        assert tx._fields == ("init", "update")
        init, update = tx
        assert init is tx.init and update is tx.update

    def test_empty_state_has_no_leaves(self):
        assert jax.tree.leaves(optkit.EmptyState()) == []
        assert jax.tree.leaves(optkit.identity().init(_params())) == []

    def test_identity_passes_updates_through(self):
        tx = optkit.identity()
        updates, state = tx.update(_grads(), tx.init(_params()))
        _assert_trees_close(updates, _grads(), rtol=0)
        assert state == optkit.EmptyState()


class TestChain:
    def test_state_is_a_tuple_of_child_states(self):
        tx = optkit.chain(optkit.clip(1.0), optkit.trace(0.9), optkit.scale(-0.1))
        state = tx.init(_params())
        assert isinstance(state, tuple) and len(state) == 3
        assert isinstance(state[1], optkit.TraceState)

    def test_applies_transforms_in_order(self):
        # clip then scale differs from scale then clip.
        g = jnp.array([3.0, -0.5], jnp.float32)
        clip_first = optkit.chain(optkit.clip(1.0), optkit.scale(2.0))
        scale_first = optkit.chain(optkit.scale(2.0), optkit.clip(1.0))
        np.testing.assert_allclose(clip_first.update(g, clip_first.init(g))[0], [2.0, -1.0])
        np.testing.assert_allclose(scale_first.update(g, scale_first.init(g))[0], [1.0, -1.0])

    def test_empty_chain_is_identity(self):
        tx = optkit.chain()
        updates, state = tx.update(_grads(), tx.init(_params()))
        _assert_trees_close(updates, _grads(), rtol=0)
        assert state == ()

    def test_forwards_params_and_extra_args_to_every_child(self):
        seen = []

        def recorder(tag):
            def update(updates, state, params=None, **extra_args):
                seen.append((tag, params is not None, extra_args))
                return updates, state

            return optkit.GradientTransformation(lambda params: optkit.EmptyState(), update)

        tx = optkit.chain(recorder("a"), optkit.chain(recorder("b")))
        tx.update(_grads(), tx.init(_params()), _params(), value=1.5)
        assert seen == [("a", True, {"value": 1.5}), ("b", True, {"value": 1.5})]

    def test_rejects_something_that_is_not_a_transform(self):
        with pytest.raises(TypeError, match=r"argument 1 .*function.*without calling it"):
            optkit.chain(optkit.clip(1.0), optkit.adam)

    def test_rejects_a_state_from_another_chain(self):
        tx = optkit.chain(optkit.clip(1.0), optkit.scale(2.0))
        with pytest.raises(ValueError, match="tuple of 2 states"):
            tx.update(_grads(), (optkit.EmptyState(),), _params())


class TestApplyUpdates:
    def test_adds_updates(self):
        out = optkit.apply_updates(_params(), _grads())
        np.testing.assert_allclose(out["w"], np.asarray(_params()["w"]) + np.asarray(_grads()["w"]))

    def test_casts_back_to_each_param_dtype(self):
        params = {"h": jnp.ones(3, jnp.bfloat16), "f": jnp.ones(3, jnp.float32)}
        updates = {"h": jnp.full(3, 0.25, jnp.float32), "f": jnp.full(3, 0.25, jnp.float64)}
        out = optkit.apply_updates(params, updates)
        assert out["h"].dtype == jnp.bfloat16 and out["f"].dtype == jnp.float32
        np.testing.assert_allclose(np.asarray(out["h"], np.float32), 1.25)

    def test_adds_in_the_promoted_dtype(self):
        # bf16 numbers near 256 are 2 apart. 256 + (1 + 2**-8) = 257.004 rounds up to 258 when
        # added in float32; casting the update to bf16 first gives 256 + 1 = 257, a tie -> 256.
        params = jnp.full(1, 256.0, jnp.bfloat16)
        updates = jnp.full(1, 1.0 + 2.0**-8, jnp.float32)
        out = optkit.apply_updates(params, updates)
        np.testing.assert_array_equal(np.asarray(out, np.float32), [258.0])

    def test_keeps_none_leaves(self):
        params = {"w": jnp.ones(2), "frozen": None}
        out = optkit.apply_updates(params, {"w": jnp.ones(2), "frozen": None})
        assert out["frozen"] is None
        np.testing.assert_allclose(out["w"], 2.0)

    def test_structure_mismatch_names_the_path(self):
        with pytest.raises(ValueError, match=r"missing from updates: 'b'"):
            optkit.apply_updates(_params(), {"w": _grads()["w"]})

    def test_shape_mismatch_names_the_path(self):
        bad = {"w": jnp.ones((2, 3)), "b": _grads()["b"]}
        with pytest.raises(
            ValueError, match=r"leaf 'w' has shape \(2, 3\) in updates but \(2, 2\)"
        ):
            optkit.apply_updates(_params(), bad)


class TestOptaxInterop:
    def test_optkit_optimizer_inside_optax_chain(self):
        ours = optax.chain(optax.clip_by_global_norm(1.0), optkit.adam(1e-2))
        reference = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
        _assert_trees_close(_run(ours), _run(reference))

    def test_optax_transform_inside_optkit_chain(self):
        ours = optkit.chain(
            optax.clip_by_global_norm(1.0),
            optkit.scale_by_adam(),
            optkit.scale_by_learning_rate(1e-2),
        )
        reference = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
        _assert_trees_close(_run(ours), _run(reference))

    def test_optax_transform_without_extra_args_gets_none(self):
        # optax.clip_by_global_norm's update takes no **extra_args: chain must not pass `value`.
        tx = optkit.chain(optax.clip_by_global_norm(1.0), optkit.sgd(0.1))
        updates, _ = tx.update(_grads(), tx.init(_params()), _params(), value=jnp.array(2.0))
        assert jax.tree.structure(updates) == jax.tree.structure(_grads())

    def test_optax_apply_updates_accepts_optkit_updates(self):
        tx = optkit.sgd(0.1, momentum=0.9)
        params = _params()
        updates, _ = tx.update(_grads(), tx.init(params), params)
        _assert_trees_close(
            optax.apply_updates(params, updates), optkit.apply_updates(params, updates)
        )

    def test_chain_under_jit_and_inside_optax_multi_steps(self):
        tx = optax.MultiSteps(optkit.sgd(0.1, momentum=0.9), every_k_schedule=2)
        params = _params()
        state = tx.init(params)
        step = jax.jit(tx.update)
        for _ in range(4):
            updates, state = step(_grads(), state, params)
            params = optkit.apply_updates(params, updates)
        # Two effective SGD-momentum steps on the (constant) average gradient.
        expected = _run(optkit.sgd(0.1, momentum=0.9), steps=2)
        _assert_trees_close(params, expected)
