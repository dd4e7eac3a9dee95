"""The quantized update of an elementwise optimizer, run chunk by chunk over each large leaf.

The plain path of :func:`optkit.quantize_state` dequantizes every buffer, runs the inner update
on whole trees and quantizes the results. XLA then holds each buffer's float32 copies (old and
new) in memory at once: four bytes per element per buffer, twice, on top of the two the state
saves. For an optimizer whose update is elementwise (:attr:`DescribedTransformation.elementwise`)
the same values come from running it on pieces of the leaves. Here each quantized leaf runs in a
loop over chunks of whole blocks: a chunk's codes are dequantized, updated and quantized while
they are in cache, and written back into the state's own (donated) code arrays, so the float32
buffers never exist beyond one chunk. The leaves that are not quantized run through the inner
update once, as one list, as in the plain path; the state's scalars (counts, injected
hyperparameters) come from that call.

A chunk takes every ``K``-th block (``buffer.reshape(M, K, ...)[:, i]``, ``K`` iterations of
``M`` blocks), so a code array partitioned over devices on its block axis (by
:func:`optkit.state_sharding`, or as ``init`` places it) keeps each device's blocks on that
device in every iteration.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from optkit.combinators import _block_codes

CHUNK_ELEMENTS: dict[str, int] = {"cpu": 2**20}
"""About how many elements of a leaf one iteration of the loop updates, by backend. On CPU,
2**20 (4 MiB of float32 per buffer): large enough that the loop's overhead per iteration (tens
of microseconds) is small, small enough that a chunk's temporaries stay in cache; measured on a
24.6M-element leaf, 2**14 to 2**22 elements gave steps within 20% of each other, 2**20 the
fastest. Elsewhere :data:`DEFAULT_CHUNK_ELEMENTS`."""

DEFAULT_CHUNK_ELEMENTS = 2**24
"""The chunk size on accelerators (not measured): an iteration costs a host round trip and a few
kernel launches there, so chunks are large (64 MiB of float32 per buffer, most leaves in one
iteration) and only the largest leaves are cut."""


def chunk_elements() -> int:
    """The chunk size for the default backend (see :data:`CHUNK_ELEMENTS`)."""
    return CHUNK_ELEMENTS.get(jax.default_backend(), DEFAULT_CHUNK_ELEMENTS)


def plan_chunks(num_blocks: int, block_size: int) -> tuple[int, int]:
    """``(M, K)``: ``K`` iterations of ``M`` blocks, ``M * K == num_blocks``.

    ``K`` is the least divisor of ``num_blocks`` that keeps a chunk (``M * block_size``
    elements) within :func:`chunk_elements`, so ``M`` keeps as many of ``num_blocks``' factors
    (and of a device count dividing it) as it can. When that chunk is under a sixteenth of the
    limit (a block count with a large prime factor: 4099 blocks would run 4099 iterations of
    one block), the next larger chunk is taken instead, over the limit.
    """
    limit = max(1, chunk_elements() // block_size)
    divisors = sorted(
        {
            d
            for k in range(1, math.isqrt(num_blocks) + 1)
            if num_blocks % k == 0
            for d in (k, num_blocks // k)
        }
    )
    iterations = next(k for k in divisors if num_blocks // k <= limit)
    if (num_blocks // iterations) * 16 < limit:
        iterations = max((k for k in divisors if k < iterations), default=iterations)
    return num_blocks // iterations, iterations


class Layout:
    """Where an elementwise optimizer's state keeps each param's buffers.

    ``treedef`` flattens the (abstract) inner state down to its *nodes*: its per-parameter
    subtrees (the params' structure, every leaf an array of its param's shape; flagged in
    ``per_parameter``) and its other leaves, which must be 0-d (scalars). :meth:`of` returns
    ``None`` when the state is not of that form.
    """

    def __init__(self, treedef: Any, per_parameter: list[bool], params_def: Any) -> None:
        self.treedef, self.per_parameter, self.params_def = treedef, per_parameter, params_def

    @classmethod
    def of(cls, abstract_state: Any, params: Any) -> Layout | None:
        params_def = jax.tree.structure(params)
        shapes = [tuple(leaf.shape) for leaf in jax.tree.leaves(params)]
        if not shapes or (params_def.num_nodes == 1 and shapes == [()]):
            # A bare 0-d param: the state's scalars (counts) would pass for its buffers.
            return None

        def per_parameter(node: Any) -> bool:
            try:
                pieces = params_def.flatten_up_to(node)
            except (ValueError, TypeError):
                return False
            return all(
                hasattr(piece, "shape") and tuple(piece.shape) == shape
                for piece, shape in zip(pieces, shapes, strict=True)
            )

        nodes, treedef = jax.tree.flatten(abstract_state, is_leaf=per_parameter)
        kinds = [per_parameter(node) for node in nodes]
        if not all(
            kind or getattr(node, "shape", None) == ()
            for node, kind in zip(nodes, kinds, strict=True)
        ):
            return None
        return cls(treedef, kinds, params_def)

    def split(self, state: Any) -> list[Any]:
        """The state's nodes: each per-parameter one as the list of its pieces (one per param
        leaf, in order), the scalars as they are."""
        nodes = self.treedef.flatten_up_to(state)
        return [
            self.params_def.flatten_up_to(node) if kind else node
            for node, kind in zip(nodes, self.per_parameter, strict=True)
        ]

    def restricted(self, split: list[Any], pieces: Callable[[list[Any]], list[Any]]) -> Any:
        """A state for a list of leaves from ``split`` (as :meth:`split` gives, or with
        anything at per-parameter positions): each per-parameter node replaced by
        ``pieces(node)`` (a list), scalars kept."""
        return self.treedef.unflatten(
            [
                pieces(node) if kind else node
                for node, kind in zip(split, self.per_parameter, strict=True)
            ]
        )

    def lists(self, state: Any) -> list[Any]:
        """The nodes of a restricted state (its per-parameter lists and its scalars)."""
        return self.treedef.flatten_up_to(state)

    def joined(self, per_leaf: list[list[Any]], scalars: list[Any]) -> Any:
        """The whole state from each per-parameter node's pieces (a list over the param leaves)
        and the scalar nodes (``None`` at per-parameter positions)."""
        return self.treedef.unflatten(
            [
                self.params_def.unflatten(pieces) if kind else scalar
                for pieces, scalar, kind in zip(per_leaf, scalars, self.per_parameter, strict=True)
            ]
        )


def chunked_leaf_update(
    run: Callable[[Any, Any, Any], tuple[Any, Any]],
    layout: Layout,
    scalars: list[Any],
    gradient: jax.Array,
    param: jax.Array | None,
    stored: list[Any],
    *,
    hows: list[Any],
    bits: int,
    block_size: int,
    zero_free: bool = False,
) -> tuple[jax.Array, list[Any]]:
    """One quantized leaf's update and new stored buffers, chunk by chunk.

    ``run(updates, state, params)`` is the inner update on lists; ``scalars`` the state's nodes
    with its scalars (what :meth:`Layout.restricted` keeps); ``stored[j]`` and ``hows[j]`` the
    leaf's stored buffer and plan in the ``j``-th per-parameter node (a ``QuantizedBuffer`` and
    its ``_Quantize``, or an array of the param's shape kept as it is); ``zero_free`` as in
    :func:`optkit.quantize_state`. Returns the leaf's update and its new stored buffers.
    """
    from optkit.combinators.quantization import QuantizedBuffer

    num_blocks = gradient.size // block_size
    rows, iterations = plan_chunks(num_blocks, block_size)

    def strided(array: jax.Array) -> jax.Array:
        """An array whose leading axis is the blocks, as ``(M, K, ...)``."""
        return array.reshape(rows, iterations, *array.shape[1:])

    def as_blocks(array: jax.Array) -> jax.Array:
        return strided(array.reshape(num_blocks, block_size))

    def chunk(array: jax.Array, index: jax.Array) -> jax.Array:
        return jax.lax.dynamic_index_in_dim(array, index, 1, keepdims=False)

    def put(array: jax.Array, value: jax.Array, index: jax.Array) -> jax.Array:
        return jax.lax.dynamic_update_index_in_dim(array, value.astype(array.dtype), index, 1)

    carried = [
        QuantizedBuffer(strided(buffer.codes), strided(buffer.scale))
        if isinstance(buffer, QuantizedBuffer)
        else as_blocks(buffer)
        for buffer in stored
    ]
    blocked_param = None if param is None else as_blocks(param)
    blocked_gradient = as_blocks(gradient)

    def step(index: jax.Array, gradient_chunk: jax.Array, carried: list[Any]) -> Any:
        """One chunk's update and its new (float) buffers."""
        buffers = [
            _block_codes.dequantize(
                chunk(buffer.codes, index),
                chunk(buffer.scale, index),
                bits=bits,
                signed=how.signed,
                shape=(rows, block_size),
                dtype=how.dtype,
            )
            if isinstance(buffer, QuantizedBuffer)
            else chunk(buffer, index)
            for buffer, how in zip(carried, hows, strict=True)
        ]
        pieces = iter(buffers)
        state = layout.restricted(scalars, lambda node: [next(pieces)])
        param_chunk = None if blocked_param is None else [chunk(blocked_param, index)]
        update, new_state = run([gradient_chunk], state, param_chunk)
        nodes = layout.lists(new_state)
        new = [node[0] for node, kind in zip(nodes, layout.per_parameter, strict=True) if kind]
        return update[0], new

    update_type = jax.eval_shape(
        lambda g, c: step(jnp.zeros((), jnp.int32), g, c)[0],
        jax.ShapeDtypeStruct((rows, block_size), gradient.dtype),
        carried,
    )
    # The update overwrites the gradient, chunk by chunk, in the gradient's own buffer (each
    # iteration reads its gradient chunk before it writes its update there); an update of
    # another dtype needs its own array.
    in_place = update_type.dtype == gradient.dtype
    updates = blocked_gradient if in_place else jnp.zeros(blocked_gradient.shape, update_type.dtype)

    def body(index: jax.Array, carry: tuple[jax.Array, list[Any]]) -> Any:
        updates, carried = carry
        source = updates if in_place else blocked_gradient
        update, new = step(index, chunk(source, index), carried)
        stored_next = []
        for buffer, value, how in zip(carried, new, hows, strict=True):
            if isinstance(buffer, QuantizedBuffer):
                codes, scale = _block_codes.quantize_blocks(
                    value.astype(jnp.float32), bits, how.signed, zero_free
                )
                buffer = QuantizedBuffer(
                    put(buffer.codes, codes, index), put(buffer.scale, scale, index)
                )
            else:
                buffer = put(buffer, value, index)
            stored_next.append(buffer)
        return put(updates, update, index), stored_next

    updates, carried = jax.lax.fori_loop(0, iterations, body, (updates, carried))
    new_stored = [
        QuantizedBuffer(
            buffer.codes.reshape(original.codes.shape), buffer.scale.reshape(original.scale.shape)
        )
        if isinstance(buffer, QuantizedBuffer)
        else buffer.reshape(original.shape)
        for buffer, original in zip(carried, stored, strict=True)
    ]
    return updates.reshape(gradient.shape), new_stored
