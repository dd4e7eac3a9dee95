"""8-bit and 4-bit optimizer state: any optimizer's large floating buffers stored block-quantized.

:func:`quantize_state` wraps an optimizer. Its state is the inner state with every large floating
buffer replaced by a :class:`QuantizedBuffer` (uint8 codes and one float32 scale per block);
each update dequantizes, runs the inner optimizer in float32 and quantizes the new buffers again.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.sharding import NamedSharding, PartitionSpec

from optkit import _tree, _validation
from optkit._base import (
    GradientTransformation,
    OptState,
    Params,
    Updates,
    check_transform,
    is_elementwise,
    takes_extra_args,
)
from optkit.combinators import _block_codes, _chunked

DEFAULT_BLOCK_SIZE = {8: 256, 4: 128}
"""torchao's block sizes: 256 for ``AdamW8bit``, 128 for ``AdamW4bit``."""


class QuantizedBuffer(NamedTuple):
    """A floating state buffer stored block-quantized by :func:`quantize_state`.

    The buffer, flattened, is cut into blocks; ``scale`` holds each block's absolute maximum
    (float32, shape ``(num_blocks,)``) and ``codes`` each element's index into the quantization
    map (uint8, shape ``(num_blocks, block_size * bits // 8)``: at 4 bits two codes share a byte,
    the first in the high nibble). The block axis comes first in both, so a sharding rule that
    splits a buffer's first axis splits whole blocks. Which map the codes index (signed or
    unsigned, 8 or 4 bits) and the buffer's shape are not stored: the wrapper recomputes them
    from the inner optimizer.
    """

    codes: jax.Array
    scale: jax.Array


@dataclasses.dataclass(frozen=True)
class _Quantize:
    """A buffer that is stored quantized: its shape, its dtype when the inner optimizer holds
    it (float32, or bfloat16/float16 for 16-bit params) and which map it uses."""

    shape: tuple[int, ...]
    dtype: Any
    signed: bool
    sharding: Any = dataclasses.field(default=None, compare=False)
    """The buffer's sharding when traced on a mesh with explicit axes (``jax.make_mesh``)."""


_KEEP = object()
"""A state leaf that is stored as it is (small, not floating, or a scalar)."""


def _declares(node: Any) -> bool:
    """Whether ``node`` is a state NamedTuple declaring its non-negative fields."""
    return isinstance(node, tuple) and hasattr(type(node), "non_negative_fields")


