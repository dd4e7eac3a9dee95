"""optkit.state_sharding's specs, buffer by buffer, and its errors.

The specs need no devices: an ``AbstractMesh`` of shape ``("data", "model") = (4, 2)`` stands for 8
devices, and the params are ``ShapeDtypeStruct`` leaves carrying their ``NamedSharding``; only
``jax.eval_shape(tx.init, params)`` runs. Placement on real devices, the per-device bytes and
the trajectories run on 8 simulated devices in test_state_sharding_devices.py.

Each leaf's expected spec is derived independently of optkit's structural matching: its param is
found by key-path suffix (``[0].mu['l1']['kernel']`` belongs to ``l1/kernel``), as
tests/integration/sharding_records.py does, and the rule of issue #16 applied: the param's spec
(axes reduced to size 1 and added leading axes unpartitioned), plus ``data`` on the first
unpartitioned dimension divisible by 4; leaves tied to no param start from a replicated spec.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AbstractMesh, NamedSharding
from jax.sharding import PartitionSpec as P

import optkit
from tests.support.registry import REGISTRY

MESH = AbstractMesh((4, 2), ("data", "model"))
DATA = 4
SHAPES = {"l1": {"kernel": (16, 64), "bias": (64,)}, "l2": {"kernel": (64, 8), "bias": (6,)}}
LAYOUTS = {
    "replicated": {"l1": {"kernel": P(), "bias": P()}, "l2": {"kernel": P(), "bias": P()}},
    # Megatron's column- then row-parallel pair, with the hidden bias sharded like its output.
    "model_sharded": {
        "l1": {"kernel": P(None, "model"), "bias": P("model")},
        "l2": {"kernel": P("model", None), "bias": P()},
    },
}
is_shape = lambda node: isinstance(node, tuple) and all(isinstance(n, int) for n in node)


def abstract_params(layout: str, mesh: Any = MESH, dtype: Any = jnp.float32) -> Any:
    return jax.tree.map(
        lambda shape, spec: jax.ShapeDtypeStruct(shape, dtype, sharding=NamedSharding(mesh, spec)),
        SHAPES,
        LAYOUTS[layout],
        is_leaf=is_shape,
    )


# --- the independent expectation --------------------------------------------------------------


def param_for(path: tuple, params: Any) -> tuple[Any, P] | None:
    """The param whose key path ends ``path``, with its spec."""
    for param_path, leaf in jax.tree_util.tree_leaves_with_path(params):
        if len(path) >= len(param_path) and tuple(path[-len(param_path) :]) == param_path:
            return leaf, leaf.sharding.spec
    return None


def expected_spec(path: tuple, leaf: Any, params: Any) -> tuple[Any, ...]:
    ndim = len(leaf.shape)
    entries: list[Any] = [None] * ndim
    match = param_for(path, params)
    if match is not None:
        param, spec = match
        extra = ndim - param.ndim
        trailing = leaf.shape[extra:] if extra >= 0 else ()
        if extra >= 0 and all(b in (p, 1) for b, p in zip(trailing, param.shape, strict=True)):
            padded = list(spec) + [None] * (param.ndim - len(spec))
            entries = [None] * extra + [
                e if b == p else None for e, b, p in zip(padded, trailing, param.shape, strict=True)
            ]
    # A leaf tied to no param may only be split along its first axis (whole rows or blocks).
    splittable = leaf.shape if match is not None else leaf.shape[:1]
    if "data" not in entries:
        for axis, size in enumerate(splittable):
            if entries[axis] is None and size > 0 and size % DATA == 0:
                entries[axis] = "data"
                break
    return tuple(entries)


def padded(spec: P, ndim: int) -> tuple[Any, ...]:
    return (*spec, *[None] * (ndim - len(spec)))


def check_every_leaf(tx: Any, params: Any) -> dict[str, tuple[Any, ...]]:
    """Assert every leaf's spec; return them by path for the concrete checks."""
    abstract = jax.eval_shape(tx.init, params)
    shardings = optkit.state_sharding(tx, params, mesh=MESH)
    assert jax.tree.structure(shardings) == jax.tree.structure(abstract)
    found = {}
    for (path, leaf), sharding in zip(
        jax.tree_util.tree_leaves_with_path(abstract), jax.tree.leaves(shardings), strict=True
    ):
        name = jax.tree_util.keystr(path)
        assert isinstance(sharding, NamedSharding) and sharding.mesh == MESH, name
        spec = padded(sharding.spec, len(leaf.shape))
        assert spec == expected_spec(path, leaf, params), (name, leaf.shape, sharding.spec)
        if len(leaf.shape) == 0:
            assert spec == (), name  # scalars replicated
        found[name] = spec
    return found


# --- every registry row and the combinators ---------------------------------------------------

