"""torch's two parameter-group examples on a Flax model, and changing a group's lr mid-training.

The optimizer notes this project started from show two uses of torch's parameter groups::

    # 1. A larger learning rate for the pretrained base than for the new classifier head.
    optim.SGD([{'params': model.base.parameters(), 'lr': 1e-2},
               {'params': model.classifier.parameters()}], lr=1e-3, momentum=0.9)

    # 2. Weight decay on the weights but not on the biases.
    optim.SGD([{'params': others}, {'params': bias_params, 'weight_decay': 0}],
              weight_decay=1e-2, lr=1e-2)

``optkit.param_groups`` takes the same list, with each group's ``"params"`` a selector over the
leaf paths of the parameter tree (``base/Dense_0/kernel``, ``classifier/bias``, ...) instead of
a list of tensors. Wrapping the optimizer in ``optkit.inject_hyperparams`` keeps each group's
hyperparameters in the optimizer state, where ``optkit.get_hyperparams(state, group=i)`` reads
them (torch's ``optimizer.param_groups[i]``) and ``optkit.set_hyperparams`` changes them
(torch's ``optimizer.param_groups[i]['lr'] = x``) without recompiling the jitted step.

The model is an MLP on scikit-learn's 8x8 digits, split into a ``base`` feature extractor and a
``classifier`` head, as in the torch example.

Run it::

    python examples/param_groups.py          # 20 epochs per example
    python examples/param_groups.py --quick  # 2 epochs, used by the test suite
"""

from __future__ import annotations

import argparse
import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm
from train_digits import cross_entropy, load_data

import optkit

DEFAULT_EPOCHS = 20
QUICK_EPOCHS = 2
# Small batches give plain SGD at lr 1e-2 (the second torch example) enough steps to learn.
BATCH_SIZE = 16


class Base(nn.Module):
    """The feature extractor (a pretrained backbone in the torch example)."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        x = nn.relu(nn.Dense(128)(x))
        return nn.relu(nn.Dense(64)(x))


class Net(nn.Module):
    """``model.base`` and ``model.classifier``, as in the torch example."""

    num_classes: int = 10

    def setup(self) -> None:
        self.base = Base()
        self.classifier = nn.Dense(self.num_classes)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.classifier(self.base(x))


def leaf_paths(tree: Any) -> list[str]:
    """The ``/``-joined leaf paths that optkit's selectors see, e.g. ``base/Dense_0/kernel``."""
    return ["/".join(str(k.key) for k in path) for path, _ in jax.tree.leaves_with_path(tree)]


def print_hyperparams(opt_state: Any, num_groups: int) -> list[dict[str, float]]:
    """Print and return each group's hyperparameters, as torch's ``optimizer.param_groups``."""
    groups = []
    for group in range(num_groups):
        values = {k: float(v) for k, v in optkit.get_hyperparams(opt_state, group=group).items()}
        print(f"  param_groups[{group}]: " + ", ".join(f"{k}={v:g}" for k, v in values.items()))
        groups.append(values)
    return groups


def one_step_changes(
    tx: optkit.GradientTransformation, params: Any, opt_state: Any, gradient: float
) -> dict[str, float]:
    """How far one update moves each leaf (mean absolute change) when every gradient is
    ``gradient``: shows which hyperparameters each leaf really gets."""
    grads = jax.tree.map(lambda p: jnp.full_like(p, gradient), params)
    updates, _ = tx.update(grads, opt_state, params)
    return {
        path: float(jnp.mean(jnp.abs(u)))
        for path, u in zip(leaf_paths(params), jax.tree.leaves(updates), strict=True)
    }


def fit(
    model: nn.Module,
    tx: optkit.GradientTransformation,
    params: Any,
    data: tuple[np.ndarray, ...],
    epochs: int,
    seed: int,
    description: str,
    before_epoch: Callable[[int, Any], Any] | None = None,
) -> dict[str, Any]:
    """Train with minibatches; ``before_epoch(epoch, opt_state)`` may return a changed state."""
    x_train, x_test, y_train, y_test = data
    compilations = 0

    @functools.partial(jax.jit, donate_argnums=(0, 1))
    def train_step(params, opt_state, images, labels):
        nonlocal compilations
        compilations += 1  # runs only while jax traces the function, i.e. once per compilation

        def loss_fn(params):
            return cross_entropy(model.apply({"params": params}, images), labels)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optkit.apply_updates(params, updates), opt_state, loss

    @jax.jit
    def evaluate(params, images, labels):
        logits = model.apply({"params": params}, images)
        return cross_entropy(logits, labels), jnp.mean(jnp.argmax(logits, axis=-1) == labels)

    opt_state = tx.init(params)
    initial_loss = float(evaluate(params, x_train, y_train)[0])
    rng = np.random.default_rng(seed)
    steps_per_epoch = len(x_train) // BATCH_SIZE
    progress = tqdm(range(epochs), desc=description, unit="epoch")
    for epoch in progress:
        if before_epoch is not None:
            opt_state = before_epoch(epoch, opt_state)
        order = rng.permutation(len(x_train))
        for i in range(steps_per_epoch):
            batch = order[i * BATCH_SIZE : (i + 1) * BATCH_SIZE]
            params, opt_state, loss = train_step(params, opt_state, x_train[batch], y_train[batch])
        progress.set_postfix(loss=f"{float(loss):.4f}")
    final_loss = float(evaluate(params, x_train, y_train)[0])
    test_accuracy = float(evaluate(params, x_test, y_test)[1])
    print(
        f"  train loss {initial_loss:.4f} -> {final_loss:.4f}, test accuracy "
        f"{test_accuracy:.4f}, train_step compiled {compilations} time(s)"
    )
    return {
        "initial_train_loss": initial_loss,
        "final_train_loss": final_loss,
        "test_accuracy": test_accuracy,
        "compilations": compilations,
        "opt_state": opt_state,
    }


