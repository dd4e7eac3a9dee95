"""Train the same MLP on the 8x8 digits with each torch.optim optimizer and plot the loss curves.

Every optimizer starts from the same initial weights and sees the same minibatches in the same
order, so the curves differ only by the update rule: SGD, SGD with momentum, Nesterov momentum,
Adam, AdamW, Adagrad and RMSprop, each with a learning rate that suits it (the torch call each
one reproduces is in the legend). The model and data are those of ``train_digits.py``.

RMSprop and Adagrad drop the loss fastest at first; momentum and Nesterov keep pace with Adam
for about half the run; plain SGD trails throughout. AdamW's curve lies on Adam's: its
decoupled decay shrinks the weights by ``lr * weight_decay = 1e-5`` per step, too little to
show in 30 epochs.

Run it::

    python examples/compare_optimizers.py          # 30 epochs, about 30 s on 2 CPU cores
    python examples/compare_optimizers.py --quick  # 2 epochs, used by the test suite

It writes ``compare_optimizers.png`` to ``outputs/`` (gitignored; ``--out DIR`` for another
folder). The figure in the docs is regenerated with a full run (never ``--quick``)::

    python examples/compare_optimizers.py --out docs/images
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.figure import Figure
from tqdm.auto import tqdm
from train_digits import MLP, cross_entropy, load_data

import optkit

DEFAULT_EPOCHS = 30
QUICK_EPOCHS = 2
BATCH_SIZE = 64
# Outputs go to a gitignored folder; the docs figure is regenerated with --out docs/images.
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "outputs"
FIGURE = "compare_optimizers.png"

# (label, optkit factory, hyperparameters): each row is torch.optim.<Class>(params, **kwargs)
# with lr renamed learning_rate.
OPTIMIZERS: list[tuple[str, Callable[..., optkit.GradientTransformation], dict[str, Any]]] = [
    ("SGD", optkit.sgd, {"learning_rate": 0.1}),
    ("SGD momentum", optkit.sgd, {"learning_rate": 0.02, "momentum": 0.9}),
    ("SGD Nesterov", optkit.sgd, {"learning_rate": 0.02, "momentum": 0.9, "nesterov": True}),
    ("Adam", optkit.adam, {"learning_rate": 1e-3}),
    ("AdamW", optkit.adamw, {"learning_rate": 1e-3, "weight_decay": 1e-2}),
    ("Adagrad", optkit.adagrad, {"learning_rate": 1e-2}),
    ("RMSprop", optkit.rmsprop, {"learning_rate": 1e-3}),
]
COLORS = ["#7f7f7f", "#1f77b4", "#17becf", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd"]
# Nesterov tracks plain momentum closely and AdamW's small decay keeps it on Adam's curve:
# dashed lines keep both visible.
LINESTYLES = ["-", "-", "--", "-", "--", "-", "-"]


def torch_call(name: str, kwargs: dict[str, Any]) -> str:
    """The torch constructor a row reproduces, e.g. ``SGD(lr=0.02, momentum=0.9)``."""
    torch_class = name.split()[0]
    args = ", ".join(
        f"{'lr' if key == 'learning_rate' else key}={value:g}"
        if not isinstance(value, bool)
        else f"{key}={value}"
        for key, value in kwargs.items()
    )
    return f"{torch_class}({args})"


def train(
    model: MLP,
    tx: optkit.GradientTransformation,
    params: Any,
    batches: np.ndarray,
    data: tuple[np.ndarray, ...],
    evaluate: Callable[..., tuple[jax.Array, jax.Array]],
    progress: tqdm,
) -> dict[str, list[float]]:
    """Run ``tx`` over ``batches`` (epochs x steps x batch indices) and record its curves."""
    x_train, x_test, y_train, y_test = data

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, images, labels):
        def loss_fn(params):
            return cross_entropy(model.apply({"params": params}, images), labels)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optkit.apply_updates(params, updates), opt_state, loss

    opt_state = tx.init(params)
    train_loss = [float(evaluate(params, x_train, y_train)[0])]
    test_accuracy = [float(evaluate(params, x_test, y_test)[1])]
    for epoch in batches:
        for batch in epoch:
            params, opt_state, _ = train_step(params, opt_state, x_train[batch], y_train[batch])
            # The loss over the whole training set after every step: smooth enough to compare.
            train_loss.append(float(evaluate(params, x_train, y_train)[0]))
            progress.update()
        test_accuracy.append(float(evaluate(params, x_test, y_test)[1]))
    return {"train_loss": train_loss, "test_accuracy": test_accuracy}


def plot(curves: dict[str, dict[str, list[float]]], steps_per_epoch: int, out: Path) -> None:
    fig = Figure(figsize=(12, 4.8), layout="constrained")
    loss_ax, accuracy_ax = fig.subplots(1, 2, width_ratios=[3, 2])
    for (name, _, kwargs), color, ls in zip(OPTIMIZERS, COLORS, LINESTYLES, strict=True):
        style = {"color": color, "linestyle": ls, "linewidth": 1.8}
        loss = curves[name]["train_loss"]
        accuracy = curves[name]["test_accuracy"]
        loss_ax.plot(
            np.arange(len(loss)) / steps_per_epoch, loss, label=torch_call(name, kwargs), **style
        )
        accuracy_ax.plot(np.arange(len(accuracy)), accuracy, **style)
    loss_ax.set(yscale="log", xlabel="epoch", ylabel="cross-entropy (log scale)")
    loss_ax.set_title("Training loss, whole training set after every step")
    loss_ax.grid(True, which="both", alpha=0.3)
    loss_ax.legend(loc="upper right", fontsize=9, title="torch.optim equivalent")
    accuracy_ax.set(xlabel="epoch", ylabel="accuracy", ylim=(0.85, 1.0))
    accuracy_ax.set_title("Test accuracy after every epoch")
    accuracy_ax.grid(True, alpha=0.3)
    fig.suptitle("Same MLP, same init, same minibatches: 8x8 digits (scikit-learn)")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=120)


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


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Train with every optimizer, plot the curves, print and return the final metrics."""
    args = parse_args(argv)
    epochs = args.epochs
    if epochs is None:
        epochs = QUICK_EPOCHS if args.quick else DEFAULT_EPOCHS
    start = time.perf_counter()

    data = load_data(args.seed)
    x_train = data[0]
    model = MLP()
    initial_params = model.init(jax.random.key(args.seed), x_train[:1])["params"]
    # One shuffle per epoch, shared by every optimizer.
    rng = np.random.default_rng(args.seed)
    steps_per_epoch = len(x_train) // BATCH_SIZE
    batches = np.stack(
        [
            rng.permutation(len(x_train))[: steps_per_epoch * BATCH_SIZE].reshape(
                steps_per_epoch, BATCH_SIZE
            )
            for _ in range(epochs)
        ]
    )

    @jax.jit
    def evaluate(params, images, labels):
        logits = model.apply({"params": params}, images)
        return cross_entropy(logits, labels), jnp.mean(jnp.argmax(logits, axis=-1) == labels)

    curves = {}
    with tqdm(total=len(OPTIMIZERS) * batches[..., 0].size, unit="step") as progress:
        for name, factory, kwargs in OPTIMIZERS:
            progress.set_description(name)
            # train_step donates its params, so each run gets its own copy of the initial weights.
            params = jax.tree.map(jnp.copy, initial_params)
            curves[name] = train(
                model, factory(**kwargs), params, batches, data, evaluate, progress
            )

    out = args.out / FIGURE
    plot(curves, steps_per_epoch, out)
    results = {
        name: {
            "initial_train_loss": curve["train_loss"][0],
            "final_train_loss": curve["train_loss"][-1],
            "test_accuracy": curve["test_accuracy"][-1],
        }
        for name, curve in curves.items()
    }
    width = max(len(name) for name in results)
    for name, result in results.items():
        print(
            f"{name:<{width}}  train loss {result['final_train_loss']:.4f}  "
            f"test accuracy {result['test_accuracy']:.4f}"
        )
    seconds = time.perf_counter() - start
    print(f"{epochs} epochs x {len(OPTIMIZERS)} optimizers in {seconds:.1f}s, plot: {out}")
    return {"epochs": epochs, "optimizers": results, "out": str(out), "seconds": seconds}


if __name__ == "__main__":
    main()
