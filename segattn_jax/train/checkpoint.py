"""Orbax checkpointing: periodic async saves, keep N, restore the latest on start."""
from __future__ import annotations

from etils import epath
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging


class Checkpointer:
    """A thin policy layer over `ocp.CheckpointManager` (args API, one StandardSave item)."""

    def __init__(self, directory: str | epath.Path, *, every_steps: int, keep: int):
        directory = epath.Path(directory)  # epath: local or gs:// alike
        self.directory = directory if "://" in str(directory) else directory.absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep, save_interval_steps=every_steps, enable_async_checkpointing=True,
            create=True)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    @property
    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def restore_latest(self, abstract_state: Any) -> Any | None:
        """The latest checkpoint restored into `abstract_state`'s structure and shardings, or None."""
        step = self._manager.latest_step()
        if step is None:
            return None
        state = self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))
        logging.info("Restored checkpoint at step %d from %s", step, self.directory)
        return state

    def due(self, step: int) -> bool:
        """Whether `save(step, ...)` would save (the loop checks the loss first)."""
        return self._manager.should_save(step)

    def save(self, step: int, state: Any, *, force: bool = False) -> bool:
        """Starts an async save when `step` is due (or `force`); returns whether one started."""
        return self._manager.save(step, args=ocp.args.StandardSave(state), force=force)

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()


def abstract_like(tree: Any) -> Any:
    """ShapeDtypeStructs (with shardings) of a concrete tree, the target a restore fills."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, tree)
