"""Train a tiny decoder-only transformer language model on synthetic text with ``optkit.adamw``.

The text comes from a random second-order Markov chain over a small vocabulary: each pair of
previous tokens picks the next from a peaked distribution drawn once from a Dirichlet law, so
the data is learnable, endless, and its best achievable loss (the chain's entropy rate) is known
exactly. Nothing is downloaded. The model is a GPT-style decoder in Flax (token and position
embeddings, pre-norm blocks of causal self-attention and a 4x MLP, a final layer norm, tied
output embedding), trained with AdamW and a cosine schedule.

``--state-bits 8`` (or ``4``) wraps AdamW in ``optkit.quantize_state``: every moment buffer with
at least ``--min-size`` elements (default 1024: the token embedding, 16 x 64, the position
embedding and the attention and MLP kernels) is stored as block-wise quantized codes; biases and
layer norms stay float32 (quantize_state's default, 4096, would leave both embeddings in
float32). 600 steps take the held-out loss from ~3.3 to ~1.35 nats per token (the unigram
entropy is ~2.7, the chain's entropy rate ~1.23): the model learns the bigram statistics, then
most of the trigram ones.

Run it::

    python examples/synthetic_lm.py                  # 600 steps, about 40 s on 2 CPU cores
    python examples/synthetic_lm.py --state-bits 8   # the same run with 8-bit AdamW state
    python examples/synthetic_lm.py --quick          # 20 steps, used by the test suite
"""

from __future__ import annotations

import argparse
import functools
import math
import time
from collections.abc import Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

import optkit

VOCAB = 16
SEQ_LEN = 32
BATCH_SIZE = 32
WIDTH = 64
LAYERS = 2
HEADS = 4
DEFAULT_STEPS = 600
QUICK_STEPS = 20
EVAL_SEQUENCES = 256
LEARNING_RATE = 1e-2
WEIGHT_DECAY = 1e-2
STATE_BITS = (32, 8, 4)
MIN_QUANTIZED_SIZE = 1024
# Small concentration: each context's next-token distribution has a few likely tokens.
DIRICHLET_CONCENTRATION = 0.1


class MarkovText:
    """A random second-order Markov chain over ``vocab`` tokens: ``P(x_t | x_{t-2}, x_{t-1})``."""

    def __init__(self, vocab: int, seed: int) -> None:
        rng = np.random.default_rng(seed)
        self.vocab = vocab
        self.transitions = rng.dirichlet(np.full(vocab, DIRICHLET_CONCENTRATION), (vocab, vocab))
        self.cumulative = np.cumsum(self.transitions, axis=-1)

    def sample(self, rng: np.random.Generator, count: int, length: int) -> np.ndarray:
        """``count`` sequences of ``length`` tokens, each from two uniform starting tokens."""
        tokens = np.empty((count, length), np.int32)
        tokens[:, :2] = rng.integers(0, self.vocab, (count, 2))
        rows = np.arange(count)
        for t in range(2, length):
            cumulative = self.cumulative[tokens[rows, t - 2], tokens[rows, t - 1]]
            draws = rng.random((count, 1))
            # The first index whose cumulative probability exceeds the draw (clipped for the
            # float round-off that can leave the last cumulative value a hair under 1).
            tokens[:, t] = np.minimum((cumulative <= draws).sum(axis=-1), self.vocab - 1)
        return tokens

    def entropy_rate(self) -> float:
        """The chain's entropy per token in nats, under its stationary distribution of pairs."""
        pair_probs = np.full((self.vocab, self.vocab), 1.0 / self.vocab**2)
        for _ in range(500):  # power iteration: (a, b) -> (b, c) with probability P(c | a, b)
            pair_probs = np.einsum("ab,abc->bc", pair_probs, self.transitions)
        with np.errstate(divide="ignore", invalid="ignore"):
            logs = np.where(self.transitions > 0, np.log(self.transitions), 0.0)
        return float(-np.sum(pair_probs[..., None] * self.transitions * logs))


class Block(nn.Module):
    """Pre-norm transformer block: causal self-attention, then a 4x GELU MLP, both residual."""

    width: int
    heads: int

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        causal = nn.make_causal_mask(jnp.ones(x.shape[:2], bool))
        h = nn.LayerNorm()(x)
        x = x + nn.MultiHeadDotProductAttention(num_heads=self.heads)(h, h, mask=causal)
        h = nn.LayerNorm()(x)
        h = nn.Dense(self.width)(nn.gelu(nn.Dense(4 * self.width)(h)))
        return x + h


