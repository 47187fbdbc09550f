"""Orbax checkpointing: async saves, keep N, restore the newest *intact* checkpoint on start.

The loop decides when to save (after checking the loss is finite), so every save here is explicit
(`force=True`): orbax's default policy would also save at the first step and on preemption, behind
the loop's back.

A checkpoint can be damaged after it was committed (a full disk, a killed copy, a deleted file).
Restoring reads its metadata first: metadata that does not describe this config's state is a
config mismatch (a clear error, nothing is skipped); metadata or array files that cannot be read
make the checkpoint unreadable, which is reported in one line and skipped for the next older one.
"""
from __future__ import annotations

import collections
import logging as logging_std
import sys
from typing import Any

import jax
import orbax.checkpoint as ocp
from absl import logging
from etils import epath
from jax.experimental import multihost_utils

from segattn_jax.train.errors import NoIntactCheckpointError

UNREADABLE_DIR = "checkpoints_unreadable"  # beside checkpoints/: where `set_aside` moves them


def _drop_closed_event_loop_callbacks() -> None:
    """Silences tensorstore's late callbacks into orbax's closed event loop (idempotent).

    When one read of a damaged checkpoint fails, orbax closes the per-call event loop while the
    checkpoint's other reads are still running; each of them then reports "Event loop is closed"
    as an unraisable exception, hundreds of tracebacks that hide the one-line report. Only that
    exact exception is dropped; everything else reaches the previous hook.
    """
    previous = sys.unraisablehook
    if getattr(previous, "_drops_closed_event_loop", False):
        return

    def hook(unraisable):
        value = unraisable.exc_value
        if not (isinstance(value, RuntimeError) and str(value) == "Event loop is closed"):
            previous(unraisable)

    hook._drops_closed_event_loop = True
    sys.unraisablehook = hook


class _DropUnretrievedReadErrors(logging_std.Filter):
    """Drops asyncio's "Task exception was never retrieved" tracebacks for failed reads of files
    under the checkpoint directories: the same damaged reads, left behind by orbax's abandoned
    tasks and logged whenever they are garbage-collected, that `restore_latest` already reports
    in one line per checkpoint. Other asyncio errors pass."""

    directories: set[str] = set()

    def filter(self, record: logging_std.LogRecord) -> bool:
        message = str(record.msg)
        if not message.startswith(("Task exception was never retrieved",
                                    "Future exception was never retrieved")):
            return True
        error = record.exc_info[1] if record.exc_info else None
        return not any(d in str(error) for d in self.directories)


def _drop_unretrieved_read_errors(directory: epath.Path) -> None:
    """Adds `directory` to the asyncio filter, installing it once."""
    _DropUnretrievedReadErrors.directories.add(str(directory))
    asyncio_logger = logging_std.getLogger("asyncio")
    if not any(isinstance(f, _DropUnretrievedReadErrors) for f in asyncio_logger.filters):
        asyncio_logger.addFilter(_DropUnretrievedReadErrors())


def _first_line(error: BaseException, limit: int = 160) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return f"{type(error).__name__}: {text[:limit]}"


def _leaf_signature(tree: Any) -> collections.Counter:
    """Multiset of (shape, dtype) of a tree's arrays: independent of how orbax orders
    dataclass and namedtuple fields, yet different for any other model or optimizer."""
    return collections.Counter((tuple(leaf.shape), str(leaf.dtype))
                               for leaf in jax.tree.leaves(tree) if hasattr(leaf, "shape"))


