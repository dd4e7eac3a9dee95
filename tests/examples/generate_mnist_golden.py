"""torch's side of the MNIST-example parity case, and its golden file.

``examples/mnist_adadelta.py`` ports PyTorch's ``mnist/main.py``; ``test_mnist_adadelta.py``
checks that the port trains exactly as torch does. This module runs torch: ``main.py``'s ``Net``
(with ``fc1`` taking the 2x2x64 features of an 8x8 image), initialized by torch from a fixed
seed, trained in float64 with ``optim.Adadelta(lr=1.0)`` and ``StepLR(step_size=1, gamma=0.7)``
stepped after every epoch, on the example's digits, in the example's minibatch order, with
dropout masks drawn by numpy from a fixed seed (torch and Flax get the same masks).

Regenerate the golden file (needed when the case, the example's data or torch changes), from the
repository root::

    python -m tests.examples.generate_mnist_golden

It writes ``tests/examples/golden/mnist_adadelta.npz``: torch's initial weights (float32 values,
exact: torch initializes in float32 before the model is cast to float64), the loss and learning
rate of every step, the final weights (float64), the torch version and the case as JSON.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

GOLDEN = Path(__file__).resolve().parent / "golden" / "mnist_adadelta.npz"

SEED = 0  # data split, torch's initialization and the batch order
MASK_SEED = 1  # the dropout masks
BATCH_SIZE = 32  # smaller than the example's 64: 42 steps per epoch
EPOCHS = 2  # StepLR decays once in between
LAYERS = ("conv1", "conv2", "fc1", "fc2")
POOLED = (64, 2, 2)  # channels, height, width after the pool: fc1's 256 inputs


def spec() -> str:
    """The case as canonical JSON; stored with the golden to detect a stale file."""
    return json.dumps(
        {"seed": SEED, "mask_seed": MASK_SEED, "batch_size": BATCH_SIZE, "epochs": EPOCHS},
        sort_keys=True,
    )


@dataclasses.dataclass(frozen=True)
class Step:
    """One minibatch: its example indices and the dropout keep-masks in NHWC (Flax) layout."""

    batch: np.ndarray  # (batch,) indices into the training set
    conv_mask: np.ndarray  # (batch, 2, 2, 64) bool
    dense_mask: np.ndarray  # (batch, 128) bool


def make_case(example: Any) -> tuple[np.ndarray, np.ndarray, list[Step], int]:
    """float64 training images (NHWC) and labels, every step's batch and masks, and the number
    of steps per epoch, from the example's own data and batch order."""
    x_train, _, y_train, _ = example.load_data(SEED)
    order = np.random.default_rng(SEED)
    masks = np.random.default_rng(MASK_SEED)
    steps = []
    for _ in range(EPOCHS):
        for batch in example.epoch_batches(order, len(x_train), BATCH_SIZE):
            height_width_channels = (POOLED[1], POOLED[2], POOLED[0])
            conv = masks.random((BATCH_SIZE, *height_width_channels)) >= example.CONV_DROPOUT
            dense = masks.random((BATCH_SIZE, 128)) >= example.DENSE_DROPOUT
            steps.append(Step(batch, conv, dense))
    return x_train.astype(np.float64), y_train, steps, len(x_train) // BATCH_SIZE


