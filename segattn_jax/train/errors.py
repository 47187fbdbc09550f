"""Errors the command line reports as one clear line (kept free of heavy imports)."""


class NonFiniteLossError(RuntimeError):
    """The loss or gradient became NaN/inf; the run stopped without saving the bad state."""


class NoIntactCheckpointError(RuntimeError):
    """Checkpoints exist but none can be restored; `unreadable` maps step -> what failed."""

    def __init__(self, directory, unreadable: dict[int, str], advice: str = ""):
        self.directory, self.unreadable = directory, unreadable
        reasons = "; ".join(f"step {step}: {why}" for step, why in unreadable.items())
        super().__init__(f"No checkpoint in {directory} can be restored ({reasons}). {advice}"
                         .strip())