class Checkpointer:
    """A thin policy layer over `ocp.CheckpointManager` (args API, one StandardSave item)."""

    def __init__(self, directory: str | epath.Path, *, keep: int, create: bool = True):
        _drop_closed_event_loop_callbacks()
        directory = epath.Path(directory)  # epath: local or gs:// alike
        self.directory = directory if "://" in str(directory) else directory.absolute()
        _drop_unretrieved_read_errors(self.directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, enable_async_checkpointing=True,
                                               create=create)
        # The handler is named up front so that a step's metadata can be read before restoring.
        self._manager = ocp.CheckpointManager(self.directory, options=options,
                                              item_handlers=ocp.StandardCheckpointHandler())

    def restore_latest(self, abstract_state: Any) -> tuple[Any | None, dict[int, str]]:
        """(state, unreadable): the newest restorable checkpoint, restored into `abstract_state`'s
        structure and shardings (None when there is no checkpoint at all), and the newer
        checkpoints that were skipped as unreadable, step -> reason.

        Raises ValueError when a checkpoint's metadata describes another model or optimizer, and
        `NoIntactCheckpointError` when checkpoints exist but none can be read.
        """
        unreadable: dict[int, str] = {}
        for step in sorted(self._manager.all_steps(), reverse=True):
            problem = self._metadata_problem(step, abstract_state)
            if problem is None:
                try:
                    state = self._restore(step, abstract_state)
                except Exception as e:  # noqa: BLE001  (tensorstore/orbax raise many types)
                    problem = f"array data unreadable ({_first_line(e)})"
            if problem is None:
                logging.info("Restored checkpoint at step %d from %s", step, self.directory)
                return state, unreadable
            logging.warning("Checkpoint at step %d in %s cannot be restored, skipping it: %s",
                            step, self.directory, problem)
            unreadable[step] = problem
        if unreadable:
            raise NoIntactCheckpointError(self.directory, unreadable)
        return None, unreadable

    def _restore(self, step: int, abstract_state: Any) -> Any:
        """Restores `step` into `abstract_state`. Checkpoints written before the train state had
        `model_state` (every model without batch norm, whose model_state is empty) lack that
        field: they are restored without it, so existing runs resume."""
        saved = self._manager.item_metadata(step)
        saved = getattr(saved, "tree", saved)
        model_state = getattr(abstract_state, "model_state", None)
        if (isinstance(saved, dict) and "model_state" not in saved and model_state is not None
                and not jax.tree.leaves(model_state)):
            fields = {name: getattr(abstract_state, name) for name in saved}
            restored = self._manager.restore(step, args=ocp.args.StandardRestore(fields))
            return abstract_state.replace(**restored)
        return self._manager.restore(step, args=ocp.args.StandardRestore(abstract_state))

    def _metadata_problem(self, step: int, abstract_state: Any) -> str | None:
        """None if `step`'s metadata is readable and matches; a reason if unreadable."""
        try:
            metadata = self._manager.item_metadata(step)
            saved = getattr(metadata, "tree", metadata)
        except Exception as e:  # noqa: BLE001
            return f"metadata unreadable ({_first_line(e)})"
        if saved is None:
            return "metadata missing"
        if _leaf_signature(saved) != _leaf_signature(abstract_state):
            raise ValueError(
                f"The checkpoint at step {step} in {self.directory} does not match this config's "
                "model/optimizer (its arrays have other shapes or count). Use the config it was "
                "trained with, or a new --workdir.")
        return None

    def set_aside(self, steps: list[int] | set[int]) -> epath.Path:
        """Moves unreadable checkpoints out of the way of new saves, into
        `checkpoints_unreadable/` beside the checkpoint directory (kept, never deleted)."""
        target = self.directory.parent / UNREADABLE_DIR
        if jax.process_index() == 0:  # one process moves them (a shared gs:// workdir)
            self._move_aside(steps, target)
        if jax.process_count() > 1:
            multihost_utils.sync_global_devices("unreadable checkpoints set aside")
        self._manager.reload()
        return target

    def _move_aside(self, steps: list[int] | set[int], target: epath.Path) -> None:
        target.mkdir(parents=True, exist_ok=True)
        for step in steps:
            destination = target / str(step)
            suffix = 0
            while destination.exists():
                suffix += 1
                destination = target / f"{step}.{suffix}"
            (self.directory / str(step)).rename(destination)
            logging.warning("Moved unreadable checkpoint %d to %s", step, destination)

    def save(self, step: int, state: Any) -> None:
        """Starts an async save of `state` as checkpoint `step`; it is finalized in the background."""
        self._manager.save(step, args=ocp.args.StandardSave(state), force=True)

    def close(self) -> None:
        """Waits for pending saves, then releases the manager."""
        self._manager.wait_until_finished()
        self._manager.close()
