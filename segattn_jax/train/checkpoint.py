"""Orbax checkpointing: async saves, keep N, restore the latest on start.

The loop decides when to save (after checking the loss is finite), so every save here is explicit
(`force=True`): orbax's default policy would also save at the first step and on preemption, behind
the loop's back.
"""
from __future__ import annotations

from typing import Any

import orbax.checkpoint as ocp
from absl import logging
from etils import epath


class Checkpointer:
    """A thin policy layer over `ocp.CheckpointManager` (args API, one StandardSave item)."""

    def __init__(self, directory: str | epath.Path, *, keep: int, create: bool = True):
        directory = epath.Path(directory)  # epath: local or gs:// alike
        self.directory = directory if "://" in str(directory) else directory.absolute()
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                               create=create)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def restore_latest(self, abstract_state: Any) -> Any | None:
        """The latest checkpoint restored into `abstract_state`'s structure and shardings, or None."""
        step = self._manager.latest_step()
        if step is None:
            return None
        try:
            state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(
                f"The checkpoint at step {step} in {self.directory} does not match this config's "
                f"model/optimizer ({type(e).__name__}: {str(e).splitlines()[0][:200]}). Use the "
                "config it was trained with, or a new --workdir.") from e
        logging.info("Restored checkpoint at step %d from %s", step, self.directory)
        return state

    def save(self, step: int, state: Any) -> None:
        """Starts an async save of `state` as checkpoint `step`; it is finalized in the background."""
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def close(self) -> None:
        """Waits for pending saves, then releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
