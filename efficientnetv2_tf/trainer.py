"""Training: the loop over a run's stages and epochs.

Keras 3's `Model.fit` does not run under MultiWorkerMirroredStrategy, so
training is a compact loop of `strategy.run` calls that serves the CPU, one
GPU, MirroredStrategy, MultiWorkerMirroredStrategy and TPUStrategy alike:

    trainer = Trainer(specs, dataset, model_dir, strategy)
    results = trainer.train(evaluate=True)

The trainer puts parts together: the run's plan (`progressive.make_plan`:
global batch, steps per epoch, total steps and stages), its `TrainState`
(model, optimizer, EMA and their checkpoints), the traced step
(`train_step`) and an `Evaluator`. The stage, image size and
regularisation at any moment follow from the global step alone, so a run
that is killed and restarted from its last checkpoint continues with the
same settings and ends at the same step.

Across the workers of a cluster the run stays one run. Every worker resumes
from the chief's newest readable checkpoint. SIGTERM to any worker makes
them all save after the same step and raise `Preempted`. A collective that
fails because a worker is gone raises `PeerLost` on the others, naming the
worker and the checkpoint a rerun of every worker resumes from.

The trainer receives a dataset object; it never imports `datasets`.
"""
import contextlib
import math
import signal
import threading
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

from absl import logging
import keras
import tensorflow as tf

from efficientnetv2_tf import blocks
from efficientnetv2_tf import cluster
from efficientnetv2_tf import distribute
from efficientnetv2_tf import ema as ema_lib
from efficientnetv2_tf import evaluator as evaluator_lib
from efficientnetv2_tf import progressive
from efficientnetv2_tf import reporting
from efficientnetv2_tf import train_state
from efficientnetv2_tf import train_step
from efficientnetv2_tf.dataset_protocol import DatasetSource
from efficientnetv2_tf.preprocessing import Augmentation
from hparams.specs import Specs


