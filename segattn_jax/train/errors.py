"""Errors the command line reports as one clear line (kept free of heavy imports)."""


class NonFiniteLossError(RuntimeError):
    """The loss or gradient became NaN/inf; the run stopped without saving the bad state."""