COMBINATORS = {
    "param_groups": lambda: optkit.param_groups(
        optkit.adamw,
        [{"params": "**/kernel"}, {"params": "**/bias", "weight_decay": 0.0}],
        learning_rate=1e-2,
    ),
    "inject_hyperparams": lambda: optkit.inject_hyperparams(optkit.adamw)(learning_rate=1e-2),
    "masked": lambda: optkit.masked(
        optkit.adam(0.1), lambda p: jax.tree.map(lambda x: x.ndim == 2, p)
    ),
    "flatten": lambda: optkit.flatten(optkit.adam(0.1)),
    "training_loop": lambda: optkit.weight_averaging(
        optkit.accumulate_gradients(
            optkit.grad_scaler(
                optkit.chain(optkit.clip_by_global_norm(1.0), optkit.adamw(1e-2)), init_scale=4.0
            ),
            every_k=2,
        ),
        mode="ema",
        decay=0.9,
    ),
}
BUILDERS = {**{info.name: info.make for info in REGISTRY}, **COMBINATORS}


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("name", BUILDERS)
def test_every_buffer_keeps_its_params_spec_and_is_split_over_data(name, layout):
    specs = check_every_leaf(BUILDERS[name](), abstract_params(layout))

    # Every optimizer keeps some state that can be split (flatten's 1606-float vectors cannot).
    assert name == "flatten" or any("data" in spec for spec in specs.values()), specs


def test_adam_specs_written_out():
    found = check_every_leaf(optkit.adam(0.1), abstract_params("model_sharded"))

    assert found["[0].count"] == ()
    assert found["[0].mu['l1']['kernel']"] == ("data", "model")  # 16 rows / 4
    assert found["[0].mu['l1']['bias']"] == ("model",)  # its one axis is taken
    assert found["[0].mu['l2']['kernel']"] == ("model", "data")  # 8 columns / 4
    assert found["[0].nu['l2']['bias']"] == (None,)  # 6 entries: not divisible, replicated


def test_reduced_and_added_axes_written_out():
    params = abstract_params("model_sharded")
    adafactor = check_every_leaf(optkit.adafactor(), params)
    lbfgs = check_every_leaf(optkit.lbfgs(), params)

    # Adafactor's row statistic of l1's kernel reduces the model-sharded axis: unpartitioned.
    assert adafactor["[0].row_var['l1']['kernel']"] == ("data", None)
    assert adafactor["[0].col_var['l1']['kernel']"] == (None, "model")
    # L-BFGS's history adds a leading axis of 100 entries, split over data.
    assert lbfgs[".grad_diffs['l1']['kernel']"] == ("data", None, "model")
    assert lbfgs[".rho"] == ("data",)  # tied to no param


def test_flat_vectors_are_split_when_divisible():
    flat = optkit.flatten(optkit.adam(0.1))
    # 1024 + 64 + 512 + 6 = 1606 floats: not divisible by 4, replicated.
    found = check_every_leaf(flat, abstract_params("replicated"))
    assert found[".inner_state[0].mu['float32']"] == (None,)

    sharding = NamedSharding(MESH, P())
    params = {
        "w": jax.ShapeDtypeStruct((16, 8), jnp.float32, sharding=sharding),
        "b": jax.ShapeDtypeStruct((8,), jnp.float32, sharding=sharding),
    }
    found = check_every_leaf(flat, params)
    assert found[".inner_state[0].mu['float32']"] == ("data",)  # 136 = 4 * 34


class Blocks(NamedTuple):
    """A quantized buffer's layout: uint8 codes per block and one float32 scale per block."""

    codes: Any
    scale: Any


