"""Train a small MLP on scikit-learn's 8x8 digits with ``optkit.adamw``.

The data set ships with scikit-learn (1,797 images, nothing is downloaded). The loop is the
PyTorch loop ``zero_grad -> forward -> loss -> backward -> step`` written the JAX way: gradients
come from ``jax.value_and_grad`` and ``optimizer.step()`` becomes ``tx.update`` followed by
``optkit.apply_updates``, all inside one jitted function whose params and optimizer state are
donated, so XLA updates their buffers in place.

The optimizer is the usual transformer-era recipe written as torch would: AdamW with two
parameter groups (weight decay on the kernels, none on the biases) and a cosine learning rate
schedule over the whole run::

    decay = [p for n, p in model.named_parameters() if "bias" not in n]
    no_decay = [p for n, p in model.named_parameters() if "bias" in n]
    optimizer = torch.optim.AdamW(
        [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}], lr=1e-2, weight_decay=1e-2
    )
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)

Run it::

    python examples/train_digits.py                 # full run: about 98% test accuracy
    python examples/train_digits.py --quick         # 2 epochs, used by the test suite
    python examples/train_digits.py --state-bits 8  # AdamW's moments stored in 8 bits

``--state-bits 8`` (or ``4``) wraps the optimizer in ``optkit.quantize_state``: every moment
buffer with at least ``--min-size`` elements (default 4096, quantize_state's: the two hidden
kernels, 8,192 and 16,384 elements, 94% of the parameters) is stored as block-wise quantized
codes; the 128 x 10 output kernel and the biases stay float32. With ``--min-size 1024`` the
output kernel's moments are quantized too, and at this learning rate the 8-bit run diverges
(its second moments round to zero where the first moments do not): torchao and bitsandbytes
keep buffers under 4,096 elements in float32 for this reason. Even at 4096, 3 seeds of 20
diverge the same way (``benchmarks.quality``): most input pixels are zero in most images, so
their weights' gradients are often exactly zero. ``--zero-free`` (``quantize_state``'s
``zero_free=True``) stores no positive second moment as zero, and no seed diverges, at either
minimum size.
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm.auto import tqdm

import optkit

DEFAULT_EPOCHS = 30
QUICK_EPOCHS = 2
BATCH_SIZE = 64
LEARNING_RATE = 1e-2
WEIGHT_DECAY = 1e-2
STATE_BITS = (32, 8, 4)
# quantize_state's default: the 128 x 10 output kernel (1,280 elements) stays float32.
MIN_QUANTIZED_SIZE = 4096


class MLP(nn.Module):
    """Two hidden ReLU layers over the flattened 8x8 image."""

    hidden: int = 128
    num_classes: int = 10

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(self.hidden)(x))
        x = nn.relu(nn.Dense(self.hidden)(x))
        return nn.Dense(self.num_classes)(x)


def load_data(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Digits scaled to [0, 1], split 75/25 with class balance kept in both halves."""
    digits = load_digits()
    images = (digits.data / 16.0).astype(np.float32)
    labels = digits.target.astype(np.int32)
    return train_test_split(images, labels, test_size=0.25, random_state=seed, stratify=labels)


def cross_entropy(logits: jax.Array, labels: jax.Array) -> jax.Array:
    log_probs = jax.nn.log_softmax(logits)
    return -jnp.mean(jnp.take_along_axis(log_probs, labels[:, None], axis=-1))


