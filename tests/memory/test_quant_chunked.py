"""``quantize_state``'s chunked path: elementwise optimizers update each quantized leaf chunk by
chunk, in place; every other optimizer takes the plain path (dequantize all, update, quantize).

The chunked path must give the plain path's values (the same math on pieces of the leaves), keep
the float32 copies of the buffers out of memory, and be taken exactly for the optimizers that
declare themselves elementwise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import optkit
from optkit.combinators import _chunked
from tests.support.registry import REGISTRY

BLOCK, MIN_SIZE, STEPS = 64, 64, 5
# Small chunks so the loops run several iterations on small leaves: 2 blocks per iteration.
CHUNK = 2 * BLOCK
ELEMENTWISE_CLASSES = {
    "SGD", "Adam", "AdamW", "Adagrad", "RMSprop", "Adadelta", "Adamax", "NAdam", "RAdam",
    "ASGD", "Rprop", "SparseAdam",
}  # fmt: skip
_rng = np.random.default_rng(1)
PARAMS = {
    "w": jnp.asarray(_rng.standard_normal((24, 64)), jnp.float32),  # 24 blocks: 12 iterations
    "v": jnp.asarray(_rng.standard_normal(5 * BLOCK), jnp.float32),  # 5 blocks: 5 of 1 block
    "b": jnp.asarray(_rng.standard_normal(16), jnp.float32),  # below min_size: plain
}
TARGET = jax.tree.map(lambda p: 0.5 * p, PARAMS)


def loss_fn(params: dict) -> jax.Array:
    return sum(jnp.sum((params[k] - TARGET[k]) ** 2) for k in params)


def optkit_elementwise(tx: object) -> bool:
    """What ``quantize_state`` reads: the ``elementwise`` of a described optimizer."""
    return getattr(tx, "elementwise", False)


def is_stored(node: object) -> bool:
    return isinstance(node, optkit.QuantizedBuffer)


def run(tx: optkit.GradientTransformation, extra: dict) -> tuple[dict, object]:
    @jax.jit
    def step(params, state):
        updates, state = tx.update(jax.grad(loss_fn)(params), state, params, **extra)
        return optkit.apply_updates(params, updates), state

    params, state = PARAMS, tx.init(PARAMS)
    for _ in range(STEPS):
        params, state = step(params, state)
    return params, state


@pytest.mark.parametrize("info", REGISTRY, ids=lambda info: info.name)
def test_only_elementwise_optimizers_say_so(info):
    tx = info.make()
    torch_class = getattr(getattr(tx, "description", None), "torch_class", None)
    # Muon's Adam fallback for non-matrix leaves makes it a plain partition of two optimizers.
    assert torch_class is not None or info.name == "muon", info.name
    assert optkit_elementwise(tx) == (torch_class in ELEMENTWISE_CLASSES), info.name


def test_wrappers_say_elementwise_only_when_it_holds():
    assert optkit.inject_hyperparams(optkit.adamw)(learning_rate=1e-3).elementwise
    assert not optkit.inject_hyperparams(optkit.adafactor)(learning_rate=1e-3).elementwise
    # A decay mask is a tree over the params: a piece of a leaf has no place in it.
    assert not optkit.adamw(1e-3, mask={"w": True, "v": True, "b": False}).elementwise
    assert not optkit.adamw(1e-3, mask=lambda params: params).elementwise
    assert not hasattr(optkit.chain(optkit.adam(1e-3)), "elementwise")
    assert not optkit.param_groups(optkit.adam, [{"params": "w"}], learning_rate=1e-3).elementwise


@pytest.mark.parametrize(
    "info",
    [info for info in REGISTRY if optkit_elementwise(info.make())],
    ids=lambda info: info.name,
)
def test_the_chunked_path_gives_the_plain_paths_values(info, monkeypatch):
    monkeypatch.setitem(_chunked.CHUNK_ELEMENTS, jax.default_backend(), CHUNK)
    extra = info.update_args(loss_fn)
    chunked = optkit.quantize_state(info.make(), block_size=BLOCK, min_size=MIN_SIZE)
    # A chain is not declared elementwise: the same optimizer through the plain path.
    plain = optkit.quantize_state(optkit.chain(info.make()), block_size=BLOCK, min_size=MIN_SIZE)
    params, state = run(chunked, extra)
    reference, reference_state = run(plain, extra)
    # The same math on pieces of the leaves; XLA may fuse the pieces' arithmetic differently
    # (one float32 rounding apart), and a moment one ulp apart may round to the next code.
    # The parity rule of the torchao tests: 1e-4 relative on all but 1% of the elements.
    for key in PARAMS:
        ours, theirs = np.asarray(params[key]), np.asarray(reference[key])
        off = ~np.isclose(ours, theirs, rtol=1e-4, atol=1e-7)
        assert off.mean() <= 0.01, (info.name, key, off.mean())
    stored = zip(
        jax.tree.leaves(state, is_leaf=is_stored),
        jax.tree.leaves(reference_state[0], is_leaf=is_stored),
        strict=True,
    )
    quantized = 0
    for ours, theirs in stored:
        if isinstance(ours, optkit.QuantizedBuffer):
            quantized += 1
            assert isinstance(theirs, optkit.QuantizedBuffer)
            assert ours.codes.shape == theirs.codes.shape and ours.codes.dtype == jnp.uint8
            assert np.mean(np.asarray(ours.codes) != np.asarray(theirs.codes)) <= 0.01
            np.testing.assert_allclose(ours.scale, theirs.scale, rtol=1e-4, atol=1e-12)
        else:
            assert not isinstance(theirs, optkit.QuantizedBuffer)
            np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-7)
    uses_state = jax.tree.leaves(jax.eval_shape(info.make().init, PARAMS))
    assert quantized or not any(leaf.size >= MIN_SIZE for leaf in uses_state), info.name


@pytest.mark.parametrize("bits", [8, 4])
def test_without_params_and_with_injected_hyperparams(bits, monkeypatch):
    monkeypatch.setitem(_chunked.CHUNK_ELEMENTS, jax.default_backend(), CHUNK)
    grads = jax.tree.map(lambda p: p - 0.5, PARAMS)
    for make in (
        lambda: optkit.adam(1e-2),
        lambda: optkit.inject_hyperparams(optkit.adam)(learning_rate=1e-2),
    ):
        chunked = optkit.quantize_state(make(), bits=bits, block_size=BLOCK, min_size=MIN_SIZE)
        plain = optkit.quantize_state(
            optkit.chain(make()), bits=bits, block_size=BLOCK, min_size=MIN_SIZE
        )
        ours, _ = jax.jit(chunked.update)(grads, chunked.init(PARAMS))
        theirs, _ = jax.jit(plain.update)(grads, plain.init(PARAMS))
        for key in PARAMS:
            np.testing.assert_allclose(ours[key], theirs[key], rtol=1e-5, atol=1e-9)


def test_the_chunked_step_keeps_float32_buffers_out_of_memory():
    """XLA's scratch for a train step over a 4M-element leaf: the plain path holds the moments'
    float32 copies (16 MiB each), the chunked path one chunk's worth and the gradient."""
    params = {"w": jax.ShapeDtypeStruct((2048, 2048), jnp.float32)}

    def temp_bytes(tx: optkit.GradientTransformation) -> int:
        def step(params, state, data):
            grads = jax.tree.map(lambda p, x: p - x, params, data)
            updates, state = tx.update(grads, state, params)
            return optkit.apply_updates(params, updates), state

        state = jax.eval_shape(tx.init, params)
        compiled = jax.jit(step, donate_argnums=(0, 1)).lower(params, state, params).compile()
        return compiled.memory_analysis().temp_size_in_bytes

    chunked = temp_bytes(optkit.quantize_state(optkit.adamw(1e-3)))
    plain = temp_bytes(optkit.quantize_state(optkit.chain(optkit.adamw(1e-3))))
    leaf_bytes = 2048 * 2048 * 4
    assert plain >= 2 * leaf_bytes, plain  # at least the two moments' float32 copies
    # The gradient (the update is written over it) and one chunk's temporaries.
    assert chunked <= leaf_bytes + 8 * 4 * _chunked.chunk_elements(), (chunked, plain)