def blockwise_state(block_bytes: int = 16) -> optkit.GradientTransformation:
    """A stand-in for a quantized optimizer state: each buffer stored as (codes, scales)."""

    def init(params):
        def quantized(p):
            blocks = max(p.size // block_bytes, 1)
            return Blocks(jnp.zeros((blocks, block_bytes), jnp.uint8), jnp.zeros(blocks))

        return {"count": jnp.zeros([], jnp.int32), "mu": jax.tree.map(quantized, params)}

    return optkit.GradientTransformation(init, lambda u, s, p=None: (u, s))


def test_quantized_blocks_are_split_whole_blocks_at_a_time():
    found = check_every_leaf(blockwise_state(), abstract_params("model_sharded"))

    # l1's kernel: 1024 elements = 64 blocks: 16 per data shard, whole blocks; the codes'
    # second axis (bytes of one block) is never split.
    assert found["['mu']['l1']['kernel'].codes"] == ("data", None)
    assert found["['mu']['l1']['kernel'].scale"] == ("data",)
    # l2's bias: one block, which is not split (its 16 bytes could be, but a device must hold
    # whole blocks): replicated.
    assert found["['mu']['l2']['bias'].codes"] == (None, None)
    assert found["['mu']['l2']['bias'].scale"] == (None,)
    assert found["['count']"] == ()


# --- where the specs come from ----------------------------------------------------------------


def test_param_specs_tree_gives_the_same_shardings():
    params = abstract_params("model_sharded")
    bare = jax.tree.map(lambda p: jax.ShapeDtypeStruct(p.shape, p.dtype), params)
    tx = optkit.adamw(1e-2)

    from_tree = optkit.state_sharding(tx, bare, mesh=MESH, param_specs=LAYOUTS["model_sharded"])

    assert from_tree == optkit.state_sharding(tx, params, mesh=MESH)


def test_params_already_split_over_data_keep_their_spec():
    # FSDP-style params: the buffers are already partitioned over data, like their params.
    specs = {"w": P("data", "model"), "b": P()}
    params = {"w": jnp.zeros((16, 8)), "b": jnp.zeros(8)}
    found = optkit.state_sharding(optkit.adam(0.1), params, mesh=MESH, param_specs=specs)

    assert found[0].mu["w"].spec == P("data", "model")
    assert found[0].mu["b"].spec == P("data")


def test_unplaced_params_count_as_replicated_on_a_data_only_mesh():
    mesh = AbstractMesh((8, 1), ("data", "model"))
    params = {"w": np.zeros((16, 3), np.float32), "b": jnp.zeros(3)}

    found = optkit.state_sharding(optkit.sgd(0.1, momentum=0.9), params, mesh=mesh)

    assert found[0].trace["w"].spec == P("data")
    assert found[0].trace["b"].spec == P()
    assert found[0].trace["b"].mesh == mesh


def test_another_shard_axis_name():
    mesh = AbstractMesh((4,), ("batch",))
    found = optkit.state_sharding(
        optkit.adam(0.1), {"w": jnp.zeros(8)}, mesh=mesh, shard_axis="batch"
    )

    assert found[0].mu["w"].spec == P("batch")


# --- errors -----------------------------------------------------------------------------------


def test_shard_axis_not_in_the_mesh():
    with pytest.raises(
        ValueError,
        match=r"shard_axis='batch' is not an axis of the mesh, whose axes are \('data', 'model'\)",
    ):
        optkit.state_sharding(
            optkit.adam(0.1), abstract_params("replicated"), mesh=MESH, shard_axis="batch"
        )


def test_params_without_shardings_on_a_mesh_that_needs_them():
    params = {"l1": {"w": jnp.zeros((4, 4))}}
    with pytest.raises(
        ValueError,
        match=r"param 'l1/w' has no NamedSharding, and the mesh has axes \('model',\) besides "
        "shard_axis='data'",
    ):
        optkit.state_sharding(optkit.adam(0.1), params, mesh=MESH)


def test_param_specs_tree_mismatch_names_the_paths():
    params = {"l1": {"kernel": jnp.zeros((4, 4)), "bias": jnp.zeros(4)}}
    specs = {"l1": {"kernel": P(), "bais": P()}}
    with pytest.raises(
        ValueError,
        match=r"param_specs must have the params' tree structure; missing from param_specs: "
        "'l1/bias'; not in params: 'l1/bais'",
    ):
        optkit.state_sharding(optkit.adam(0.1), params, mesh=MESH, param_specs=specs)


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        (
            P("expert"),
            r"param 'w' is partitioned over axis 'expert' .*, which the mesh \(axes \('data', "
            r"'model'\)\) does not have",
        ),
        (
            P(None, None, "model"),
            r"param 'w' has 2 dimensions but its partition spec .* has 3 entries",
        ),
    ],
)
def test_param_spec_the_mesh_cannot_hold(spec, message):
    with pytest.raises(ValueError, match=message):
        optkit.state_sharding(
            optkit.adam(0.1), {"w": jnp.zeros((4, 4))}, mesh=MESH, param_specs={"w": spec}
        )


def test_param_on_a_mesh_with_other_axis_sizes():
    other = AbstractMesh((2, 4), ("data", "model"))
    params = {
        "w": jax.ShapeDtypeStruct(
            (8, 8), jnp.float32, sharding=NamedSharding(other, P(None, "model"))
        )
    }
    with pytest.raises(
        ValueError,
        match=r"param 'w' is partitioned over axis 'model' of size 4, but that axis has size 2 "
        "in the mesh",
    ):
        optkit.state_sharding(optkit.adam(0.1), params, mesh=MESH)


def test_param_specs_leaf_that_is_not_a_spec():
    with pytest.raises(
        TypeError, match=r"param_specs entry 'w' is str, expected a jax.sharding.PartitionSpec"
    ):
        optkit.state_sharding(
            optkit.adam(0.1), {"w": jnp.zeros(4)}, mesh=MESH, param_specs={"w": "model"}
        )


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"tx": optkit.adam}, TypeError, "expected a gradient transformation"),
        (
            {"mesh": ("data",)},
            TypeError,
            r"mesh must be a jax.sharding.Mesh \(or AbstractMesh\), got tuple",
        ),
        ({"shard_axis": 0}, ValueError, "shard_axis=0 is not an axis of the mesh"),
    ],
)
def test_bad_arguments(kwargs, error, message):
    arguments = {"tx": optkit.adam(0.1), "params": {"w": jnp.zeros(4)}, "mesh": MESH, **kwargs}
    with pytest.raises(error, match=message):
        optkit.state_sharding(arguments.pop("tx"), arguments.pop("params"), **arguments)
