"""Draw each optimizer's path on two classic 2-D test functions, Rosenbrock and Rastrigin.

The parameters are a single point ``(x, y)`` and the loss is the test function, so a training run
is a path on its contour map. Every optimizer starts from the same point, with a learning rate
chosen for it on that function (in the legend): one rate for all would leave some paths too short
to see and make others diverge. Below each map, the loss at every step.

- **Rosenbrock** ``(1 - x)^2 + 100 (y - x^2)^2``, constant learning rates: a long, narrow, curved
  valley with its minimum at (1, 1). The steep walls force plain SGD to take small steps: it
  zigzags down into the valley, then crawls along the flat floor. Momentum and Nesterov build up
  speed along the floor (Nesterov after a wide first swing) and reach the minimum; so does Adam,
  whose per-coordinate scaling evens out the steep and the flat directions. Adagrad's sum of
  squared gradients only grows, so its steps shrink until it stalls; RMSprop forgets old
  gradients and keeps moving, but its constant steps make it rattle in the valley; AdamW's
  decoupled weight decay pulls it towards the origin, so it settles short of the minimum.
- **Rastrigin** ``20 + sum(x_i^2 - 10 cos(2 pi x_i))``: a bowl covered in local minima, the global
  one at (0, 0). Gradient descent settles in whatever basin it is in when its steps become small,
  so the learning rate decides how far a path gets. Here it follows
  ``optkit.schedules.cosine_annealing_lr``: large steps first, to jump across basins, then small
  ones to settle in one. Where a path ends is chaotic in the learning rate (change one by 10% and
  it lands elsewhere); these rates keep every path on the map and show the range of outcomes,
  from stuck next to the start to one basin from the global minimum.

Run it::

    python examples/trajectories.py          # writes outputs/trajectories.png
    python examples/trajectories.py --quick  # a tenth of the steps, used by the test suite

``outputs/`` is gitignored (``--out DIR`` for another folder). The figure in the docs is
regenerated with a full run (never ``--quick``)::

    python examples/trajectories.py --out docs/images
"""

from __future__ import annotations

import argparse
import io
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from PIL import Image
from tqdm.auto import tqdm

import optkit

# Outputs go to a gitignored folder; the docs figure is regenerated with --out docs/images.
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "outputs"
FIGURE = "trajectories.png"


def rosenbrock(p: jax.Array) -> jax.Array:
    x, y = p[0], p[1]
    return (1.0 - x) ** 2 + 100.0 * (y - x**2) ** 2


def rastrigin(p: jax.Array) -> jax.Array:
    return 20.0 + jnp.sum(p**2 - 10.0 * jnp.cos(2.0 * jnp.pi * p))


class Problem(NamedTuple):
    """A test function, where to start, and how to draw it."""

    name: str
    loss: Callable[[jax.Array], jax.Array]
    start: tuple[float, float]
    minimum: tuple[float, float]
    steps: int
    hyperparams: dict[str, dict[str, Any]]
    """Per optimizer; ``learning_rate`` is the peak of the schedule when there is one."""
    cosine_schedule: bool
    window: tuple[float, float, float, float]
    """x_min, x_max, y_min, y_max of the map."""
    legend_loc: str
    """A corner that the paths leave free."""
    loss_scale: str
    """``"log"`` or ``"linear"``, for the loss-per-step panel."""


# (label, optkit factory); each reproduces the torch.optim class named first in its label.
OPTIMIZERS: list[tuple[str, Callable[..., optkit.GradientTransformation]]] = [
    ("SGD", optkit.sgd),
    ("SGD momentum", optkit.sgd),
    ("SGD Nesterov", optkit.sgd),
    ("Adam", optkit.adam),
    ("AdamW", optkit.adamw),
    ("Adagrad", optkit.adagrad),
    ("RMSprop", optkit.rmsprop),
]
COLORS = ["#7f7f7f", "#1f77b4", "#17becf", "#d62728", "#ff7f0e", "#2ca02c", "#9467bd"]
# Dashed: the variants that can run on top of their base optimizer's path.
LINESTYLES = ["-", "-", "--", "-", "--", "-", "-"]