def quantize_state(
    inner: Any,
    *,
    bits: int = 8,
    block_size: int | None = None,
    min_size: int = 4096,
    zero_free: bool = False,
) -> GradientTransformation:
    r"""Store the optimizer state of ``inner`` in 8 or 4 bits per value (block-wise quantization).

    Every floating buffer of ``inner``'s state with at least ``min_size`` elements, one or more
    dimensions, and a size divisible by ``block_size`` is stored as a :class:`QuantizedBuffer`:
    the buffer is flattened and cut into blocks of ``block_size`` elements; each block keeps its
    absolute maximum :math:`s` as a float32 scale and each value :math:`x` the code of the map
    entry nearest to :math:`x / s` (round to nearest, ties up). Smaller buffers, scalars (counts,
    injected hyperparameters) and integer buffers stay as they are.

    Each update dequantizes (:math:`x \approx s \cdot \text{map}[\text{code}]`), runs ``inner``
    with its buffers in the dtype it keeps them in (float32; bfloat16 or float16 for 16-bit
    params, as optkit's optimizers keep them, rounded once from the float32 dequantized value),
    and quantizes its new buffers again, so the inner optimizer's math is unchanged up to the
    rounding of its state.

    The maps: at 8 bits, the dynamic (exponent + fraction) map of Dettmers et al., signed for
    buffers that can be negative (first moments, momentum) and unsigned for those that cannot
    (second moments, amsgrad's running max, sums of squares). At 4 bits, the signed dynamic 4-bit
    map for the former and a linear map without zero (:math:`1/16, \dots, 1`) for the latter.
    A state NamedTuple says which of its fields are non-negative in its class attribute
    ``non_negative_fields`` (``ScaleByAdamState`` declares ``("nu", "nu_max")``); a buffer under
    no such declaration uses the signed map, which is right for any value, at some loss of
    resolution for non-negative ones.

    With :func:`optkit.adamw` or :func:`optkit.adam` this reproduces torchao's ``AdamW8bit`` and
    ``Adam8bit`` (``bits=8``, block 256) and ``AdamW4bit`` and ``Adam4bit`` (``bits=4``,
    block 128): the same maps (to 2 float32 ulps), blocks, rounding and minimum size. One
    difference: an all-zero block keeps the scale 0 and dequantizes to exactly zero (torchao
    floors scales at ``1e-12``, so its 4-bit zero-free map gives ``6.25e-14``).

    Round to nearest stores a positive second moment below :math:`1.625 \cdot 10^{-7}` of its
    block's maximum (at 8 bits: half the map's smallest positive entry) as zero, while a first
    moment of :math:`\sqrt{1.6 \cdot 10^{-7}} = 4 \cdot 10^{-4}` of its block's maximum is
    kept. When the gradient of such an entry is then exactly zero for a step (sparse inputs,
    dead units, rare embedding rows), that step divides the first moment by
    :math:`\sqrt{0} + \epsilon` and the parameter jumps by :math:`m / \epsilon` learning
    rates; on the digits MLP of ``benchmarks.quality``, 3 of 20 seeds diverge this way.
    ``zero_free=True`` stores such a value as the map's smallest positive entry instead (the
    remedy of Li et al. for this "zero-point problem": their 4-bit map for these buffers has no
    zero): only exact zeros read back as zero, the stored second moment is not below the true
    one there, and those steps stay bounded. It departs from torchao, which rounds to nearest,
    and so is off by default.

    For an elementwise optimizer (:attr:`~optkit.DescribedTransformation.elementwise`: optkit's
    torch-named optimizers except Adafactor, Muon, L-BFGS and a masked AdamW, and
    :func:`optkit.inject_hyperparams` of them) the quantized leaves are updated chunk by chunk:
    a loop over pieces of about a million elements (whole blocks) dequantizes a piece, runs the
    optimizer on it and quantizes it back into the state's code arrays in place, and writes the
    update over the gradient. The float32 copies of the buffers then never exist beyond one
    piece, and the step's scratch memory is about the gradient's size. Other optimizers (chains,
    :func:`optkit.param_groups`, optax's) dequantize every buffer, update whole trees and
    quantize again; the two give the same values up to float32 rounding.

    The state is a pytree of arrays: it jits, checkpoints (orbax), and sits inside or around
    :func:`optkit.param_groups` and :func:`optkit.inject_hyperparams` (hyperparameters are
    scalars, never quantized). Sharding: ``init`` on committed params places codes and scales
    by their buffer's sharding: partitioned on the block axis like the buffer's first axis
    when every device's share holds whole blocks, replicated otherwise (a buffer split only
    along a later axis is not contiguous per device in the flattened order).

    Args:
        inner: the optimizer whose state is quantized (any optkit or optax transform).
        bits: 8 or 4 bits per stored value.
        block_size: elements per block (with one float32 scale each); 256 at 8 bits and 128 at
            4 bits when ``None``. Even at 4 bits (two codes per byte).
        min_size: the smallest buffer (in elements) that is quantized; torchao's and
            bitsandbytes' 4096 by default.
        zero_free: never store a positive value of a non-negative buffer (second moments,
            amsgrad's max) as zero, but as the map's smallest positive entry (see above). A
            no-op at 4 bits, whose map for these buffers has no zero.

    Returns:
        A gradient transformation with ``inner``'s updates.

    Examples:
        >>> import jax.numpy as jnp, optkit
        >>> params = {"w": jnp.ones((64, 128)), "b": jnp.zeros(128)}
        >>> tx = optkit.quantize_state(optkit.adamw(learning_rate=1e-3))
        >>> state = tx.init(params)
        >>> adam_state = state[0]
        >>> adam_state.mu["w"].codes.shape, adam_state.mu["w"].scale.shape  # 8192 / 256 blocks
        ((32, 256), (32,))
        >>> adam_state.mu["b"].shape  # 128 elements: below min_size, kept in float32
        (128,)
        >>> grads = {"w": jnp.ones((64, 128)), "b": jnp.ones(128)}
        >>> updates, state = tx.update(grads, state, params)

    References:
        Dettmers et al., `8-bit Optimizers via Block-wise Quantization
        <https://arxiv.org/abs/2110.02861>`_, 2022; Li et al., `Memory Efficient Optimizers with
        4-bit States <https://arxiv.org/abs/2309.01507>`_, 2023.
    """
    check_transform(inner, "quantize_state", 0)
    _validation.hyperparameters(bits=bits, min_size=min_size)
    if not isinstance(zero_free, bool):
        raise TypeError(f"zero_free must be True or False, got {zero_free!r}.")
    if bits not in DEFAULT_BLOCK_SIZE:
        raise ValueError(f"bits must be 8 or 4, got {bits!r}.")
    if block_size is None:
        block_size = DEFAULT_BLOCK_SIZE[bits]
    _validation.hyperparameters(block_size=block_size)
    if bits == 4 and block_size % 2:
        raise ValueError(
            f"block_size must be even at bits=4 (two 4-bit codes share a byte), got {block_size}."
        )
    forwards_extra = takes_extra_args(inner)

    def plan(state: OptState, signed: bool = True) -> Any:
        """For each leaf of a state (arrays or shapes): how it is stored."""

        def leaf_plan(leaf: Any) -> Any:
            if _declares(leaf):
                declared = type(leaf).non_negative_fields
                return type(leaf)(
                    *(
                        plan(value, signed and name not in declared)
                        for name, value in zip(leaf._fields, leaf, strict=True)
                    )
                )
            dtype = getattr(leaf, "dtype", None)
            shape = tuple(getattr(leaf, "shape", ()))
            size = math.prod(shape)
            quantized = (
                dtype is not None
                and jnp.issubdtype(dtype, jnp.floating)
                and len(shape) >= 1
                and size >= min_size
                and size % block_size == 0
            )
            if not quantized:
                return _KEEP
            sharding = _explicit_sharding(getattr(leaf, "sharding", None))
            return _Quantize(shape, jnp.dtype(dtype), signed, sharding)

        return jax.tree.map(leaf_plan, state, is_leaf=_declares)

    def encode(how: Any, leaf: Any) -> Any:
        if how is _KEEP:
            return leaf
        quantize = functools.partial(
            _block_codes.quantize,
            bits=bits,
            signed=how.signed,
            block_size=block_size,
            zero_free=zero_free,
        )
        explicit = _explicit_sharding(jax.typeof(leaf).sharding)
        if explicit is not None:
            # Explicit axes (jax.make_mesh): the flattening reshape and the map look-ups need
            # shardings JAX cannot infer, so the encoder runs on auto axes and its outputs are
            # placed by whole blocks, as _placed places an eagerly built buffer's.
            spec = _block_spec(explicit, math.prod(leaf.shape) // block_size)
            placement = NamedSharding(explicit.mesh, spec)
            return QuantizedBuffer(
                *jax.sharding.auto_axes(quantize, out_sharding=(placement, placement))(leaf)
            )
        return QuantizedBuffer(*_placed(*quantize(leaf), leaf))

    def init(params: Params) -> OptState:
        state = inner.init(params)
        return jax.tree.map(encode, plan(state), state)

    def update(
        updates: Updates, state: OptState, params: Params | None = None, **extra_args: Any
    ) -> tuple[Updates, OptState]:
        # The layout is a function of the inner state's shapes, recomputed at trace time.
        reference = updates if params is None else params
        abstract = jax.eval_shape(inner.init, reference)
        layout = plan(abstract)
        _check_stored(layout, state)

        def run(updates: Updates, state: OptState, params: Params | None) -> Any:
            if forwards_extra:
                return inner.update(updates, state, params, **extra_args)
            return inner.update(updates, state, params)

        chunks = _chunked_layout(inner, abstract, layout, updates, reference)
        if chunks is not None:
            return _chunked_update(
                run,
                chunks,
                layout,
                updates,
                state,
                params,
                bits=bits,
                block_size=block_size,
                zero_free=zero_free,
            )

        def decode(how: Any, node: Any) -> Any:
            if how is _KEEP:
                return node
            dequantize = functools.partial(
                _block_codes.dequantize,
                bits=bits,
                signed=how.signed,
                shape=how.shape,
                dtype=how.dtype,
            )
            if how.sharding is not None:  # explicit axes: see encode
                return jax.sharding.auto_axes(dequantize, out_sharding=how.sharding)(*node)
            return dequantize(*node)

        buffers = jax.tree.map(decode, layout, state)
        updates, buffers = run(updates, buffers, params)
        return updates, jax.tree.map(encode, layout, buffers)

    return GradientTransformation(init, update)


def _placed(codes: jax.Array, scale: jax.Array, buffer: Any) -> tuple[jax.Array, jax.Array]:
    """Codes and scales placed by an eagerly built buffer's sharding (see :func:`quantize_state`);
    under ``jit`` the compiler places them."""
    if not _tree.is_committed(buffer):
        return codes, scale
    sharding = buffer.sharding
    if not isinstance(sharding, NamedSharding):
        if len(sharding.device_set) == 1:
            return jax.device_put(codes, sharding), jax.device_put(scale, sharding)
        return codes, scale
    placement = NamedSharding(
        sharding.mesh, _block_spec(sharding, scale.shape[0]), memory_kind=sharding.memory_kind
    )
    return jax.device_put(codes, placement), jax.device_put(scale, placement)


def _block_spec(sharding: NamedSharding, num_blocks: int) -> PartitionSpec:
    """The spec of a buffer's codes and scales: the block axis split like the buffer's first
    axis when every device's share holds whole blocks, replicated otherwise."""
    first_axis = sharding.spec[0] if len(sharding.spec) else None
    names = (
        () if first_axis is None else (first_axis,) if isinstance(first_axis, str) else first_axis
    )
    shards = math.prod(sharding.mesh.shape[name] for name in names)
    return PartitionSpec(first_axis) if num_blocks % shards == 0 else PartitionSpec()


def _explicit_sharding(sharding: Any) -> NamedSharding | None:
    """``sharding`` when it is a ``NamedSharding`` on a mesh with an explicit axis, else None."""
    if not isinstance(sharding, NamedSharding):
        return None
    explicit = jax.sharding.AxisType.Explicit
    return sharding if explicit in sharding.mesh.axis_types else None


def _check_stored(layout: Any, state: OptState) -> None:
    """Raise a ValueError naming the first state leaf that is not stored as ``layout`` says."""

    def check(path: Any, how: Any, node: Any) -> None:
        stored = isinstance(node, QuantizedBuffer)
        if stored != (how is not _KEEP):
            expected = "a QuantizedBuffer" if stored is False else "an unquantized buffer"
            raise ValueError(
                f"quantize_state: state leaf {_tree.path_str(path)!r} should be {expected}, "
                f"got {type(node).__name__}. Was the state made by this quantize_state's "
                "init, with the same bits, block_size and min_size?"
            )

    try:
        jax.tree_util.tree_map_with_path(check, layout, state)
    except ValueError as error:
        if str(error).startswith("quantize_state"):
            raise
        raise ValueError(
            "quantize_state: the state does not have the structure of the inner optimizer's "
            f"state for these updates: {error}"
        ) from None


def _chunked_layout(
    inner: Any, abstract: OptState, layout: Any, updates: Updates, reference: Params
) -> _chunked.Layout | None:
    """The per-parameter layout of ``inner``'s state when its quantized leaves can be updated
    chunk by chunk (see :mod:`optkit.combinators._chunked`), else ``None``: ``inner`` is
    elementwise, its state is per-parameter buffers of the params' shapes and scalars, and the
    updates have the params' structure."""
    if not is_elementwise(inner):
        return None
    chunks = _chunked.Layout.of(abstract, reference)
    if chunks is None or jax.tree.structure(updates) != chunks.params_def:
        return None
    return chunks


def _chunked_update(
    run: Any,
    chunks: _chunked.Layout,
    layout: Any,
    updates: Updates,
    state: OptState,
    params: Params | None,
    *,
    bits: int,
    block_size: int,
    zero_free: bool,
) -> tuple[Updates, OptState]:
    """The update with each quantized leaf run chunk by chunk, the other leaves at once."""
    nodes = chunks.split(state)
    hows = chunks.split(layout)
    kinds = chunks.per_parameter
    gradients = chunks.params_def.flatten_up_to(updates)
    param_leaves = None if params is None else chunks.params_def.flatten_up_to(params)
    quantized = [
        any(isinstance(node[i], _Quantize) for node, kind in zip(hows, kinds, strict=True) if kind)
        for i in range(len(gradients))
    ]
    plain = [i for i, q in enumerate(quantized) if not q]

    # The leaves kept in float, as one list, through the inner update; it also gives the new
    # scalars (a list of no leaves still counts the step).
    kept_state = chunks.restricted(nodes, lambda pieces: [pieces[i] for i in plain])
    kept_updates, kept_state = run(
        [gradients[i] for i in plain],
        kept_state,
        None if param_leaves is None else [param_leaves[i] for i in plain],
    )
    new_nodes = chunks.lists(kept_state)
    new_updates: list[Any] = [None] * len(gradients)
    new_pieces: list[list[Any]] = [[None] * len(gradients) if kind else [] for kind in kinds]
    for position, i in enumerate(plain):
        new_updates[i] = kept_updates[position]
        for node, new, kind in zip(new_pieces, new_nodes, kinds, strict=True):
            if kind:
                node[i] = new[position]
    # What every chunk's inner update reads besides its buffers: the state's scalars as they
    # were (None where the per-parameter nodes go).
    scalars = [None if kind else node for node, kind in zip(nodes, kinds, strict=True)]
    per_node = [j for j, kind in enumerate(kinds) if kind]
    for i, q in enumerate(quantized):
        if not q:
            continue
        leaf_hows = [hows[j][i] for j in per_node]
        leaf_update = functools.partial(
            _chunked.chunked_leaf_update,
            run,
            chunks,
            hows=leaf_hows,
            bits=bits,
            block_size=block_size,
            zero_free=zero_free,
        )
        arguments = (
            scalars,
            gradients[i],
            None if param_leaves is None else param_leaves[i],
            [nodes[j][i] for j in per_node],
        )
        explicit = next(
            (how.sharding for how in leaf_hows if isinstance(how, _Quantize) and how.sharding),
            None,
        )
        if explicit is not None:
            # Explicit axes: as in encode, the loop runs on auto axes and its outputs are
            # placed as the plain path places them.
            num_blocks = gradients[i].size // block_size
            placement = NamedSharding(explicit.mesh, _block_spec(explicit, num_blocks))
            out = (
                jax.typeof(gradients[i]).sharding,
                [
                    QuantizedBuffer(placement, placement)
                    if isinstance(how, _Quantize)
                    else jax.typeof(nodes[j][i]).sharding
                    for j, how in zip(per_node, leaf_hows, strict=True)
                ],
            )
            leaf_update = jax.sharding.auto_axes(leaf_update, out_sharding=out)
        new_updates[i], stored = leaf_update(*arguments)
        for j, buffer in zip(per_node, stored, strict=True):
            new_pieces[j][i] = buffer
    new_scalars = [None if kind else node for node, kind in zip(new_nodes, kinds, strict=True)]
    return chunks.params_def.unflatten(new_updates), chunks.joined(new_pieces, new_scalars)
