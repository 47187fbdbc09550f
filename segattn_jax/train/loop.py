"""The one train/eval loop. Nothing paper-specific: the experiment config picks dataset, task
(model + loss + metrics) and optimizer; this file runs them on the mesh.

Resuming is exact: the state is restored from the latest orbax checkpoint, each step's RNG is
`fold_in(key(seed), step)` and the data stream restarts at the restored step, so a killed and
restarted run ends with the same metrics as an uninterrupted one.
"""
from __future__ import annotations

import functools
import hashlib
import json
import signal
import time
from typing import Any, Iterator

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from absl import logging
from clu import metric_writers
from etils import epath
from jax.experimental import multihost_utils
from tqdm import tqdm

from segattn_jax import compilation
from segattn_jax.backbones import pretrained
from segattn_jax.data import pipeline
from segattn_jax.data import proposals as proposals_lib
from segattn_jax.data.preprocess import make_preprocess
from segattn_jax.ops.selective_search import HierarchicalGrouping, SelectiveSearch
from segattn_jax.tasks import Task, build_task
from segattn_jax.tasks import pictures as pics
from segattn_jax.train import mesh as mesh_lib
from segattn_jax.train.checkpoint import UNREADABLE_DIR, Checkpointer
from segattn_jax.train.config import init_from_dirs, steps_to_train, validate
from segattn_jax.train.errors import NoIntactCheckpointError, NonFiniteLossError
from segattn_jax.train.optimizers import make_optimizer
from segattn_jax.train.state import (TrainState, create_train_state, run_once, seed_keys,
                                     train_step)

METRICS_FILE = "metrics.json"
# One JSON line per evaluation ({"step", metric: value}); resumed runs append to it.
EVAL_HISTORY_FILE = "eval_history.jsonl"


def _prepare_dataset_once(config: ml_collections.ConfigDict) -> None:
    """Process 0 generates an embedded dataset first, so processes sharing a data_dir don't
    write it concurrently; the others then find it (or, on their own disks, generate theirs)."""
    if jax.process_index() == 0:
        extra = [pipeline.parse_source(source)[0] for source in config.dataset.extra_train]
        for name in dict.fromkeys([config.dataset.name, *extra]):
            pipeline.load_builder(name, config.dataset.data_dir)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("dataset prepared")


def _load_proposals(config: ml_collections.ConfigDict) -> proposals_lib.Proposals | None:
    """The cached region proposals of the train and eval splits and of any extra training data,
    if the config asks for them (computed on first use by process 0, as embedded datasets are
    generated)."""
    settings = config.dataset.proposals
    if not settings.method:
        return None
    if settings.method == "selective_search":
        method = SelectiveSearch(upscale=settings.upscale, base_k=settings.base_k,
                                 max_proposals=settings.max_proposals)
    elif settings.method == "hierarchical_grouping":
        method = HierarchicalGrouping(upscale=settings.upscale, scale=settings.base_k,
                                      min_size=settings.min_size,
                                      max_proposals=settings.max_proposals,
                                      mask_size=settings.mask_size)
    else:
        raise ValueError(f"Unknown --config.dataset.proposals.method={settings.method!r}; valid: "
                         "'' (none), 'selective_search', 'hierarchical_grouping'.")
    data = config.dataset
    sources = [(data.name, data.train_split), (data.name, data.eval_split),
               *map(pipeline.parse_source, data.extra_train)]
    sources = [(pipeline.load_builder(name, data.data_dir), split)
               for name, split in dict.fromkeys(sources)]
    if jax.process_count() > 1:
        if jax.process_index() == 0:
            proposals_lib.compute_missing(sources, method)
        multihost_utils.sync_global_devices("proposals computed")
    return proposals_lib.load(sources, method)