def flax_params(weights: dict[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    """torch's state dict as the example's Flax params.

    Conv weights are OIHW in torch and HWIO in Flax; Linear weights are (out, in) and Dense
    kernels (in, out). fc1 also reads the pooled features in a different order: torch flattens
    NCHW as (c, h, w), Flax flattens NHWC as (h, w, c). Biases have the same layout in both.
    """
    fc1 = weights["fc1.weight"].reshape(128, *POOLED).transpose(2, 3, 1, 0).reshape(-1, 128)
    kernels = {
        "conv1": weights["conv1.weight"].transpose(2, 3, 1, 0),
        "conv2": weights["conv2.weight"].transpose(2, 3, 1, 0),
        "fc1": fc1,
        "fc2": weights["fc2.weight"].T,
    }
    return {layer: {"kernel": kernels[layer], "bias": weights[f"{layer}.bias"]} for layer in LAYERS}


def run_torch() -> dict[str, Any]:
    """torch's run of the case: initial and final weights (state dict layout), and the loss and
    learning rate of every step."""
    import torch

    # One thread: on a shared 2-core machine, two threads make these small convolutions ~5x
    # slower.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return _run_torch(torch)
    finally:
        torch.set_num_threads(threads)


def _run_torch(torch: Any) -> dict[str, Any]:
    import torch.nn.functional as F

    from tests.support.examples import load_example

    example = load_example("mnist_adadelta")
    images, labels, steps, steps_per_epoch = make_case(example)

    def dropout(x: Any, keep: Any, rate: float) -> Any:
        return torch.where(keep, x / (1.0 - rate), torch.zeros_like(x))

    class Net(torch.nn.Module):
        """mnist/main.py's Net on 8x8 images; dropout applies the given keep-masks."""

        def __init__(self) -> None:
            super().__init__()
            self.conv1 = torch.nn.Conv2d(1, 32, 3, 1)
            self.conv2 = torch.nn.Conv2d(32, 64, 3, 1)
            self.fc1 = torch.nn.Linear(int(np.prod(POOLED)), 128)
            self.fc2 = torch.nn.Linear(128, 10)

        def forward(self, x: Any, conv_mask: Any, dense_mask: Any) -> Any:
            x = F.relu(self.conv1(x))
            x = F.relu(self.conv2(x))
            x = F.max_pool2d(x, 2)
            x = dropout(x, conv_mask, example.CONV_DROPOUT)
            x = torch.flatten(x, 1)
            x = F.relu(self.fc1(x))
            x = dropout(x, dense_mask, example.DENSE_DROPOUT)
            x = self.fc2(x)
            return F.log_softmax(x, dim=1)

    torch.manual_seed(SEED)
    model = Net().double()  # initialized in float32, then cast: the values stay exact
    initial = {name: p.detach().numpy().copy() for name, p in model.state_dict().items()}
    optimizer = torch.optim.Adadelta(model.parameters(), lr=example.LEARNING_RATE)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=example.GAMMA)
    nchw = torch.tensor(images.transpose(0, 3, 1, 2))
    targets = torch.tensor(labels, dtype=torch.int64)
    losses, learning_rates = [], []
    for k, step in enumerate(steps):
        learning_rates.append(optimizer.param_groups[0]["lr"])
        optimizer.zero_grad()
        batch = torch.tensor(step.batch)
        conv_mask = torch.tensor(step.conv_mask.transpose(0, 3, 1, 2))  # NHWC -> NCHW
        output = model(nchw[batch], conv_mask, torch.tensor(step.dense_mask))
        loss = F.nll_loss(output, targets[batch])
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if (k + 1) % steps_per_epoch == 0:
            scheduler.step()  # after each epoch, as main.py does
    final = {name: p.detach().numpy().copy() for name, p in model.state_dict().items()}
    return {
        "torch_version": torch.__version__,
        "initial": initial,
        "final": final,
        "losses": np.array(losses),
        "learning_rates": np.array(learning_rates),
    }


def load_golden() -> dict[str, Any]:
    """The stored torch run, in :func:`run_torch`'s form, plus its ``spec``."""
    with np.load(GOLDEN, allow_pickle=False) as data:
        arrays = {key: data[key] for key in data.files}
    return {
        "torch_version": str(arrays["torch_version"]),
        "spec": str(arrays["spec"]),
        "initial": {
            k.removeprefix("initial:"): v.astype(np.float64)
            for k, v in arrays.items()
            if k.startswith("initial:")
        },
        "final": {k.removeprefix("final:"): v for k, v in arrays.items() if k.startswith("final:")},
        "losses": arrays["losses"],
        "learning_rates": arrays["learning_rates"],
    }


def main() -> None:
    run = run_torch()
    initial32 = {name: value.astype(np.float32) for name, value in run["initial"].items()}
    for name, value in initial32.items():  # float32 storage must lose nothing
        np.testing.assert_array_equal(value.astype(np.float64), run["initial"][name])
    GOLDEN.parent.mkdir(exist_ok=True)
    np.savez_compressed(
        GOLDEN,
        torch_version=np.array(run["torch_version"]),
        spec=np.array(spec()),
        losses=run["losses"],
        learning_rates=run["learning_rates"],
        **{f"initial:{name}": value for name, value in initial32.items()},
        **{f"final:{name}": value for name, value in run["final"].items()},
    )
    print(f"wrote {GOLDEN} ({GOLDEN.stat().st_size / 1024:.0f} KiB)")


if __name__ == "__main__":
    if not __package__:
        sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    main()