PROBLEMS = [
    Problem(
        name="Rosenbrock",
        loss=rosenbrock,
        start=(-1.5, 2.5),
        minimum=(1.0, 1.0),
        steps=1000,
        hyperparams={
            "SGD": {"learning_rate": 1e-3},
            "SGD momentum": {"learning_rate": 1e-3, "momentum": 0.9},
            "SGD Nesterov": {"learning_rate": 1e-3, "momentum": 0.9, "nesterov": True},
            "Adam": {"learning_rate": 0.1},
            "AdamW": {"learning_rate": 0.1, "weight_decay": 0.1},
            "Adagrad": {"learning_rate": 0.3},
            "RMSprop": {"learning_rate": 0.01},
        },
        cosine_schedule=False,
        window=(-2.0, 2.0, -1.0, 3.0),
        legend_loc="upper right",
        loss_scale="log",
    ),
    Problem(
        name="Rastrigin",
        loss=rastrigin,
        start=(-2.2, 2.7),
        minimum=(0.0, 0.0),
        steps=300,
        hyperparams={
            "SGD": {"learning_rate": 0.012},
            "SGD momentum": {"learning_rate": 6e-3, "momentum": 0.9},
            "SGD Nesterov": {"learning_rate": 5e-3, "momentum": 0.9, "nesterov": True},
            "Adam": {"learning_rate": 0.6},
            "AdamW": {"learning_rate": 1.2, "weight_decay": 0.1},
            "Adagrad": {"learning_rate": 1.4},
            "RMSprop": {"learning_rate": 0.14},
        },
        cosine_schedule=True,
        window=(-4.0, 4.0, -4.0, 4.0),
        legend_loc="lower right",
        loss_scale="linear",
    ),
]


def label(name: str, hyperparams: dict[str, Any]) -> str:
    """``SGD Nesterov (lr=0.001, momentum=0.9)``: torch's ``lr`` for ``learning_rate``."""
    args = ", ".join(
        f"{'lr' if key == 'learning_rate' else key}={value:g}"
        for key, value in hyperparams.items()
        if not isinstance(value, bool)  # nesterov=True is in the name already
    )
    return f"{name} ({args})"


def optimize(
    tx: optkit.GradientTransformation,
    loss: Callable[[jax.Array], jax.Array],
    start: jax.Array,
    steps: int,
) -> jax.Array:
    """The path ``[start, p_1, ..., p_steps]`` of ``tx`` minimizing ``loss`` from ``start``."""

    def step(carry, _):
        point, opt_state = carry
        grads = jax.grad(loss)(point)
        updates, opt_state = tx.update(grads, opt_state, point)
        point = optkit.apply_updates(point, updates)
        return (point, opt_state), point

    # The whole run is one lax.scan: one compilation, no Python loop over the steps.
    _, path = jax.lax.scan(step, (start, tx.init(start)), length=steps)
    return jnp.concatenate([start[None], path])


def run_problem(problem: Problem, progress: tqdm) -> dict[str, np.ndarray]:
    """Every optimizer's path on ``problem``."""
    start = jnp.asarray(problem.start, dtype=jnp.float32)
    paths = {}
    for name, factory in OPTIMIZERS:
        progress.set_description(f"{problem.name}, {name}")
        hyperparams = dict(problem.hyperparams[name])
        if problem.cosine_schedule:
            hyperparams["learning_rate"] = optkit.schedules.cosine_annealing_lr(
                hyperparams["learning_rate"], T_max=problem.steps
            )
        run = jax.jit(optimize, static_argnums=(0, 1, 3))
        paths[name] = np.asarray(run(factory(**hyperparams), problem.loss, start, problem.steps))
        progress.update()
    return paths


def loss_surface(problem: Problem, resolution: int = 400) -> tuple[np.ndarray, ...]:
    """``(xs, ys, zs)``: the loss on a grid over the problem's window."""
    x_min, x_max, y_min, y_max = problem.window
    xs, ys = np.meshgrid(
        np.linspace(x_min, x_max, resolution), np.linspace(y_min, y_max, resolution)
    )
    points = jnp.stack([xs.ravel(), ys.ravel()], axis=1)
    zs = np.asarray(jax.vmap(problem.loss)(points)).reshape(xs.shape)
    return xs, ys, zs