class Experiment:
    """Everything a command needs, built once from a config: mesh, task, optimizer, data, steps.

    `training` lets the task create what a run keeps in its workdir (a caption vocabulary);
    eval and predict only read it."""

    def __init__(self, config: ml_collections.ConfigDict, workdir: str | epath.Path, *,
                 training: bool = False):
        validate(config)
        self.config = config
        self.workdir = epath.Path(workdir)
        if training and config.get("requires_init_from") and not config.init_from and not (
                self.workdir / "checkpoints").exists():
            raise ValueError(f"{config.experiment} {config.row} starts from "
                             f"{config.requires_init_from}: set --config.init_from=DIR.")
        self.mesh = mesh_lib.make_mesh(config.mesh.data)
        mesh_lib.check_batch_divisible(config.train.batch_size, self.mesh, "train.batch_size")
        mesh_lib.check_batch_divisible(config.eval.batch_size, self.mesh, "eval.batch_size")
        self.task: Task = build_task(config)
        self.tx = make_optimizer(config.optimizer, config.train.num_steps)
        _prepare_dataset_once(config)
        self.proposals = _load_proposals(config)
        options = {**config.dataset.preprocess, **self.task.prepare(self.workdir, training)}
        if self.proposals is not None:
            options["proposals"] = self.proposals
        self.preprocess = make_preprocess(self.task.preprocess, options)
        self.replicated = mesh_lib.replicated(self.mesh)
        self.data_sharded = mesh_lib.data_sharded(self.mesh)

        spec = pipeline.element_spec(config.dataset.name, config.dataset.eval_split,
                                     preprocess=self.preprocess, data_dir=config.dataset.data_dir)
        # A batch of one of the model's inputs, as the eval split makes them.
        self.input_spec = {key: jax.ShapeDtypeStruct((1, *spec[key].shape),
                                                     spec[key].dtype.as_numpy_dtype)
                           for key in self.task.input_keys}

        abstract = jax.eval_shape(self._init_state)
        self.state_sharding = jax.tree.map(lambda _: self.replicated, abstract)
        self.abstract_state = jax.tree.map(
            lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s), abstract,
            self.state_sharding)

        self.train_step = compilation.jit(
            functools.partial(train_step, self.task, self.tx, config.seed),
            in_shardings=(self.state_sharding, self.data_sharded),
            out_shardings=(self.state_sharding, self.replicated), donate_argnums=0)
        variables_sharding = self.state_sharding.variables
        self.eval_step = compilation.jit(self._eval_step,
                                         in_shardings=(variables_sharding, self.data_sharded),
                                         out_shardings=self.replicated)
        self.predict_step = compilation.jit(self.task.predict,
                                            in_shardings=(variables_sharding, self.data_sharded),
                                            out_shardings=self.replicated)

    # ---- traced functions -------------------------------------------------------------------
    def _init_state(self) -> TrainState:
        init_rng, _ = seed_keys(self.config.seed)
        variables = self.task.init_variables(init_rng, jax.tree.map(
            lambda s: jnp.zeros(s.shape, s.dtype), self.input_spec))
        return create_train_state(variables, self.tx)

    def _eval_step(self, variables, batch):
        return self.task.statistics(batch, self.task.predict(variables, self.task.inputs(batch)))

    # ---- host functions ---------------------------------------------------------------------
    def new_state(self) -> TrainState:
        """Step 0: the model's initialization (compiled for one call: `run_once`), with
        `config.init_from`'s weights loaded."""
        state = run_once(self._init_state, out_shardings=self.state_sharding)
        if not self.config.init_from:
            return state
        variables = jax.device_get(state.variables)
        for directory in init_from_dirs(self.config):
            variables, _ = pretrained.init_from(variables, directory, self.config.init_from_skip)
        return run_once(functools.partial(create_train_state, tx=self.tx), variables,
                        out_shardings=self.state_sharding)

    def eval_batches(self) -> Iterator[dict[str, np.ndarray]]:
        return pipeline.eval_iterator(
            self.config.dataset.name, self.config.dataset.eval_split, preprocess=self.preprocess,
            global_batch_size=self.config.eval.batch_size, data_dir=self.config.dataset.data_dir)

    def evaluate(self, variables) -> dict[str, float]:
        """Metrics over the whole eval split, and the model's test time per image.

        The task accumulates per-batch statistics on the host (every process gets the whole
        global batch's). `seconds_per_image` is the eval step's wall time (prediction and
        statistics, on the device and waited for) per image, after the first batch (compilation).
        """
        total, seconds, images = None, 0.0, 0
        for index, batch in enumerate(self.eval_batches()):
            began = time.perf_counter()
            statistics = jax.device_get(self.eval_step(variables, mesh_lib.to_global(batch,
                                                                                     self.mesh)))
            if index:
                seconds += time.perf_counter() - began
                images += len(batch["valid"])
            total = self.task.accumulate(total, statistics)
        timing = {"seconds_per_image": seconds / images} if images else {}
        if self.proposals is not None:  # computed in the input pipeline, timed when cached
            timing["proposal_seconds_per_image"] = self.proposals.seconds_per_image
        return {**self.task.summarize(total), **timing}

    def pictures(self, variables, batch: dict[str, np.ndarray]
                 ) -> tuple[np.ndarray, list[np.ndarray] | None]:
        """The task's picture grid for the first examples of this process's batch, and its
        animation frames (None for tasks without one)."""
        predictions = jax.device_get(self.predict_step(variables, mesh_lib.to_global(
            self.task.inputs(batch), self.mesh)))
        n = min(self.config.train.num_pictures, len(batch["valid"]))
        batch, predictions = jax.tree.map(lambda x: x[:n], (batch, predictions))
        return self.task.pictures(batch, predictions), self.task.animation(batch, predictions)

    def checkpointer(self, *, create: bool = True) -> Checkpointer:
        return Checkpointer(self.workdir / "checkpoints", keep=self.config.train.keep_checkpoints,
                            create=create)

    def restore_or_init(self, checkpointer: Checkpointer) -> TrainState:
        """The newest intact checkpoint, or a new state when there is none.

        Unreadable newer checkpoints are moved to checkpoints_unreadable/ (kept) so that new saves
        can take their step numbers. If no checkpoint is intact the run stops, unless
        train.restart_if_no_intact_checkpoint allows starting from scratch.
        """
        try:
            state, unreadable = checkpointer.restore_latest(self.abstract_state)
        except NoIntactCheckpointError as e:
            if not self.config.train.restart_if_no_intact_checkpoint:
                raise NoIntactCheckpointError(
                    e.directory, e.unreadable,
                    "Nothing was changed. Restore them from a copy, or start this run from "
                    "scratch with --config.train.restart_if_no_intact_checkpoint=true (they are "
                    f"then moved to {checkpointer.directory.parent / UNREADABLE_DIR}, not "
                    "deleted).") from None
            state, unreadable = None, e.unreadable
        if unreadable:
            checkpointer.set_aside(unreadable)
        if state is None:
            logging.info("No intact checkpoint in %s: starting from scratch.",
                         checkpointer.directory)
            return self.new_state()
        return state

    def restore_variables(self) -> Any:
        """The model variables of the latest checkpoint (for `eval` and `predict`); creates
        nothing. Without a checkpoint, the `config.init_from` weights, if given (evaluating
        imported ImageNet weights as they are)."""
        directory = self.workdir / "checkpoints"
        if not directory.exists() and self.config.init_from:
            logging.info("No checkpoints in %s: using the weights of config.init_from=%s.",
                         directory, self.config.init_from)
            return self.new_state().variables
        if not directory.exists():
            raise FileNotFoundError(f"No checkpoints in {directory}: train first with this "
                                    "--workdir (python -m segattn_jax.main train ...).")
        checkpointer = self.checkpointer(create=False)
        try:
            state, _ = checkpointer.restore_latest(self.abstract_state)
        except NoIntactCheckpointError as e:
            raise NoIntactCheckpointError(
                e.directory, e.unreadable, "Restore them from a copy, or train again.") from None
        finally:
            checkpointer.close()
        if state is None:
            raise FileNotFoundError(f"No finished checkpoint in {directory}: train first.")
        return state.variables


