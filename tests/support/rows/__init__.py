"""The registry's rows, one module per algorithm (as ``optkit/optimizers/``), each ending in
``ROWS``. ``tests/support/registry.py`` collects them in the order of ``MODULES`` there.

Conventions shared by the rows: learning rates are chosen so that 30 parity steps move every
leaf noticeably while float32 stays well conditioned (no chaotic amplification of rounding
differences); rows with maximize use smaller learning rates, since gradient ascent on the mostly
convex parity losses amplifies any difference, rounding included, at every step.
"""