def base_and_classifier(
    model: nn.Module, params: Any, data: tuple[np.ndarray, ...], epochs: int, seed: int
) -> dict[str, Any]:
    """torch example 1, then torch's ``param_groups[0]['lr'] = 1e-3`` halfway through."""
    print("\n1. base lr 1e-2, classifier lr 1e-3 (the default), momentum 0.9 for both")
    tx = optkit.param_groups(
        optkit.inject_hyperparams(optkit.sgd),
        [
            {"params": "base/**", "learning_rate": 1e-2},  # model.base.parameters()
            {"params": "classifier/**"},  # model.classifier.parameters()
        ],
        learning_rate=1e-3,
        momentum=0.9,
    )
    opt_state = tx.init(params)
    hyperparams = print_hyperparams(opt_state, num_groups=2)
    # With momentum's buffer starting at the gradient, the first step is lr * gradient.
    changes = one_step_changes(tx, params, opt_state, gradient=1.0)
    print("  first step with every gradient = 1 (the step is the group's lr):")
    for path, change in changes.items():
        print(f"    {path:<22} {change:.0e}")

    switch_epoch = epochs // 2
    lr_after_switch = []

    def lower_base_lr(epoch: int, opt_state: Any) -> Any:
        if epoch != switch_epoch:
            return opt_state
        # torch: optimizer.param_groups[0]["lr"] = 1e-3
        opt_state = optkit.set_hyperparams(opt_state, group=0, learning_rate=1e-3)
        tqdm.write(f"  epoch {epoch}: set_hyperparams(opt_state, group=0, learning_rate=1e-3)")
        lr_after_switch.extend(
            float(optkit.get_hyperparams(opt_state, group=g)["learning_rate"]) for g in (0, 1)
        )
        return opt_state

    result = fit(model, tx, params, data, epochs, seed, "base/classifier", lower_base_lr)
    print_hyperparams(result.pop("opt_state"), num_groups=2)
    return {
        "hyperparams": hyperparams,
        "first_step": changes,
        "learning_rates_after_set": lr_after_switch,
        **result,
    }


def no_bias_decay(
    model: nn.Module, params: Any, data: tuple[np.ndarray, ...], epochs: int, seed: int
) -> dict[str, Any]:
    """torch example 2: weight decay 1e-2 on every leaf but the biases."""
    print("\n2. weight decay 1e-2, none on the biases, lr 1e-2")
    tx = optkit.param_groups(
        optkit.inject_hyperparams(optkit.sgd),
        [
            {"params": lambda path, leaf: "bias" not in path},  # others
            {"params": lambda path, leaf: "bias" in path, "weight_decay": 0.0},  # bias_params
        ],
        weight_decay=1e-2,
        learning_rate=1e-2,
    )
    opt_state = tx.init(params)
    hyperparams = print_hyperparams(opt_state, num_groups=2)
    # With zero gradients only weight decay moves the params: lr * weight_decay * |p|.
    changes = one_step_changes(tx, params, opt_state, gradient=0.0)
    print("  first step with every gradient = 0 (only weight decay moves a leaf):")
    for path, change in changes.items():
        print(f"    {path:<22} {change:.1e}")
    result = fit(model, tx, params, data, epochs, seed, "no bias decay")
    result.pop("opt_state")
    return {"hyperparams": hyperparams, "first_step": changes, **result}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=None, help=f"default {DEFAULT_EPOCHS}")
    parser.add_argument("--seed", type=int, default=0, help="data split, init and shuffling")
    parser.add_argument(
        "--quick", action="store_true", help=f"short run ({QUICK_EPOCHS} epochs) for tests"
    )
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run both examples; return their hyperparameters, first-step changes and metrics."""
    args = parse_args(argv)
    epochs = args.epochs
    if epochs is None:
        epochs = QUICK_EPOCHS if args.quick else DEFAULT_EPOCHS
    start = time.perf_counter()
    data = load_data(args.seed)
    model = Net()
    params = model.init(jax.random.key(args.seed), data[0][:1])["params"]
    print("parameter leaves:", ", ".join(leaf_paths(params)))
    # Each run donates its params to the jitted step, so each gets its own copy.
    results = {
        "base_and_classifier": base_and_classifier(
            model, jax.tree.map(jnp.copy, params), data, epochs, args.seed
        ),
        "no_bias_decay": no_bias_decay(
            model, jax.tree.map(jnp.copy, params), data, epochs, args.seed
        ),
    }
    results["epochs"] = epochs
    results["seconds"] = time.perf_counter() - start
    print(f"\ndone in {results['seconds']:.1f}s")
    return results


if __name__ == "__main__":
    main()
