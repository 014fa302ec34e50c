"""The training loop: one program for one CPU, 8 simulated devices, several hosts or a pod.

    setup()   config checks (before anything compiles) -> a resume's config compared with the
              run's (before anything is written) -> tokenizer -> model config -> mesh ->
              sharded state (fresh, init_from, or resumed) -> data iterator
    train()   jitted, donated steps; logging; periodic and preemption checkpoints of states whose
              own loss is finite; NaN stop; failed saves stop the run; progress watchdog
"""

from __future__ import annotations

import dataclasses
import math
import os
import signal
import time

import jax
import numpy as np
from absl import logging
from jax.experimental import multihost_utils

from tgg_jax import checkpoint, sharding
from tgg_jax.data import pipeline
from tgg_jax.data.example_spec import ExampleSpec, for_model
from tgg_jax.data.tokenizer import load_tokenizer, tokenizer_dir_beside
from tgg_jax.errors import RunStopped, UserError
from tgg_jax.models.tgg import TGGConfig, count_params
from tgg_jax.train import compile_cache, history, hooks, run_config
from tgg_jax.train import optimizer as opt_lib
from tgg_jax.train import state as state_lib
from tgg_jax.train.checkpointing import Checkpointer
from tgg_jax.train.metrics import Reporter, peak_flops_per_device, train_flops_per_step
from tgg_jax.train.step import TrainState, check_loss_normalization, make_eval_step, make_train_step
from tgg_jax.train.watchdog import Watchdog


class NonFiniteLossError(RunStopped, FloatingPointError):
    """A non-finite loss or update: the run stops before saving the state it produced."""


def total_steps(config) -> int:
    if config.total_steps > 0:
        return int(config.total_steps)
    if config.data.num_examples <= 0:
        raise ValueError("set config.total_steps, or config.data.num_examples (with config.epochs)")
    return max(1, math.ceil(config.epochs * config.data.num_examples / examples_per_step(config)))


def examples_per_step(config) -> float:
    """Examples one step sees: the batch, or with packing its rows x examples_per_row."""
    rows = config.batch_size
    return rows * config.data.get("examples_per_row", 1.0) if config.data.packing else rows


