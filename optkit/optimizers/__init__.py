"""One module per optimizer family, each a short chain of primitives.

The public names live in ``optkit``.
"""
