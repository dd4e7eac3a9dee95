"""Interoperation with other frameworks' files: torch optimizer checkpoints
(:mod:`optkit.interop.torch_state_dict`). The public functions are exported from ``optkit``."""
