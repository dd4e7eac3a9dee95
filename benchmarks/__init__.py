"""optkit's benchmark harness: optkit against optax on the same math, in the same process.

Run ``python -m benchmarks.run --help``; see ``benchmarks/README.md`` for what is measured and how.
"""