class _PreemptionFlag:
    """Whether to save and stop now because of SIGTERM.

    One process: our own SIGTERM handler. Several: JAX's preemption sync manager (installed by
    `jax.distributed.initialize`) catches SIGTERM, and all processes agree on the step to stop at.
    """

    def __init__(self):
        self.received = False
        self._multi = jax.process_count() > 1
        if not self._multi:
            self._previous = signal.signal(signal.SIGTERM, self._handler)

    def _handler(self, signum, frame):
        self.received = True

    def should_stop(self, step: int) -> bool:
        if self._multi:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.received

    def restore(self):
        if not self._multi:
            signal.signal(signal.SIGTERM, self._previous)


class _PendingMetrics:
    """Train metrics since the last log line, fetched from the device lazily.

    Fetching syncs with the device, so it happens only when logging, checkpointing or stopping;
    that is also when the loss is checked, so a NaN is caught before the state is saved.
    """

    def __init__(self):
        self._steps: list[tuple[int, dict[str, Any]]] = []

    def append(self, step: int, metrics: dict[str, jax.Array]) -> None:
        self._steps.append((step, metrics))

    def check_finite(self, last_good_step: int, directory: epath.Path) -> None:
        """Raises `NonFiniteLossError` naming the first step whose loss or gradient is NaN/inf."""
        self._steps = [(step, jax.device_get(m)) for step, m in self._steps]
        for step, metrics in self._steps:
            if not (np.isfinite(metrics["loss"]) and np.isfinite(metrics["grad_norm"])):
                kept = (f"the last good checkpoint (step {last_good_step}) in {directory} is kept"
                        if last_good_step else "no checkpoint had been saved yet")
                raise NonFiniteLossError(
                    f"Loss or gradient became NaN/inf at step {step}. The run stopped; {kept}. "
                    "Lower --config.optimizer.learning_rate or set "
                    "--config.optimizer.grad_clip_norm, then rerun the same command.")

    def pop_means(self) -> dict[str, float]:
        """Per-metric means over the pending steps (already checked), then forgets them."""
        metrics = [m for _, m in self._steps]
        self._steps = []
        return {f"train/{k}": float(np.mean([m[k] for m in metrics])) for k in metrics[0]}