class Trainer:
  """Trains a run's `TrainState` through its planned stages."""

  def __init__(self, specs: Specs, dataset: DatasetSource, model_dir: str,
               strategy: tf.distribute.Strategy,
               plan: Optional[progressive.RunPlan] = None):
    """`plan` is the run's plan when the caller has made it already."""
    self.specs = specs
    self.dataset = dataset
    self.strategy = strategy
    self.chief = cluster.is_chief(strategy)
    self.plan = plan or progressive.make_plan(
        specs, dataset.split_size(specs.data.train_split),
        strategy.num_replicas_in_sync)
    self.policy = distribute.precision_policy(
        strategy, specs.runtime.mixed_precision)
    self.image_dtype = tf.bfloat16 if 'bfloat16' in self.policy else (
        tf.float16 if 'float16' in self.policy else tf.float32)
    self.augmentation = Augmentation.from_specs(specs)
    self.reporter = reporting.Reporter(model_dir, enabled=self.chief)
    with distribute.precision_scope(self.policy):
      self.state = train_state.TrainState(specs, self.plan, strategy,
                                          model_dir, self.policy)
    self.evaluator = evaluator_lib.Evaluator(
        specs, dataset, self.model, self.ema, strategy, self.reporter,
        self.image_dtype, self.augmentation)
    self.step_settings = train_step.StepSettings.from_specs(
        specs, self.plan, 0.0 if train_state.decoupled_decay(specs.optim)
        else specs.optim.weight_decay)
    self._loop_key, self._loop = None, None
    self._dropout_rate: Optional[tf.Variable] = None
    # Several image sizes share one traced step when it sees no static
    # size. On b0 at 128 px on a 2-core CPU a trace took 15 s of Python
    # and 8 s of graph optimisation; the shape-generic step was 0-6%
    # slower than a step traced for one size.
    self._any_image_size = len({s.image_size for s in self.plan.stages}) > 1
    self._stop_requested = False
    self.train_seconds = 0.0
    self.train_images = 0
    self._run_started = time.time()
    self._bench_input = None
    self._epoch_metrics: Dict[str, float] = {}
    # The epoch under way and its running figures, which go on across a
    # stage that ends inside it.
    self._progress: Optional[Tuple[int, reporting.EpochProgress]] = None

  @property
  def model(self) -> keras.Model:
    return self.state.model

  @property
  def ema(self) -> Optional[ema_lib.ExponentialMovingAverage]:
    return self.state.ema

  @property
  def step(self) -> int:
    return self.state.step

  def restore(self) -> Optional[str]:
    """Restores the newest readable checkpoint of the run, if any."""
    return self.state.restore()

  def _follow_dropout(self) -> Optional[tf.Variable]:
    """A variable the model's top dropout reads its training rate from,
    if it can (`blocks.TopDropout`, made with a rate above 0)."""
    if self._dropout_rate is None:
      layer = self.model.top_dropout
      if isinstance(layer, blocks.TopDropout) and layer.rate > 0:
        with self.strategy.scope():
          self._dropout_rate = tf.Variable(layer.settings(layer.rate),
                                           trainable=False, dtype=tf.float32)
        layer.follow(self._dropout_rate)
    return self._dropout_rate

  def _train_loop(self, stage: progressive.Stage, frozen: bool):
    # Neither the image size (`_pipeline`) nor, where the model allows, the
    # dropout rate is fixed when the step is traced, so stages that differ
    # only in those share one step.
    rate = self._follow_dropout()
    if rate is not None:
      rate.assign(blocks.TopDropout.settings(stage.dropout_rate))
    key = (None if rate is not None else stage.dropout_rate, frozen)
    self.model.top_dropout.rate = stage.dropout_rate
    if key != self._loop_key:
      train_step.freeze_backbone(self.model, frozen)
      self._loop_key, self._loop = key, train_step.build_train_loop(
          self.model, self.state.optimizer, self.ema, self.strategy,
          self.step_settings)
    return self._loop

  def run_steps(self, num_steps: int, stage_index: int = 0) -> float:
    """Runs `num_steps` training steps of one stage and returns their mean
    loss; no evaluation, checkpoint or report. For benchmarks: `train` is
    how a run trains. The stage's input is kept from one call to the next.
    """
    stage = self.plan.stages[stage_index]
    if self._bench_input is None or self._bench_input[0] != stage_index:
      self._bench_input = (stage_index, self._pipeline(stage))
    total, done = 0.0, 0
    with distribute.precision_scope(self.policy):
      loop = self._train_loop(stage, frozen=False)
      while done < num_steps:
        steps = min(self.specs.runtime.steps_per_loop, num_steps - done)
        loss, _ = loop(self._bench_input[1], tf.constant(steps))
        total += float(loss)
        done += steps
    return total / num_steps

  def _next_seed(self, advance: bool = True) -> int:
    """The next draw of the run's random state, as an input seed; without
    `advance` the state is left as it was, to be drawn again."""
    rng = self.state.rng
    before = rng.state.numpy()
    seed = int(rng.uniform_full_int([], tf.int64).numpy() % 2**31)
    if not advance:
      rng.reset(before)
    return seed

  def _pipeline(self, stage: progressive.Stage, seed: Optional[int] = None):
    """The distributed training input of a stage, seeded with `seed` or
    the next draw of the run's random state; it starts preparing batches at
    once."""
    accum = self.specs.optim.grad_accum_steps
    if seed is None:
      seed = self._next_seed()
    dataset_fn = self.dataset.distribute_fn(
        self.specs.data.train_split, self.plan.global_batch // accum,
        training=True, image_size=stage.image_size,
        augmentation=stage.augmentation(self.augmentation), seed=seed,
        dtype=self.image_dtype)
    return iter(distribute.distribute_input(
        self.strategy, dataset_fn, any_image_size=self._any_image_size,
        warm_start=True))

  @contextlib.contextmanager
  def _sigterm_stops(self):
    """While in it, SIGTERM stops the run after the step under way. Python
    runs signal handlers in its main thread only, so a trainer run in
    another thread leaves SIGTERM to the program that started it."""
    if threading.current_thread() is not threading.main_thread():
      yield
      return
    previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    try:
      yield
    finally:
      signal.signal(signal.SIGTERM, previous)

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self._stop_requested = True

  def _stop_agreed(self) -> bool:
    """Whether SIGTERM reached any worker. Every worker asks after the same
    step and gets the same answer, so that all save that step."""
    return self.state.worker_sum(int(self._stop_requested)) > 0

  def train(self, evaluate: bool = False,
            after_epoch: Optional[Callable[[], None]] = None
            ) -> Dict[str, Any]:
    """Trains to the planned last step, resuming from a checkpoint if any;
    with `evaluate`, evaluates after every epoch. Returns the results.

    `after_epoch` is called at the end of each epoch, once it is saved,
    evaluated and reported; the time it takes is not training time (a
    benchmark's runs take turns in it).
    """
    with distribute.precision_scope(self.policy), self.state.peers_watched():
      self.restore()
      warning = progressive.ema_carryover_warning(self.plan.stages, self.ema)
      if warning and self.chief:
        logging.warning('%s', warning)
      self._run_started = time.time()
      self.evaluator.seconds = 0.0
      inputs = ([], [])  # the stage's input iterator; the next stage's
      try:
        with self._sigterm_stops():
          last_eval = self._stages(evaluate, after_epoch, *inputs)
      finally:
        train_step.freeze_backbone(self.model, False)
        for held in inputs:
          distribute.release(held)
      if not evaluate or last_eval is None or last_eval['step'] != self.step:
        last_eval = self.evaluate() if evaluate else {}
    last_train = {k: v for k, v in self._epoch_metrics.items()
                  if k.startswith('train_')}  # none when nothing was left
    return self._finish({**last_train, **last_eval},
                        time.time() - self._run_started)

  def _stages(self, evaluate: bool,
              after_epoch: Optional[Callable[[], None]],
              current: List[Any], upcoming: List[Any]
              ) -> Optional[Dict[str, Any]]:
    """Trains stage by stage, epoch by epoch; returns the last evaluation.
    `current` holds the stage's input iterator, `upcoming` the next's."""
    plan, last_eval = self.plan, None
    if evaluate and self.state.early_stop_due(
        self.specs.optim.early_stop_patience):
      return None  # a run that stopped early, run again
    while self.step < plan.total_steps:
      stage = progressive.stage_at(plan.stages, self.step)
      if self.chief:
        if self._progress is not None:  # a stage can start inside an epoch
          self._progress[1].break_line()
        print(f'{stage.describe()}', flush=True)
      if not upcoming:
        upcoming.append(self._pipeline(stage))
      distribute.release(current)  # the finished stage's, if any
      current.append(upcoming.pop())
      logging.info('%s', stage.describe())
      while self.step < stage.end_step:
        epoch = self.step // plan.steps_per_epoch
        self._train_epoch(stage, current[0], epoch)
        if self.step % plan.steps_per_epoch == 0 or \
            self.step == plan.total_steps:
          self.state.save()  # b0: 0.6-0.9 s on 2 cores
          seed = None
          if self.step == stage.end_step < plan.total_steps:
            # The next stage's input fills while this one is evaluated; its
            # seed is drawn for good after this step's saves, as on resuming.
            seed = self._next_seed(advance=False)
            upcoming.append(self._pipeline(
                progressive.stage_at(plan.stages, self.step), seed))
          last_eval, stop = self._end_epoch(stage, evaluate, last_eval)
          if evaluate and (self.state.plateau or
                           self.specs.optim.early_stop_patience):
            self.state.save()  # again, with the state the evaluation fed
          if after_epoch:
            paused = time.time()
            after_epoch()
            self._run_started += time.time() - paused
          if self._stop_agreed():
            raise self.state.preempted()
          if seed is not None:
            self._next_seed()
          if stop:
            return last_eval
    return last_eval

  def _end_epoch(self, stage: progressive.Stage, evaluate: bool,
                 last_eval: Optional[Dict[str, Any]]
                 ) -> Tuple[Optional[Dict[str, Any]], bool]:
    """Evaluates and reports; says whether early stopping is due."""
    row = {'epoch': self.plan.epoch_of(self.step), 'step': self.step,
           'stage': stage.index, 'image_size': stage.image_size,
           'learning_rate': float(self.state.schedule(self.step)),
           **self._epoch_metrics}
    # Training time so far in this process: tracing and input included,
    # evaluations left out.
    row['wall_seconds'] = (time.time() - self._run_started -
                           self.evaluator.seconds)
    stop = False
    if evaluate:
      last_eval = self.evaluate(
          progressive.eval_image_size(self.specs, stage))
      row.update(last_eval)
      patience = self.specs.optim.early_stop_patience
      stop = self.state.update_best(last_eval, patience)
      if stop and self.chief:
        print(f'early stop at step {self.step}: no better eval top-1 for '
              f'{patience} evaluations')
    self.reporter.row(row)
    self.reporter.plot([self.plan.epoch_of(s.end_step)
                        for s in self.plan.stages])
    return last_eval, stop

  def _next_steps(self, epoch_end: int) -> Tuple[int, bool]:
    """How many steps the next loop call runs, and whether frozen: it stops
    at the epoch's end, the end of freezing and the next checkpoint."""
    freeze_steps = int(self.specs.optim.freeze_epochs *
                       self.plan.steps_per_epoch)
    every = self.specs.runtime.checkpoint_every_steps
    frozen = self.step < freeze_steps
    boundary = min(epoch_end, freeze_steps) if frozen else epoch_end
    if every:
      boundary = min(boundary, (self.step // every + 1) * every)
    steps = min(self.specs.runtime.steps_per_loop, boundary - self.step)
    return steps, frozen

  def _run_loop(self, stage: progressive.Stage, iterator,
                epoch_end: int) -> Tuple[int, float, float, float]:
    """One loop call: its steps, summed loss and correct predictions, and
    seconds; a non-finite loss raises `TrainingError`."""
    steps, frozen = self._next_steps(epoch_end)
    loop = self._train_loop(stage, frozen)
    traces = loop.experimental_get_tracing_count()
    started = time.perf_counter()
    loss, right = loop(iterator, tf.constant(steps))
    loss = float(loss)
    elapsed = time.perf_counter() - started
    if not math.isfinite(loss):
      raise train_state.TrainingError(
          f'the loss became {loss} at step {self.step} (stage '
          f'{stage.index + 1}); the last good checkpoint is '
          f'{self.state.latest_checkpoint() or "none"}. Lower '
          f'train.lr_base or set train.gclip, then rerun to resume')
    if loop.experimental_get_tracing_count() == traces:  # not tracing
      self.train_seconds += elapsed
      self.train_images += steps * self.plan.global_batch
    return steps, loss, float(right), elapsed

  def _train_epoch(self, stage: progressive.Stage, iterator,
                   epoch: int) -> None:
    plan = self.plan
    first = epoch * plan.steps_per_epoch
    epoch_end = min(first + plan.steps_per_epoch, stage.end_step)
    if self._progress is None or self._progress[0] != epoch:
      self._progress = (epoch, reporting.EpochProgress(
          min(plan.steps_per_epoch, plan.total_steps - first),
          plan.global_batch, self.chief,
          self.specs.runtime.log_every_steps, first))
    progress = self._progress[1]
    every = self.specs.runtime.checkpoint_every_steps
    while self.step < epoch_end:
      steps, loss, right, elapsed = self._run_loop(stage, iterator,
                                                   epoch_end)
      progress.update(self.step - first, steps, loss, right, elapsed)
      self.reporter.scalars(self.step, {
          'train/loss': loss / steps, 'learning_rate':
          float(self.state.schedule(self.step)),
          'image_size': stage.image_size, 'dropout': stage.dropout_rate,
          'magnitude': stage.magnitude})
      if every and self.step % every == 0:
        self.state.save()
      if self._stop_agreed():
        raise self.state.preempted()
    self._epoch_metrics = {
        **progress.metrics(),
        'images_per_second': self.train_images / max(self.train_seconds,
                                                     1e-9)}

  def evaluate(self, image_size: Optional[int] = None) -> Dict[str, Any]:
    """Top-1, top-5 and loss on the eval split, with the EMA weights, at
    `image_size` (default: the eval size)."""
    with distribute.precision_scope(self.policy):
      return self.evaluator.evaluate(self.step, image_size)

  def evaluate_checkpoints(self, timeout: Optional[float]) -> Dict[str, Any]:
    """Evaluates each new checkpoint of the run until the last one; see
    `Evaluator.evaluate_checkpoints`. Writes and returns the results."""
    with distribute.precision_scope(self.policy):
      metrics = self.evaluator.evaluate_checkpoints(self.state, self.plan,
                                                    timeout)
    return self._finish(metrics, 0.0)

  def _finish(self, metrics: Dict[str, Any], wall: float) -> Dict[str, Any]:
    results = {
        'model_name': self.specs.model.name,
        'dataset': self.dataset.name, 'step': self.step,
        'total_steps': self.plan.total_steps, **metrics,
        'wall_seconds': wall,
        'train_images_per_second': (self.train_images / self.train_seconds
                                    if self.train_seconds else None),
        'stages': [s.describe() for s in self.plan.stages],
    }
    if not self.train_images:
      # Nothing trained in this process (an evaluation, a finished run run
      # again): the figures of the training that reached this step stand,
      # and so do its evaluation's where this process made none.
      previous = self.reporter.previous_results()
      if previous.get('step') == self.step:
        results.update({k: v for k, v in previous.items()
                        if k in reporting.TRAINING_RESULTS})
        if 'eval_top1' not in results:
          results.update({k: v for k, v in previous.items()
                          if k.startswith('eval_')})
    path = self.reporter.results(results)
    if self.chief and path:
      print(f'results: {path}')
    return results