def validate(config, num_devices: int | None = None, process_count: int | None = None) -> None:
    """Config errors that must surface before compiling anything, each in plain words."""
    num_devices = jax.device_count() if num_devices is None else num_devices
    process_count = jax.process_count() if process_count is None else process_count
    sizes = [config.mesh[a] for a in sharding.MESH_AXES]
    known = math.prod(s for s in sizes if s != -1)
    if sizes.count(-1) > 1 or num_devices % known or (-1 not in sizes and known != num_devices):
        raise ValueError(f"config.mesh {dict(config.mesh)} does not fit the {num_devices} devices")
    batch_shards = math.prod(num_devices // known if s == -1 else s for s in sizes[:2])
    if config.batch_size % (batch_shards * config.grad_accum_steps):
        raise ValueError(f"config.batch_size {config.batch_size} is not divisible by data x fsdp "
                         f"({batch_shards}) x grad_accum_steps ({config.grad_accum_steps})")
    if config.batch_size % process_count:
        raise ValueError(f"config.batch_size {config.batch_size} is not divisible by the "
                         f"{process_count} processes")
    if not config.data.mixture:
        raise ValueError("config.data.mixture is empty")
    for entry in config.data.mixture:
        if len(entry) != 3 or float(entry[2]) <= 0:
            raise ValueError(f"config.data.mixture entries are (dataset, split, weight > 0); got {entry}")
    if max(config.data.buckets) > config.data.max_length:
        raise ValueError("config.data.buckets exceed config.data.max_length")
    check_loss_normalization(config.loss_normalization, "config.loss_normalization")
    hooks.check(config)
    if config.init_hook and config.init_from:
        raise ValueError(f"config.init_hook ({config.init_hook}) starts the model itself; it cannot "
                         f"be combined with config.init_from ({config.init_from}): set "
                         "--config.init_hook='' to start from init_from")
    if config.loss_chunk and any(b % config.loss_chunk for b in config.data.buckets):
        raise ValueError(f"every bucket must be a multiple of config.loss_chunk {config.loss_chunk}")


@dataclasses.dataclass
class Run:
    config: object
    workdir: str
    tokenizer: object
    model_config: TGGConfig
    mesh: jax.sharding.Mesh
    graphdef: object
    state: TrainState
    shardings: TrainState
    optimizer: object
    schedule: object
    checkpointer: Checkpointer
    data_iter: object
    total_steps: int
    example_spec: ExampleSpec
    jitted: dict = dataclasses.field(default_factory=dict)
    preempted: bool = False  # set when train() stopped on SIGTERM


def tokenizer_source(config, workdir: str) -> str | None:
    """Where the run's tokenizer comes from: WORKDIR/tokenizer once a checkpoint exists (a
    resume's config check compares the tokenizer; before that, a corrected config.data.tokenizer
    replaces it), else config.data.tokenizer, else ('') the one beside config.init_from. None:
    config.data.tokenizer names a function that makes it (train/hooks.py)."""
    saved = os.path.join(os.path.abspath(os.path.expanduser(workdir)), "tokenizer")
    if run_config.has_checkpoint(workdir) and os.path.isfile(os.path.join(saved, "tokenizer.json")):
        return saved
    if hooks.is_hook(config.data.tokenizer):
        return None
    if config.data.tokenizer:
        return os.path.expanduser(config.data.tokenizer)
    if not config.init_from:
        raise UserError("config.data.tokenizer is '' and there is no config.init_from to take it "
                        "from: set --config.data.tokenizer=DIR")
    try:
        return tokenizer_dir_beside(checkpoint.resolve_checkpoint(config.init_from))
    except FileNotFoundError as e:
        raise UserError(f"config.data.tokenizer is '' and init_from has none: {e}; set "
                        "--config.data.tokenizer=DIR") from None


def load_run_tokenizer(config, workdir: str):
    """The run's tokenizer (tokenizer_source), saved in the workdir so eval and predict use the
    same one."""
    source = tokenizer_source(config, workdir)
    if source is None:
        tok = hooks.resolve(config.data.tokenizer, "data.tokenizer")(config)
    else:
        tok = load_tokenizer(source)
    saved = os.path.join(workdir, "tokenizer")
    if jax.process_index() == 0 and os.path.abspath(source or "") != os.path.abspath(saved):
        tok.save(saved)
    return tok


def example_spec(config, model_cfg: TGGConfig) -> ExampleSpec:
    """The run's examples: the model's, at config.data's length, objects and crop margins."""
    return for_model(model_cfg, max_length=config.data.max_length,
                     max_objects=config.data.max_objects, object_margin=config.data.object_margin,
                     object_jitter=config.data.object_jitter, alpha=config.data.get("alpha", "drop"))


def setup(config, workdir: str, *, with_data: bool = True, devices=None) -> Run:
    """Everything a run needs; resumes from WORKDIR/checkpoints when it holds a checkpoint.

    devices: the devices of the mesh (default all); tests use a subset.
    """
    validate(config, num_devices=None if devices is None else len(devices))
    workdir = os.path.abspath(os.path.expanduser(workdir))
    os.makedirs(workdir, exist_ok=True)
    steps = total_steps(config)
    config.unlock()
    config.total_steps = steps  # the schedule reads it
    config.lock()
    run_config.check_resume(config, workdir)  # before anything in the workdir is written
    compile_cache.enable(config.compilation_cache_dir)
    tokenizer = load_run_tokenizer(config, workdir)
    model_cfg = state_lib.model_config(config, tokenizer)
    run_config.check_model_config(model_cfg, os.path.join(workdir, "checkpoints"))
    resolved = run_config.write(config, workdir)
    mesh = sharding.make_mesh(dict(config.mesh), devices)
    logging.info("mesh %s over %d %s device(s) in %d process(es)", dict(mesh.shape), mesh.size,
                 mesh.devices.flat[0].platform, jax.process_count())
    optimizer = opt_lib.make_optimizer(config)
    schedule = opt_lib.learning_rate_schedule(config)
    graphdef, abstract, init = state_lib.create_state(model_cfg, optimizer, tuple(config.trainable), config.seed,
                                                      state_lib.param_init(config))
    shardings = state_lib.state_sharding(abstract, optimizer, mesh)
    checkpointer = Checkpointer(os.path.join(workdir, "checkpoints"), keep=config.checkpoint.keep,
                                every_steps=config.checkpoint.every_steps,
                                async_save=config.checkpoint.async_save, model_config=model_cfg,
                                run_config=resolved)
    with jax.set_mesh(mesh):
        state = jax.jit(init, out_shardings=shardings)()
    spec = example_spec(config, model_cfg)
    data_iter = None
    if with_data:
        data_dir = os.path.expanduser(config.data.data_dir)
        prepare_data(config, data_dir)
        per_host = config.batch_size // jax.process_count()
        data_iter = pipeline.make_train_iterator(
            [tuple(m) for m in config.data.mixture], data_dir=data_dir, tokenizer=tokenizer, spec=spec,
            batch_size=per_host, seed=config.seed, buckets=tuple(config.data.buckets),
            worker_count=config.data.worker_count, packing=config.data.packing)
    if checkpointer.latest_step() is not None:
        state, _ = checkpointer.restore(state, data_iter)
        logging.info("resumed from step %d", int(state.step))
    else:
        path = None
        if config.init_from:
            path = checkpoint.resolve_checkpoint(config.init_from)
        elif config.init_hook:
            path = hooks.resolve(config.init_hook, "init_hook")(config, workdir, tokenizer, model_cfg)
        if path:
            state = state_lib.load_init_from(state, path, shardings, model_cfg)
            logging.info("initialised parameters from %s", path)
    return Run(config, workdir, tokenizer, model_cfg, mesh, graphdef, state, shardings, optimizer,
               schedule, checkpointer, data_iter, steps, spec)


def prepare_data(config, data_dir: str) -> None:
    """config.data.prepare (e.g. generating datasets that need no raw files) on process 0; the
    other processes wait for it."""
    if not config.data.prepare:
        return
    if jax.process_index() == 0:
        hooks.resolve(config.data.prepare, "data.prepare")(config, data_dir)
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices("config.data.prepare")


class PreemptionGuard:
    """SIGTERM (preemption) sets a flag; the loop saves a checkpoint and exits 0 at the next step.

    With several processes the flag is agreed on every step (any process signalled -> all stop
    at the same step), so the joint checkpoint save never waits on a process still training.
    """

    def __init__(self):
        self._signalled = False
        self._previous = signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        logging.warning("SIGTERM received: saving a checkpoint and exiting")
        self._signalled = True

    @property
    def requested(self) -> bool:
        if jax.process_count() == 1:
            return self._signalled
        return bool(np.max(multihost_utils.process_allgather(np.int32(self._signalled))))

    def restore(self):
        signal.signal(signal.SIGTERM, self._previous)


def _batch_flops(run: Run, batch: dict, counts: dict) -> float:
    images = int(batch["images"].shape[0] * batch["images"].shape[1] + batch["objects"].shape[0] * batch["objects"].shape[1])
    tokens = int(np.prod(batch["input_ids"].shape))
    return train_flops_per_step(counts, tokens, images, run.model_config.grid ** 2)


def held_out_loss(run: Run, eval_step, dataset: str, split: str, limit: int, state: TrainState | None = None,
                  batch_size: int | None = None) -> float:
    """Mean token loss of `state` (default: the run's) over a held-out split."""
    state = run.state if state is None else state
    total = count = 0.0
    batch_size = batch_size or run.config.batch_size // jax.process_count()
    for batch in pipeline.make_eval_batches(dataset, split, data_dir=os.path.expanduser(run.config.data.data_dir),
                                            tokenizer=run.tokenizer, spec=run.example_spec,
                                            batch_size=batch_size, buckets=tuple(run.config.data.buckets),
                                            limit=limit):
        s, c = eval_step(state, pipeline.to_global(batch, run.mesh))
        total += float(s)
        count += float(c)
    return total / max(count, 1.0)


def compiled_steps(run: Run):
    """The jitted (train_step, eval_step) of a run, built once and reused by every train() call."""
    if "train" not in run.jitted:
        config = run.config
        train_step = make_train_step(run.graphdef, run.optimizer, run.schedule,
                                     grad_accum_steps=config.grad_accum_steps, loss_chunk=config.loss_chunk,
                                     loss_normalization=config.loss_normalization)
        run.jitted["train"] = jax.jit(train_step, in_shardings=(run.shardings, None),
                                      out_shardings=(run.shardings, None), donate_argnums=0)
        run.jitted["eval"] = jax.jit(make_eval_step(run.graphdef, config.loss_chunk))
    return run.jitted["train"], run.jitted["eval"]


def _kept(run: Run) -> str:
    latest = run.checkpointer.latest_step()
    if latest is None:
        return (f"No checkpoint has been saved yet in {run.checkpointer.directory}: a rerun starts "
                f"from step 0.")
    return f"The last good checkpoint (step {latest}) in {run.checkpointer.directory} is kept."


def _check_own_loss(run: Run, eval_step, batch: dict, step: int) -> None:
    """The loss of the state about to be saved, on the batch it was just trained on: a diverging
    update can leave finite but useless parameters (1e10) whose own loss is NaN, and a state
    like that must never become the checkpoint a resume starts from."""
    s, c = eval_step(run.state, batch)
    loss = float(s) / max(float(c), 1.0)
    if not math.isfinite(loss):
        raise NonFiniteLossError(f"the state after step {step} has loss {loss} on its own batch; "
                                 f"stopping without saving it. {_kept(run)}")


def train(run: Run, until_step: int | None = None) -> dict:
    """Run to config.total_steps, or to `until_step` (benchmarks evaluate along the way), or
    until preempted. Returns the last logged metrics.

    A step's loss is read (which waits for the device) only after the next step is dispatched,
    so the host builds the next batch while the device computes; every checkpoint, evaluation
    and log line first reads the loss of the state it uses, so a NaN still stops the run
    before that state is saved, and a checkpointed state's own loss must be finite too."""
    config = run.config
    jit_step, eval_step = compiled_steps(run)
    step = int(run.state.step)
    dropped = history.truncate(run.workdir, step)  # rows of steps this run computes again
    if dropped:
        logging.info("history.jsonl: %d rows after step %d dropped (recomputed from the checkpoint)",
                     dropped, step)
    reporter = Reporter(run.workdir, run.total_steps)
    counts = count_params(run.model_config)
    peak = peak_flops_per_device(config.peak_flops_per_device)
    guard = PreemptionGuard()
    watchdog = Watchdog(config.watchdog.factor, config.watchdog.min_seconds)
    last: dict = {}
    window = {"start": time.time(), "tokens": 0.0, "flops": 0.0}
    pending: list = []  # (step, metrics) dispatched but not yet read
    finished = False

    def read_pending() -> None:
        nonlocal last
        while pending:
            done, metrics = pending.pop(0)
            loss = float(metrics["loss"])
            if not math.isfinite(loss):
                raise NonFiniteLossError(f"loss is {loss} at step {done}; stopping. {_kept(run)}")
            update = float(metrics["update_norm"])
            if not math.isfinite(update):
                raise NonFiniteLossError(f"the update of step {done} is {update} (loss {loss}); "
                                         f"stopping. {_kept(run)}")
            if done % config.log_every_steps == 0 or done == run.total_steps:
                elapsed = max(time.time() - window["start"], 1e-9)
                last = {"loss": loss, "lr": float(metrics["lr"]), "grad_norm": float(metrics["grad_norm"]),
                        "tokens_per_s": window["tokens"] / elapsed,
                        "mfu": window["flops"] / elapsed / (peak * jax.device_count())}
                reporter.scalars(done, last)
                reporter.progress(done, last)
                history.append(run.workdir, {"step": done, **last})
                window.update(start=time.time(), tokens=0.0, flops=0.0)

    try:
        with jax.set_mesh(run.mesh):
            stop = run.total_steps if until_step is None else min(until_step, run.total_steps)
            while step < stop:
                batch = next(run.data_iter)
                window["flops"] += _batch_flops(run, batch, counts)
                window["tokens"] += float(np.count_nonzero(batch["segment_ids"]))
                global_batch = pipeline.to_global(batch, run.mesh)
                run.state, metrics = jit_step(run.state, global_batch)
                step += 1
                read_pending()  # the previous step's, while this one runs
                pending.append((step, metrics))
                watchdog.beat(step)
                run.checkpointer.check()  # a failed background save stops the run here
                logged = step % config.log_every_steps == 0 or step == run.total_steps
                evaluated = bool(config.eval_every_steps and step % config.eval_every_steps == 0)
                preempted = guard.requested
                saved = step % run.checkpointer.every_steps == 0 or step == run.total_steps or preempted
                if logged or evaluated or saved:
                    read_pending()
                if evaluated or saved:
                    watchdog.pause()  # evaluations and saves take their own time
                if evaluated:
                    for name, split in config.data.eval:
                        value = held_out_loss(run, eval_step, name, split, config.data.eval_examples)
                        reporter.scalars(step, {f"eval/{name}/{split}/loss": value})
                        history.append(run.workdir, {"step": step, "eval_loss": value})
                        logging.info("step %d held-out loss %s/%s: %.4f", step, name, split, value)
                if saved:
                    _check_own_loss(run, eval_step, global_batch, step)
                    run.checkpointer.save(run.state, run.data_iter, seed=config.seed, force=True)
                if evaluated or saved:
                    watchdog.resume()
                if preempted:
                    run.preempted = True
                    break
            read_pending()
        finished = True
    finally:
        watchdog.close()
        guard.restore()
        reporter.close()
        try:
            run.checkpointer.wait()
        except RunStopped as e:
            if finished:
                raise
            logging.error("%s", e)  # the error already on its way out says why the run stopped
    return last