class _StepClock:
    """Wall time per training step between log points, without the time spent in evaluation,
    pictures and checkpoint saves: what the loop costs on top of the step itself.

    Log points sync with the device (the metrics are fetched), so each interval's time is real.
    The first interval holds the compilation and is reported but left out of `ms_per_step`.
    """

    def __init__(self, start_step: int):
        self._step, self._time, self._excluded = start_step, time.perf_counter(), 0.0
        self.intervals: list[tuple[int, float]] = []  # (steps, seconds)

    def exclude(self, seconds: float) -> None:
        self._excluded += seconds

    def lap(self, step: int) -> float:
        """Milliseconds per step since the last lap."""
        now = time.perf_counter()
        steps, seconds = step - self._step, now - self._time - self._excluded
        self._step, self._time, self._excluded = step, now, 0.0
        self.intervals.append((steps, seconds))
        return 1e3 * seconds / max(steps, 1)

    def ms_per_step(self) -> float | None:
        """Steady-state milliseconds per step (after the first interval), None if too short."""
        steady = self.intervals[1:]
        if not steady:
            return None
        return 1e3 * sum(s for _, s in steady) / sum(n for n, _ in steady)


def _filter_id(config: ml_collections.ConfigDict) -> str:
    """What a task's training filter can depend on (its task and dataset settings), hashed: the
    key of the workdir's cached filter counts."""
    settings = json.dumps([config.task.to_dict(), config.dataset.to_dict()], sort_keys=True,
                          default=str)
    return hashlib.sha1(settings.encode()).hexdigest()[:16]