class Decoder(nn.Module):
    """GPT-style decoder with a tied output embedding."""

    vocab: int = VOCAB
    seq_len: int = SEQ_LEN
    width: int = WIDTH
    layers: int = LAYERS
    heads: int = HEADS

    @nn.compact
    def __call__(self, tokens: jax.Array) -> jax.Array:
        embed = nn.Embed(self.vocab, self.width)
        # float32 whatever JAX's default float (float64 under jax_enable_x64), like flax's layers.
        positions = self.param(
            "positions", nn.initializers.normal(0.02), (self.seq_len, self.width), jnp.float32
        )
        x = embed(tokens) + positions[: tokens.shape[1]]
        for _ in range(self.layers):
            x = Block(self.width, self.heads)(x)
        return embed.attend(nn.LayerNorm()(x))


def next_token_loss(logits: jax.Array, tokens: jax.Array) -> jax.Array:
    """Mean cross-entropy of predicting ``tokens[:, 1:]`` from the logits before them."""
    log_probs = jax.nn.log_softmax(logits[:, :-1])
    return -jnp.mean(jnp.take_along_axis(log_probs, tokens[:, 1:, None], axis=-1))


def make_optimizer(
    learning_rate: optkit.ScalarOrSchedule,
    state_bits: int = 32,
    min_size: int = MIN_QUANTIZED_SIZE,
    zero_free: bool = False,
) -> optkit.GradientTransformation:
    """AdamW; with ``state_bits`` 8 or 4, moments of leaves with >= ``min_size`` elements are
    stored quantized (``optkit.quantize_state``)."""
    tx = optkit.adamw(learning_rate, weight_decay=WEIGHT_DECAY)
    if state_bits == 32:
        return tx
    return optkit.quantize_state(tx, bits=state_bits, min_size=min_size, zero_free=zero_free)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None, help=f"default {DEFAULT_STEPS}")
    parser.add_argument("--seed", type=int, default=0, help="init and batches")
    parser.add_argument("--data-seed", type=int, default=0, help="the Markov chain (the text)")
    parser.add_argument(
        "--quick", action="store_true", help=f"short run ({QUICK_STEPS} steps) for tests"
    )
    parser.add_argument(
        "--state-bits",
        type=int,
        choices=STATE_BITS,
        default=32,
        help="bits per optimizer-state entry: 32 (float32), or 8 or 4 (optkit.quantize_state)",
    )
    parser.add_argument(
        "--min-size",
        type=int,
        default=MIN_QUANTIZED_SIZE,
        help="with --state-bits 8 or 4: smallest buffer that is quantized (default %(default)s)",
    )
    parser.add_argument(
        "--zero-free",
        action="store_true",
        help="with --state-bits 8: no positive second moment is stored as zero "
        "(quantize_state's zero_free)",
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train, print the final metrics and return them."""
    args = parse_args(argv)
    steps = args.steps
    if steps is None:
        steps = QUICK_STEPS if args.quick else DEFAULT_STEPS
    start = time.perf_counter()

    text = MarkovText(VOCAB, args.data_seed)
    # Batches and the held-out set come from separate streams: the same for every state format.
    batch_rng = np.random.default_rng([args.seed, 1])
    eval_tokens = text.sample(np.random.default_rng([args.data_seed, 2]), EVAL_SEQUENCES, SEQ_LEN)

    model = Decoder()
    params = model.init(jax.random.key(args.seed), eval_tokens[:1])["params"]
    num_params = sum(math.prod(leaf.shape) for leaf in jax.tree.leaves(params))
    schedule = optkit.schedules.cosine_annealing_lr(LEARNING_RATE, T_max=steps)
    tx = make_optimizer(schedule, args.state_bits, args.min_size, args.zero_free)
    opt_state = tx.init(params)

    def loss_fn(params, tokens):
        return next_token_loss(model.apply({"params": params}, tokens), tokens)

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, tokens):
        loss, grads = jax.value_and_grad(loss_fn)(params, tokens)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optkit.apply_updates(params, updates), opt_state, loss

    evaluate = jax.jit(loss_fn)
    initial_eval_loss = float(evaluate(params, eval_tokens))
    losses = []
    for _ in range(steps):
        tokens = text.sample(batch_rng, BATCH_SIZE, SEQ_LEN)
        params, opt_state, loss = train_step(params, opt_state, tokens)
        losses.append(loss)

    metrics = {
        "steps": steps,
        "state_bits": args.state_bits,
        "zero_free": args.zero_free,
        "num_params": num_params,
        "entropy_rate": text.entropy_rate(),
        "initial_eval_loss": initial_eval_loss,
        "final_eval_loss": float(evaluate(params, eval_tokens)),
        "seconds": time.perf_counter() - start,
        "optimizer_state_bytes": sum(leaf.nbytes for leaf in jax.tree.leaves(opt_state)),
        "minibatch_losses": [float(loss) for loss in losses],
    }
    print(
        f"{args.state_bits}-bit state: held-out loss {metrics['initial_eval_loss']:.4f} -> "
        f"{metrics['final_eval_loss']:.4f} nats/token (chain entropy rate "
        f"{metrics['entropy_rate']:.4f}) | {steps} steps in {metrics['seconds']:.1f}s"
    )
    return metrics


if __name__ == "__main__":
    main()
