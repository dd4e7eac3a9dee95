"""Combinators that route leaves to transforms. The public names live in ``optkit``."""
