"""Gradient-transformation primitives, grouped by idea. The public names live in ``optkit``."""
