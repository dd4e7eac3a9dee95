"""The training loop around the optimizer: loss scaling, accumulation, averaging, clipping."""