def make_optimizer(
    learning_rate: optkit.ScalarOrSchedule,
    state_bits: int = 32,
    min_size: int = MIN_QUANTIZED_SIZE,
    zero_free: bool = False,
) -> optkit.GradientTransformation:
    """AdamW with decoupled weight decay on every leaf but the biases.

    With ``state_bits`` 8 or 4, the moments of every leaf with at least ``min_size`` elements are
    stored quantized (``optkit.quantize_state``); 32 keeps them float32.
    """
    tx = optkit.param_groups(
        optkit.adamw,
        [
            # Leaf paths read "Dense_0/kernel", "Dense_0/bias", ...: see optkit.param_groups.
            {"params": lambda path, leaf: "bias" not in path},
            {"params": lambda path, leaf: "bias" in path, "weight_decay": 0.0},
        ],
        learning_rate=learning_rate,
        weight_decay=WEIGHT_DECAY,
    )
    if state_bits == 32:
        return tx
    return optkit.quantize_state(tx, bits=state_bits, min_size=min_size, zero_free=zero_free)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help=f"default {DEFAULT_EPOCHS}")
    parser.add_argument("--seed", type=int, default=0, help="data split, init and shuffling")
    parser.add_argument(
        "--quick", action="store_true", help=f"short run ({QUICK_EPOCHS} epochs) for tests"
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


def main(argv: Sequence[str] | None = None) -> dict[str, float]:
    """Train, print the final metrics and return them."""
    args = parse_args(argv)
    epochs = args.epochs
    if epochs is None:
        epochs = QUICK_EPOCHS if args.quick else DEFAULT_EPOCHS
    start = time.perf_counter()

    x_train, x_test, y_train, y_test = load_data(args.seed)
    # Dropping the ragged last batch keeps one static shape, so train_step compiles once.
    steps_per_epoch = len(x_train) // BATCH_SIZE
    # torch's CosineAnnealingLR(optimizer, T_max) stepped once per batch: from lr down to 0.
    schedule = optkit.schedules.cosine_annealing_lr(LEARNING_RATE, T_max=epochs * steps_per_epoch)

    model = MLP()
    params = model.init(jax.random.key(args.seed), x_train[:1])["params"]
    tx = make_optimizer(schedule, args.state_bits, args.min_size, args.zero_free)
    opt_state = tx.init(params)

    def loss_fn(params, images, labels):
        logits = model.apply({"params": params}, images)  # output = model(input)
        return cross_entropy(logits, labels)  # loss = loss_fn(output, target)

    # params and opt_state are replaced every step, so their buffers can be reused in place.
    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, images, labels):
        # optimizer.zero_grad(): nothing to clear, jax.grad returns fresh gradients every call.
        # loss.backward(): differentiate the loss with respect to params.
        loss, grads = jax.value_and_grad(loss_fn)(params, images, labels)
        # optimizer.step(): turn gradients into deltas, then add them to the params.
        # scheduler.step() has no counterpart: the schedule reads the update count in opt_state.
        updates, opt_state = tx.update(grads, opt_state, params)
        params = optkit.apply_updates(params, updates)
        return params, opt_state, loss

    @jax.jit
    def evaluate(params, images, labels):
        logits = model.apply({"params": params}, images)
        accuracy = jnp.mean(jnp.argmax(logits, axis=-1) == labels)
        return cross_entropy(logits, labels), accuracy

    initial_train_loss = float(evaluate(params, x_train, y_train)[0])
    rng = np.random.default_rng(args.seed)
    step = 0
    step_losses = []
    progress = tqdm(range(epochs), desc="epochs", unit="epoch")
    for _ in progress:
        order = rng.permutation(len(x_train))
        losses = []
        for i in range(steps_per_epoch):
            batch = order[i * BATCH_SIZE : (i + 1) * BATCH_SIZE]
            params, opt_state, loss = train_step(params, opt_state, x_train[batch], y_train[batch])
            losses.append(loss)
            step += 1
        step_losses += losses
        progress.set_postfix(
            loss=f"{float(jnp.mean(jnp.stack(losses))):.4f}", lr=f"{float(schedule(step)):.2e}"
        )

    train_loss, train_accuracy = evaluate(params, x_train, y_train)
    test_loss, test_accuracy = evaluate(params, x_test, y_test)
    metrics = {
        "epochs": epochs,
        "steps": step,
        "state_bits": args.state_bits,
        "zero_free": args.zero_free,
        "initial_train_loss": initial_train_loss,
        "final_train_loss": float(train_loss),
        "train_accuracy": float(train_accuracy),
        "test_loss": float(test_loss),
        "test_accuracy": float(test_accuracy),
        "seconds": time.perf_counter() - start,
        "optimizer_state_bytes": sum(leaf.nbytes for leaf in jax.tree.leaves(opt_state)),
        "minibatch_losses": [float(loss) for loss in step_losses],
    }
    print(
        f"final train loss {metrics['final_train_loss']:.4f} | "
        f"test accuracy {metrics['test_accuracy']:.4f} | "
        f"{epochs} epochs in {metrics['seconds']:.1f}s"
    )
    return metrics


if __name__ == "__main__":
    main()
