"""Where a train step's compile time goes: tracing+lowering, XLA's HLO passes, and the backend.

python -m benchmarks.phases --leaves 1000,2000 --optimizer adamw --out benchmarks/results/cpu-phases

Each configuration is compiled cold in a fresh process with XLA's per-pass timing logs on
(``TF_CPP_VMODULE=cpu_compiler=1,hlo_pass_pipeline=1``), so the logs of one never mix with
another's. The parent parses them into: trace+lower (JAX), HLO passes (XLA's optimization
pipeline), backend (buffer assignment, thunk and LLVM code generation, the executable), and the
rest of ``compile()`` (StableHLO to HLO conversion, PjRt). The configurations are the train step
of ``benchmarks.run`` with optkit's two paths and optax, and the floor step (``p - lr * g``).
The CPU compiler's log lines are parsed; on other backends only lower and compile are reported.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

CONFIGS = ("floor", "optkit", "optkit.flatten", "optax")
# Opt-in (--configs): optkit.flatten(optkit.sgd(lr)), the least any flat path compiles.
FLAT_FLOOR = "flatten.floor"
# Opt-in (--configs): bare programs over the leaves, no loss, no optimizer. "independent": each
# output from its own leaf only; "gather": each output also reads one value computed from the
# concatenation of all leaves, the dependency shape every flat layout has.
SHAPES = ("shape.independent", "shape.gather")
# Opt-in (--configs), whatever --optimizer says: torch's Adam with each leaf's two moments packed
# in one complex buffer, two outputs per leaf instead of three (see packed_adam).
PACKED_ADAM = "adam.packed"
LOG_ENV = {
    "TF_CPP_MIN_LOG_LEVEL": "0",
    "TF_CPP_VMODULE": "cpu_compiler=1,hlo_pass_pipeline=1",
}
_PASS = re.compile(r"HLO pass: (\S+) time: .*?\((\d+) us\)")
_PASSES_TOTAL = re.compile(r"Running HLO passes on \[jit_step\] for CPU time: .*?\((\d+) us\)")
_BACKEND = re.compile(r"Compiling \[jit_step\] for CPU using JIT time: .*?\((\d+) us\)")


def child(leaves: int, leaf_size: int, config: str, optimizer: str) -> None:
    """Compile one configuration cold and print its lower and compile seconds as JSON."""
    from benchmarks import measure
    from benchmarks.pairs import APPLY_UPDATES, LEARNING_RATE, PAIRS
    from benchmarks.workloads import many_leaves

    measure.disable_compilation_cache()
    tree = many_leaves(leaves, leaf_size).tree
    if config in SHAPES:
        compiled = measure.cold_compile(_shape_step(config), (tree, tree), (0,))
    elif config == "floor":
        compiled = measure.compile_floor_step(LEARNING_RATE, tree)
    elif config == FLAT_FLOOR:
        # The flat path with no optimizer arithmetic: concatenate the gradients, scale, split.
        import optkit

        tx = optkit.flatten(optkit.sgd(LEARNING_RATE))
        compiled = measure.compile_train_step(tx, APPLY_UPDATES["optkit.flatten"], tree)
    elif config == PACKED_ADAM:
        compiled = measure.compile_train_step(
            packed_adam(LEARNING_RATE), APPLY_UPDATES["optkit"], tree
        )
    else:
        tx = PAIRS[optimizer].factory(config)()
        compiled = measure.compile_train_step(tx, APPLY_UPDATES[config], tree)
    print(json.dumps({"lower_s": compiled.lower_s, "compile_s": compiled.compile_s}))


def _shape_step(config: str) -> Any:
    import jax
    import jax.numpy as jnp

    def step(params: Any, data: Any) -> Any:
        diffs = jax.tree.map(lambda p, x: p - x, params, data)
        if config == "shape.independent":
            return jax.tree.map(lambda p, d: p - 0.1 * d, params, diffs)
        shared = jnp.concatenate([jnp.ravel(d) for d in jax.tree.leaves(diffs)]) * -0.1
        return jax.tree.map(lambda p: p + shared[0], params)

    return step


@functools.cache
def _packed_adam_kernel() -> Any:
    """The per-leaf math of :func:`packed_adam`, lifted to trees by optkit's ``leaf_kernel``
    (built on first use: this module imports JAX only after setting XLA's flags)."""
    from typing import NamedTuple

    import jax
    import jax.numpy as jnp

    from optkit._kernel import leaf_kernel

    class PackedAdamLeaf(NamedTuple):
        update: jax.Array
        mu: jax.Array
        nu: jax.Array

    # The kernel sees the two moments as real arrays (a complex kernel input would be optimized
    # as a complex parameter, real and imaginary parts alike); `update` below packs them back.
    def _packed_adam(update, mu, nu, *, b1, b2, eps, step_size, root_bc2) -> PackedAdamLeaf:
        mu = mu + (update - mu) * (1 - b1)
        nu = nu * b2 + (1 - b2) * update * update
        step = -step_size * (mu / (jnp.sqrt(nu) / root_bc2 + eps))
        return PackedAdamLeaf(step, mu, nu)

    _packed_adam.__annotations__["return"] = PackedAdamLeaf
    return leaf_kernel(_packed_adam)


def packed_adam(learning_rate: float, b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Any:
    """torch's Adam (no weight decay) with one state buffer per leaf instead of two.

    Each leaf's first and second moments are the real and imaginary parts of one complex array
    (complex64 for float32 leaves: still 8 bytes per parameter), so a train step writes two
    outputs per leaf (param, moments) where the per-leaf layout writes three (param, mu, nu).
    Outputs per leaf are what XLA:CPU's compile time grows with (``docs/performance.md``); this
    measures whether halving the state outputs without a flat layout pays. The per-leaf math goes
    through optkit's per-leaf kernel machinery (one nested ``jax.jit`` per leaf type).
    """
    import jax
    import jax.numpy as jnp

    import optkit
    from optkit import _numerics

    def init(params: Any) -> tuple[Any, Any]:
        def zeros(p: Any) -> Any:
            return jnp.zeros(p.shape, jnp.result_type(p.dtype, jnp.complex64))

        return jnp.zeros((), jnp.int32), jax.tree.map(zeros, params)

    def update(grads: Any, state: tuple[Any, Any], params: Any = None) -> tuple[Any, Any]:
        del params
        count, moments = state
        count = count + 1
        # The same scalars as optkit.scale_by_adam, computed once per step.
        step_size = learning_rate / _numerics.bias_correction(b1, count)
        root_bc2 = jnp.sqrt(_numerics.bias_correction(b2, count))
        new = _packed_adam_kernel()(
            grads,
            jax.tree.map(jnp.real, moments),
            jax.tree.map(jnp.imag, moments),
            b1=b1,
            b2=b2,
            eps=eps,
            step_size=step_size,
            root_bc2=root_bc2,
        )
        return new.update, (count, jax.tree.map(jax.lax.complex, new.mu, new.nu))

    return optkit.GradientTransformation(init, update)


def parse_log(log: str) -> dict[str, Any]:
    """XLA's CPU compile phases from its log: the pass pipeline's total, the backend's, and the
    largest passes (a sub-pipeline such as ``simplification`` includes the passes it runs)."""
    passes: dict[str, float] = {}
    for name, micros in _PASS.findall(log):
        passes[name] = passes.get(name, 0.0) + int(micros) / 1e6
    totals = _PASSES_TOTAL.findall(log)
    backend = _BACKEND.findall(log)
    largest = sorted(passes.items(), key=lambda item: -item[1])[:6]
    return {
        "hlo_passes_s": sum(int(m) for m in totals) / 1e6 if totals else None,
        "backend_s": sum(int(m) for m in backend) / 1e6 if backend else None,
        "largest_passes_s": dict(largest),
    }


def measure_config(leaves: int, leaf_size: int, config: str, optimizer: str) -> dict[str, Any]:
    command = [sys.executable, "-m", "benchmarks.phases", "--child"]
    command += [f"--leaves={leaves}", f"--leaf-size={leaf_size}", f"--optimizer={optimizer}"]
    command += [f"--config={config}"]
    done = subprocess.run(
        command,
        env={**os.environ, **LOG_ENV},
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    timing = json.loads(done.stdout.strip().splitlines()[-1])
    phases = parse_log(done.stderr)
    known = (phases["hlo_passes_s"] or 0.0) + (phases["backend_s"] or 0.0)
    phases["rest_of_compile_s"] = timing["compile_s"] - known if phases["backend_s"] else None
    return {"leaves": leaves, "config": config, "optimizer": optimizer, **timing, **phases}


def _cell(value: float | None) -> str:
    return "–" if value is None else f"{value:.2f}"


def render(results: dict[str, Any]) -> str:
    m = results["machine"]
    lines = [
        f"# Compile phases: {results['optimizer']}, trees of {results['leaf_size']}-float leaves",
        "",
        f"- {m['date']}, {m['cpu_model']}, {m['cpu_cores_available']} cores, "
        f"{m['backend']}; git {m.get('git_commit') or '?'}",
        "- " + ", ".join(f"{name} {version}" for name, version in m["versions"].items()),
        f"- command: `{m['command']}`",
        "",
        "Seconds of one cold compile per configuration, each in a fresh process. `floor` is the "
        "same train step with `p - lr * g` and no optimizer state; `flatten.floor` is "
        "`optkit.flatten(optkit.sgd(lr))`, the flat path with no optimizer arithmetic; "
        "`adam.packed` is Adam with each leaf's two moments in one complex buffer.",
        "",
        "| leaves | config | trace+lower | HLO passes | backend | rest of compile | total "
        "| largest passes |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in results["rows"]:
        largest = ", ".join(f"{name} {sec:.2f}" for name, sec in row["largest_passes_s"].items())
        total = row["lower_s"] + row["compile_s"]
        lines.append(
            f"| {row['leaves']} | {row['config']} | {_cell(row['lower_s'])} "
            f"| {_cell(row['hlo_passes_s'])} | {_cell(row['backend_s'])} "
            f"| {_cell(row['rest_of_compile_s'])} | {_cell(total)} | {largest} |"
        )
    return "\n".join(lines) + "\n"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leaves", default="1000,2000", help="comma-separated leaf counts")
    parser.add_argument("--leaf-size", type=int, default=4000)
    parser.add_argument("--optimizer", default="adamw", help="a pair of benchmarks/pairs.py")
    parser.add_argument("--configs", default=",".join(CONFIGS))
    parser.add_argument("--out", type=Path, default=None, help="folder for JSON and markdown")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    args = parse_args(argv)
    if args.child:
        child(int(args.leaves), args.leaf_size, args.config, args.optimizer)
        return None
    from benchmarks import machine

    command = sys.argv[1:] if argv is None else argv
    info = machine.describe(command)
    info["command"] = shlex.join(["python", "-m", "benchmarks.phases", *command])
    results = {"optimizer": args.optimizer, "leaf_size": args.leaf_size, "machine": info}
    results["rows"] = []
    for leaves in (int(n) for n in args.leaves.split(",")):
        for config in args.configs.split(","):
            row = measure_config(leaves, args.leaf_size, config, args.optimizer)
            results["rows"].append(row)
            print(
                f"{leaves} {config}: lower {row['lower_s']:.2f} compile {row['compile_s']:.2f} "
                f"(passes {_cell(row['hlo_passes_s'])}, backend {_cell(row['backend_s'])})",
                file=sys.stderr,
                flush=True,
            )
    markdown = render(results)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "phases.json").write_text(json.dumps(results, indent=2) + "\n")
        (args.out / "phases.md").write_text(markdown)
    print(markdown)
    return results


if __name__ == "__main__":
    main()