@pytest.mark.parametrize("num_blocks", [1, 2, 7, 64, 4096, 4099, 8198, 96000, 2**20 + 2])
@pytest.mark.parametrize("block_size", [128, 256])
def test_chunk_plans_cover_every_block_in_few_iterations(num_blocks, block_size):
    rows, iterations = _chunked.plan_chunks(num_blocks, block_size)
    assert rows * iterations == num_blocks
    limit = max(1, _chunked.chunk_elements() // block_size)
    divisors = [k for k in range(1, num_blocks + 1) if num_blocks % k == 0]
    fitting = [k for k in divisors if limit // 16 <= num_blocks // k <= limit]
    if fitting:
        # The fewest iterations whose chunks fit, and not so many that chunks get tiny.
        assert iterations == min(fitting)
    else:
        # No divisor gives a chunk of a sixteenth of the limit up to the limit: the least
        # chunk over the limit.
        assert rows > limit or rows == num_blocks
        assert all(num_blocks // k <= limit for k in divisors if k > iterations)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
@pytest.mark.parametrize(
    "make", [optkit.adamw, optkit.adam, optkit.rmsprop], ids=lambda f: f.__name__
)
def test_16bit_params_keep_their_dtype_on_both_paths(dtype, make, monkeypatch):
    """The inner optimizer gets its buffers in the dtype it keeps them in (the params' 16-bit
    dtype for optkit's optimizers, as torch's), so its update has the params' dtype (AdamW's
    decoupled decay refused a float32 update for bfloat16 params)."""
    monkeypatch.setitem(_chunked.CHUNK_ELEMENTS, jax.default_backend(), CHUNK)
    params = {k: v.astype(dtype) for k, v in PARAMS.items()}
    target = jax.tree.map(lambda p: (0.5 * p).astype(dtype), params)

    def trajectory(tx: optkit.GradientTransformation) -> dict:
        @jax.jit
        def step(params, state):
            grads = jax.tree.map(lambda p, t: p - t, params, target)
            updates, state = tx.update(grads, state, params)
            return optkit.apply_updates(params, updates), state

        current, state = params, tx.init(params)
        for _ in range(STEPS):
            current, state = step(current, state)
            assert all(leaf.dtype == dtype for leaf in jax.tree.leaves(current))
        return current

    kwargs = {"block_size": BLOCK, "min_size": MIN_SIZE}
    # eps 1e-3: torch's 1e-8 is zero in float16, and Adam's step divides by it.
    chunked = trajectory(optkit.quantize_state(make(1e-2, eps=1e-3), **kwargs))
    plain = trajectory(optkit.quantize_state(optkit.chain(make(1e-2, eps=1e-3)), **kwargs))
    unquantized = trajectory(make(1e-2, eps=1e-3))
    for key in params:
        ours, theirs = np.asarray(chunked[key], np.float32), np.asarray(plain[key], np.float32)
        # A moment one float32 ulp apart may round to the next code and the next 16-bit
        # value: the parity rule, on all but 1% of the elements.
        off = ~np.isclose(ours, theirs, rtol=2e-2, atol=1e-3)
        assert off.mean() <= 0.01, (key, off.mean())
        reference = np.asarray(unquantized[key], np.float32)
        moved = np.max(np.abs(reference - np.asarray(params[key], np.float32)))
        deviation = np.max(np.abs(ours - reference))
        # As test_quant_registry's 15% of the movement, plus two ulps of the 16-bit params.
        ulps = 2 * float(jnp.finfo(dtype).eps) * np.max(np.abs(reference))
        assert deviation <= 0.15 * moved + ulps, (key, deviation, moved)


@pytest.mark.parametrize(
    "params",
    [jnp.ones(()), jnp.ones((8, 64)), [jnp.ones(()), jnp.ones((8, 64))], {"a": jnp.ones(())}],
    ids=["bare-scalar", "bare-array", "list", "dict-of-scalar"],
)
@pytest.mark.parametrize("make", [optkit.adam, optkit.asgd], ids=lambda f: f.__name__)
def test_any_params_tree_shape(params, make):
    """Bare arrays and 0-d params: a bare 0-d param's buffers look like the state's scalars
    (counts), so it takes the plain path; every case updates like the unquantized optimizer."""
    tx = optkit.quantize_state(make(1e-2), block_size=BLOCK, min_size=MIN_SIZE)
    reference = make(1e-2)
    updates, _ = jax.jit(tx.update)(params, tx.init(params), params)
    expected, _ = reference.update(params, reference.init(params), params)
    assert jax.tree.structure(updates) == jax.tree.structure(expected)
    for ours, theirs in zip(jax.tree.leaves(updates), jax.tree.leaves(expected), strict=True):
        # One step from zero moments: the first update survives 8-bit rounding almost exactly.
        np.testing.assert_allclose(ours, theirs, rtol=2e-2, atol=1e-7)