def train_and_evaluate(config: ml_collections.ConfigDict,
                       workdir: str | epath.Path) -> dict[str, Any] | None:
    """Trains (resuming from the latest checkpoint), evaluates periodically, writes metrics.json.

    Returns the final metrics, or None when stopped by SIGTERM (after saving a checkpoint).
    """
    exp = Experiment(config, workdir, training=True)
    train = config.train
    num_steps = steps_to_train(config)
    is_main = jax.process_index() == 0
    checkpointer = exp.checkpointer()
    writer = metric_writers.create_default_writer(exp.workdir, just_logging=not is_main,
                                                  asynchronous=True)
    preemption = _PreemptionFlag()
    progress = None
    try:
        state = exp.restore_or_init(checkpointer)
        start_step = last_saved = int(state.step)
        if start_step > num_steps:
            raise ValueError(f"The checkpoint in {checkpointer.directory} is at step {start_step}, "
                             f"past train.num_steps={num_steps}: raise num_steps or use a new "
                             "--workdir.")
        picture_batch = next(iter(exp.eval_batches()))
        train_batches = pipeline.train_iterator(
            config.dataset.name, config.dataset.train_split, preprocess=exp.preprocess,
            global_batch_size=train.batch_size, seed=config.seed, start_step=start_step,
            data_dir=config.dataset.data_dir, extra=config.dataset.extra_train,
            keep=exp.task.training_filter(), keep_counts=exp.workdir / (
                f"training_filter_counts_{jax.process_index()}.json"),
            keep_id=_filter_id(config))
        pending = _PendingMetrics()

        clock = _StepClock(start_step)

        def save(step: int):
            nonlocal last_saved
            pending.check_finite(last_saved, checkpointer.directory)  # waits for the last step
            began = time.perf_counter()
            # Step 0 is saved only by an evaluate_only run (init_from's weights).
            if step != last_saved or (step == 0 and not (checkpointer.directory / "0").exists()):
                checkpointer.save(step, state)
                last_saved = step
            clock.exclude(time.perf_counter() - began)

        def evaluate_and_draw(step: int) -> dict[str, float]:
            jax.block_until_ready(state.step)  # the steps in flight count as training time
            began = time.perf_counter()
            metrics = exp.evaluate(state.variables)
            writer.write_scalars(step, {f"eval/{k}": v for k, v in metrics.items()})
            picture, frames = exp.pictures(state.variables, picture_batch)
            if is_main:
                with (exp.workdir / EVAL_HISTORY_FILE).open("a") as history:
                    history.write(json.dumps({"step": step, **metrics}) + "\n")
                pics.save_png(exp.workdir / "pictures" / f"step_{step:06d}.png", picture)
                if frames:
                    pics.save_gif(exp.workdir / "pictures" / f"step_{step:06d}.gif", frames)
                writer.write_images(step, {"pictures": picture[None]})
            clock.exclude(time.perf_counter() - began)
            return metrics

        progress = tqdm(total=num_steps, initial=start_step, disable=not is_main,
                        desc="train", unit="step", dynamic_ncols=True, mininterval=2.0)
        started = time.time()
        for step in range(start_step + 1, num_steps + 1):
            # Steps count from 1: checkpoint N holds the state after step N.
            batch = mesh_lib.to_global(next(train_batches), exp.mesh)
            state, metrics = exp.train_step(state, batch)
            pending.append(step, metrics)
            progress.update(1)
            if step % train.log_every == 0 or step == num_steps:
                pending.check_finite(last_saved, checkpointer.directory)
                means = pending.pop_means()
                ms = clock.lap(step)
                writer.write_scalars(step, {**means, "perf/ms_per_step": ms,
                                            "perf/images_per_second": 1e3 * train.batch_size / ms})
                progress.set_postfix(loss=f"{means['train/loss']:.4f}", refresh=False)
            if step % train.checkpoint_every == 0:
                save(step)
            if train.eval_every and step % train.eval_every == 0 and step < num_steps:
                evaluate_and_draw(step)
            if preemption.should_stop(step):
                save(step)
                logging.warning("SIGTERM: saved a checkpoint at step %d in %s; rerun the same "
                                "command to resume.", step, checkpointer.directory)
                return None
        save(num_steps)
        eval_metrics = evaluate_and_draw(num_steps)
    finally:
        if progress is not None:
            progress.close()
        preemption.restore()
        writer.close()
        checkpointer.close()
    result = {"step": num_steps, "eval": eval_metrics,
              "train_seconds": round(time.time() - started, 1),
              "ms_per_step": clock.ms_per_step(),
              "experiment": config.experiment, "row": config.row, "column": config.column,
              "paper": config.paper.to_dict()}
    if is_main:
        (exp.workdir / METRICS_FILE).write_text(json.dumps(result, indent=2))
    return result


def evaluate(config: ml_collections.ConfigDict, workdir: str | epath.Path) -> dict[str, float]:
    """Evaluates the latest checkpoint in `workdir` on the eval split."""
    exp = Experiment(config, workdir)
    return exp.evaluate(exp.restore_variables())
