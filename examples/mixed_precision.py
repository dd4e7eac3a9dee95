"""Train the digits MLP in float16 with loss scaling, gradient accumulation and an EMA model.

The PyTorch loop this reproduces (AMP with a ``GradScaler``, ``k`` micro-batches per optimizer
step, gradient clipping after ``unscale_``, and an exponential moving average of the weights)::

    scaler = torch.amp.GradScaler(growth_interval=GROWTH_INTERVAL)
    ema = AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(EMA_DECAY))
    for step in range(steps):
        for x, y in micro_batches(k):
            with torch.autocast("cuda", dtype=torch.float16):
                loss = loss_fn(model(x), y) / k
            scaler.scale(loss).backward()
        scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        scaler.step(optimizer)
        scaler.update()
        optimizer.zero_grad()
        ema.update_parameters(model)

In optkit the loop is one transformation, updated once per micro-batch::

    tx = optkit.accumulate_gradients(
        optkit.weight_averaging(
            optkit.grad_scaler(optkit.chain(optkit.clip_by_global_norm(MAX_NORM), adamw)),
            mode="ema", decay=EMA_DECAY,
        ),
        every_k=k,
    )

The params stay float32 (torch's AMP keeps float32 master weights too); the forward and backward
passes run in float16, and the gradient of ``loss * optkit.loss_scale(opt_state)`` comes back
through the float16 casts. Gradients that overflow float16 make the scaler skip the step and
halve the scale; ``growth_interval`` clean steps double it again. The EMA params
(``optkit.get_averaged_params``) are evaluated beside the raw ones.

Run it::

    python examples/mixed_precision.py          # 20 epochs, writes outputs/mixed_precision.png
    python examples/mixed_precision.py --quick  # 2 epochs, used by the test suite

``outputs/`` is gitignored (``--out DIR`` for another folder). The figure in the docs is
regenerated with a full run (never ``--quick``)::

    python examples/mixed_precision.py --out docs/images
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
from train_digits import MLP, cross_entropy, load_data

import optkit

DEFAULT_EPOCHS = 20
QUICK_EPOCHS = 2
MICRO_BATCH = 16
ACCUMULATION_STEPS = 4  # optimizer steps see 64 examples
LEARNING_RATE = 3e-3
WEIGHT_DECAY = 1e-2
MAX_NORM = 1.0
EMA_DECAY = 0.95
GROWTH_INTERVAL = 20  # torch's default is 2000: short here so the plot shows growth
COMPUTE_DTYPE = jnp.float16
# Outputs go to a gitignored folder; the docs figure is regenerated with --out docs/images.
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "outputs"
FIGURE = "mixed_precision.png"


def make_optimizer() -> optkit.GradientTransformation:
    """AdamW inside clipping, loss scaling, EMA and accumulation, innermost first."""
    adamw = optkit.adamw(LEARNING_RATE, weight_decay=WEIGHT_DECAY)
    scaled = optkit.grad_scaler(
        optkit.chain(optkit.clip_by_global_norm(MAX_NORM), adamw), growth_interval=GROWTH_INTERVAL
    )
    # Inside the accumulation, the average is updated once per optimizer step, as torch's
    # ema.update_parameters(model) after each scaler.step(optimizer).
    averaged = optkit.weight_averaging(scaled, mode="ema", decay=EMA_DECAY)
    return optkit.accumulate_gradients(averaged, ACCUMULATION_STEPS)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help=f"default {DEFAULT_EPOCHS}")
    parser.add_argument("--seed", type=int, default=0, help="data split, init and shuffling")
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"folder for {FIGURE} (default: outputs/)"
    )
    parser.add_argument(
        "--quick", action="store_true", help=f"short run ({QUICK_EPOCHS} epochs) for tests"
    )
    return parser.parse_args(argv)


def plot(history: dict[str, Any], out: Path) -> None:
    """Loss per optimizer step, the loss scale, and test accuracy of the raw and EMA params."""
    figure, (loss_axis, scale_axis, accuracy_axis) = plt.subplots(1, 3, figsize=(15, 4.5))
    loss_axis.plot(history["loss"], linewidth=0.8)
    loss_axis.set(title="training loss (per optimizer step)", xlabel="optimizer step", yscale="log")
    scale_axis.step(range(len(history["scale"])), history["scale"], where="post")
    skipped = np.flatnonzero(history["skipped_now"])
    scale_axis.plot(skipped, np.asarray(history["scale"])[skipped], "rv", label="skipped step")
    scale_axis.set(title="loss scale", xlabel="optimizer step", yscale="log")
    scale_axis.set_yscale("log", base=2)
    scale_axis.legend()
    epochs = range(1, len(history["test_accuracy"]) + 1)
    accuracy_axis.plot(epochs, history["test_accuracy"], "o-", label="params")
    accuracy_axis.plot(epochs, history["ema_test_accuracy"], "s-", label="EMA params")
    accuracy_axis.set(title="test accuracy", xlabel="epoch")
    accuracy_axis.legend()
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=110)
    plt.close(figure)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train, plot, print the final metrics and return them with the per-step history."""
    args = parse_args(argv)
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else DEFAULT_EPOCHS)
    start = time.perf_counter()

    x_train, x_test, y_train, y_test = load_data(args.seed)
    micro_batches_per_epoch = len(x_train) // MICRO_BATCH
    micro_batches_per_epoch -= micro_batches_per_epoch % ACCUMULATION_STEPS

    model = MLP()
    params = model.init(jax.random.key(args.seed), x_train[:1])["params"]
    tx = make_optimizer()
    opt_state = tx.init(params)

    def scaled_loss(params, images, labels, scale):
        # torch.autocast: the matmuls run in float16 on float16 copies of the float32 params.
        half = jax.tree.map(lambda p: p.astype(COMPUTE_DTYPE), params)
        logits = model.apply({"params": half}, images.astype(COMPUTE_DTYPE))
        loss = cross_entropy(logits.astype(jnp.float32), labels)
        return loss * scale, loss

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def micro_step(params, opt_state, images, labels):
        # scaler.scale(loss).backward(): the gradient of the scaled loss, through float16.
        scale = optkit.loss_scale(opt_state)
        grads, loss = jax.grad(scaled_loss, has_aux=True)(params, images, labels, scale)
        grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
        # Every k-th call unscales, clips, steps AdamW (unless the gradients overflowed), grows
        # or backs off the scale and updates the EMA; the others accumulate.
        updates, opt_state = tx.update(grads, opt_state, params)
        return optkit.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def accuracy(params, images, labels):
        logits = model.apply({"params": params}, images)
        return jnp.mean(jnp.argmax(logits, axis=-1) == labels)

    history: dict[str, Any] = {
        "loss": [],
        "scale": [],
        "skipped_now": [],
        "test_accuracy": [],
        "ema_test_accuracy": [],
    }
    rng = np.random.default_rng(args.seed)
    scale_before = float(optkit.loss_scale(opt_state))
    for _ in range(epochs):
        order = rng.permutation(len(x_train))
        window = []
        for i in range(micro_batches_per_epoch):
            batch = order[i * MICRO_BATCH : (i + 1) * MICRO_BATCH]
            params, opt_state, loss = micro_step(params, opt_state, x_train[batch], y_train[batch])
            window.append(loss)
            if optkit.optimizer_stepped(opt_state):
                # The scaler backs off exactly when it skips the step.
                scale = float(optkit.loss_scale(opt_state))
                history["loss"].append(float(jnp.mean(jnp.stack(window))))
                history["scale"].append(scale)
                history["skipped_now"].append(scale < scale_before)
                scale_before, window = scale, []
        history["test_accuracy"].append(float(accuracy(params, x_test, y_test)))
        averaged = optkit.get_averaged_params(opt_state)
        history["ema_test_accuracy"].append(float(accuracy(averaged, x_test, y_test)))

    out = args.out / FIGURE
    plot(history, out)
    metrics = {
        "epochs": epochs,
        "optimizer_steps": len(history["loss"]),
        "skipped_steps": int(sum(history["skipped_now"])),
        "initial_loss": history["loss"][0],
        "final_loss": float(np.mean(history["loss"][-10:])),
        "test_accuracy": history["test_accuracy"][-1],
        "ema_test_accuracy": history["ema_test_accuracy"][-1],
        "final_scale": history["scale"][-1],
        "history": history,
        "seconds": time.perf_counter() - start,
    }
    print(
        f"{metrics['optimizer_steps']} optimizer steps ({metrics['skipped_steps']} skipped) | "
        f"test accuracy {metrics['test_accuracy']:.4f}, EMA {metrics['ema_test_accuracy']:.4f} | "
        f"loss scale {metrics['final_scale']:g} | {metrics['seconds']:.1f}s -> {out}"
    )
    return metrics


if __name__ == "__main__":
    main()