def draw_paths(ax: Any, problem: Problem, paths: dict[str, np.ndarray]) -> None:
    xs, ys, zs = loss_surface(problem)
    # Log-spaced levels show the valley floor and the walls alike.
    levels = np.geomspace(max(zs.min(), 1e-1), zs.max(), 25)
    zs = np.maximum(zs, levels[0])
    ax.contourf(xs, ys, zs, levels=levels, norm=LogNorm(), cmap="Greys_r", alpha=0.3)
    ax.contour(xs, ys, zs, levels=levels, norm=LogNorm(), colors="0.6", linewidths=0.4)
    # Paths share stretches (Rosenbrock's valley floor): each is drawn thinner than the one
    # before, so overlapping paths show as nested stripes.
    widths = np.linspace(2.6, 1.2, len(OPTIMIZERS))
    for (name, _), color, linestyle, width in zip(
        OPTIMIZERS, COLORS, LINESTYLES, widths, strict=True
    ):
        path = paths[name]
        ax.plot(
            path[:, 0],
            path[:, 1],
            color=color,
            linestyle=linestyle,
            linewidth=width,
            label=label(name, problem.hyperparams[name]),
        )
        ax.plot(*path[-1], "o", color=color, markersize=7, markeredgecolor="black", zorder=4)
    markers = {"markeredgecolor": "black", "linestyle": "none", "zorder": 5}
    ax.plot(*problem.start, "o", color="white", markersize=11, label="start", **markers)
    ax.plot(*problem.minimum, "*", color="gold", markersize=20, label="global minimum", **markers)
    x_min, x_max, y_min, y_max = problem.window
    ax.set(xlim=(x_min, x_max), ylim=(y_min, y_max), xlabel="x", ylabel="y", aspect="equal")
    schedule = "lr cosine-annealed to 0" if problem.cosine_schedule else "constant lr"
    ax.set_title(f"{problem.name}: {problem.steps} steps, {schedule} (dots: end points)")
    ax.legend(loc=problem.legend_loc, fontsize=8.5, framealpha=0.92)


def draw_losses(ax: Any, problem: Problem, paths: dict[str, np.ndarray]) -> None:
    for (name, _), color, linestyle in zip(OPTIMIZERS, COLORS, LINESTYLES, strict=True):
        losses = np.asarray(jax.vmap(problem.loss)(jnp.asarray(paths[name])))
        ax.plot(losses, color=color, linestyle=linestyle, linewidth=1.5)
    ax.set(xlabel="step", ylabel=f"loss ({problem.loss_scale} scale)", xlim=(0, problem.steps))
    ax.set_yscale(problem.loss_scale)
    if problem.loss_scale == "linear":
        ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)


def save_png(fig: Figure, path: Path) -> None:
    """Save with a 256-colour palette: a fifth of the bytes of matplotlib's RGBA PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=100)
    image = Image.open(buffer).convert("RGB")
    palette = image.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.NONE)
    path.parent.mkdir(parents=True, exist_ok=True)
    palette.save(path, optimize=True)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=DEFAULT_OUT, help=f"folder for {FIGURE} (default: outputs/)"
    )
    parser.add_argument("--quick", action="store_true", help="a tenth of the steps, for tests")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run every optimizer on both functions, draw the figure, print and return the end points."""
    args = parse_args(argv)
    start_time = time.perf_counter()
    problems = [p._replace(steps=p.steps // 10) if args.quick else p for p in PROBLEMS]
    with tqdm(total=len(problems) * len(OPTIMIZERS), unit="run") as progress:
        all_paths = [run_problem(problem, progress) for problem in problems]

    fig = Figure(figsize=(15, 10.5), layout="constrained")
    axes = fig.subplots(2, len(problems), height_ratios=[3, 1])
    for column, (problem, paths) in enumerate(zip(problems, all_paths, strict=True)):
        draw_paths(axes[0, column], problem, paths)
        draw_losses(axes[1, column], problem, paths)
    out = args.out / FIGURE
    save_png(fig, out)

    results: dict[str, Any] = {}
    for problem, paths in zip(problems, all_paths, strict=True):
        print(f"{problem.name}, {problem.steps} steps from {problem.start}:")
        results[problem.name] = {}
        for name, path in paths.items():
            initial, final = (float(problem.loss(jnp.asarray(p))) for p in (path[0], path[-1]))
            x, y = path[-1].tolist()
            print(f"  {name:<13} loss {initial:7.3f} -> {final:9.2e} at ({x:+.3f}, {y:+.3f})")
            results[problem.name][name] = {
                "initial_loss": initial,
                "final_loss": final,
                "final_point": (x, y),
                "finite": bool(np.isfinite(path).all()),
            }
    seconds = time.perf_counter() - start_time
    print(f"done in {seconds:.1f}s, plot: {out}")
    return {"problems": results, "out": str(out), "seconds": seconds}


if __name__ == "__main__":
    main()
