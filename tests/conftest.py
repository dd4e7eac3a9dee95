"""Test-session set-up: float64 is enabled so parity can be checked to 1e-10.

float32 behaviour is tested with explicit float32 arrays; the default-precision (x64 off) path is
exercised in a subprocess by tests/optimizers/test_default_precision.py.
"""

import jax

jax.config.update("jax_enable_x64", True)
