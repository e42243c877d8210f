"""Training and evaluation: one custom loop over `tf.distribute`.

Keras 3's `Model.fit` does not run under MultiWorkerMirroredStrategy, so
training is a compact loop of `strategy.run` calls that serves the CPU, one
GPU, MirroredStrategy, MultiWorkerMirroredStrategy and TPUStrategy alike:

    trainer = Trainer(cfg, dataset, model_dir, strategy)
    results = trainer.train(evaluate=True)

A run is planned from its config and dataset (`RunPlan`): the global batch,
steps per epoch, total steps and the progressive stages. The stage, image
size and regularisation at any moment follow from the global step alone,
so a run that is killed and restarted from its last checkpoint continues
with the same settings and ends at the same step.

The trainer receives a dataset object; it never imports `datasets`.
"""
import contextlib
import dataclasses
import math
import os
import signal
import tempfile
import time
from typing import Any, Dict, List, Optional

from absl import logging
import keras
import numpy as np
import tensorflow as tf

import hparams
from efficientnetv2_tf import checkpoints
from efficientnetv2_tf import distribute
from efficientnetv2_tf import optim
from efficientnetv2_tf import progressive
from efficientnetv2_tf import reporting
from efficientnetv2_tf.model import EfficientNet
from efficientnetv2_tf.preprocessing import Augmentation
from hparams.errors import UserError

# The config keys that fix a model's variables: a model_dir holding a run
# whose values differ belongs to another model.
ARCHITECTURE_KEYS = ('model_name', 'blocks_args', 'width_coefficient',
                     'depth_coefficient', 'feature_size', 'depth_divisor',
                     'min_depth', 'rounding_floor', 'num_classes')


class TrainingError(RuntimeError):
  """Training cannot go on (a NaN loss); the message says what to do."""


class Preempted(Exception):
  """SIGTERM arrived; a checkpoint was saved and the run can resume."""


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """How long a run is and what each part of it does."""
  global_batch: int
  steps_per_epoch: int
  epochs: float
  total_steps: int
  stages: List[progressive.Stage]

  def epoch_of(self, step: int) -> float:
    return step / self.steps_per_epoch


def make_plan(cfg: Any, train_size: int, num_replicas: int) -> RunPlan:
  """The run's length and stages from its config and training-split size."""
  global_batch = cfg.train.batch_size
  distribute.check_batch_size(global_batch, num_replicas)
  accum = cfg.train.grad_accum_steps
  if accum < 1 or (global_batch // num_replicas) % accum:
    raise UserError(f'train.grad_accum_steps={accum} must be >= 1 and divide'
                    f' the per-replica batch {global_batch // num_replicas}')
  steps_per_epoch = train_size // global_batch
  if not steps_per_epoch:
    raise UserError(f'train.batch_size={global_batch} is larger than the '
                    f'{train_size} training images')
  epochs = cfg.train.epochs
  if cfg.train.min_steps:
    epochs = max(epochs, math.ceil(cfg.train.min_steps / steps_per_epoch))
  if epochs != cfg.train.epochs:
    # Stretch the stages with the run, so that they still add up.
    scale = epochs / cfg.train.epochs
    cfg.progressive.stage_epochs = [
        e * scale for e in cfg.progressive.stage_epochs]
    cfg.train.epochs = epochs
  stages = progressive.plan(cfg, steps_per_epoch)
  return RunPlan(global_batch, steps_per_epoch, epochs,
                 stages[-1].end_step, stages)


def check_model_dir(model_dir: str, cfg: Any) -> None:
  """Refuses an unwritable model_dir or one that holds another model."""
  try:
    os.makedirs(model_dir, exist_ok=True)
    # A probe of its own: the workers of a cluster check the same directory
    # at the same time.
    with tempfile.NamedTemporaryFile(dir=model_dir, prefix='.write_test'):
      pass
  except OSError as e:
    raise UserError(f'model_dir {model_dir!r} is not writable '
                    f'({e.strerror})') from None
  saved = os.path.join(model_dir, 'config.yaml')
  if os.path.exists(saved):
    previous = hparams.load_yaml(saved).get('model', {})
    for key in ARCHITECTURE_KEYS:
      if key in previous and previous[key] != cfg.model[key] and not (
          isinstance(cfg.model[key], (list, tuple)) and
          list(previous[key]) == list(cfg.model[key])):
        raise UserError(
            f'model_dir {model_dir!r} holds a run of another model '
            f'(model.{key}={previous[key]!r}, now {cfg.model[key]!r}); '
            f'use a new --model_dir')


def _backbone_frozen(model: keras.Model, frozen: bool) -> None:
  """Freezes everything but the classifier; a frozen BatchNorm layer runs in
  inference mode in Keras 3."""
  for layer in model.layers:
    if layer.name != 'predictions':
      layer.trainable = not frozen


class Trainer:
  """Builds the model, optimizer and EMA under a strategy, and trains."""

  def __init__(self, cfg: Any, dataset: Any, model_dir: str,
               strategy: tf.distribute.Strategy):
    self.cfg = cfg
    self.dataset = dataset
    self.model_dir = model_dir
    self.strategy = strategy
    self.chief = distribute.is_chief(strategy)
    self.loss_type = optim.check_loss_type(cfg.train.loss_type,
                                           'train.loss_type')
    self.plan = make_plan(cfg, dataset.split_size(cfg.data.train_split),
                          strategy.num_replicas_in_sync)
    self.policy = distribute.precision_policy(
        strategy, cfg.runtime.mixed_precision)
    distribute.apply_precision(self.policy)
    self.image_dtype = tf.bfloat16 if 'bfloat16' in self.policy else (
        tf.float16 if 'float16' in self.policy else tf.float32)
    self.augmentation = Augmentation.from_config(cfg)
    self.reporter = reporting.Reporter(model_dir, enabled=self.chief)
    work_dir = distribute.worker_dir(model_dir, strategy)
    self._build(os.path.join(work_dir, 'checkpoints'))
    self._train_fns: Dict[Any, Any] = {}
    self._eval_fn = None
    self._stop_requested = False
    self.train_seconds = 0.0
    self.train_images = 0
    self.eval_seconds = 0.0
    self._run_started = time.time()
    self._bench_input = None
    self._epoch_metrics: Dict[str, float] = {}

  # Building. ----------------------------------------------------------------

  def _build(self, checkpoint_dir: str) -> None:
    cfg = self.cfg
    train = cfg.train
    with self.strategy.scope():
      bn_sync = distribute.resolve_bn_sync(cfg.model.bn_sync, self.strategy)
      logging.info('cross-replica BatchNorm: %s', 'on' if bn_sync else 'off')
      self.model = EfficientNet.from_model_config(cfg.model, bn_sync=bn_sync)
      has_checkpoint = tf.train.latest_checkpoint(checkpoint_dir) is not None
      if train.ft_init_ckpt and not has_checkpoint:
        found = checkpoints.locate(train.ft_init_ckpt, cfg.model.model_name)
        checkpoints.load_weights(self.model, found, cfg.model.model_name,
                                 prefer_ema=train.ft_init_ema)
        logging.info('initialised from %s', train.ft_init_ckpt)
      peak = optim.scaled_learning_rate(train.lr_base, self.plan.global_batch)
      self.schedule = optim.LearningRate(
          peak, self.plan.steps_per_epoch, self.plan.total_steps,
          schedule=train.lr_sched, warmup_epochs=train.lr_warmup_epoch,
          decay_epochs=train.lr_decay_epoch,
          decay_factor=train.lr_decay_factor, minimum=train.lr_min)
      # AdamW decays weights itself; the others take an L2 loss, as the
      # original did.
      self.decoupled_decay = train.optimizer == 'adamw'
      optimizer = optim.build_optimizer(
          train.optimizer, self.schedule,
          weight_decay=train.weight_decay if self.decoupled_decay else 0.0,
          weight_decay_exclude=train.weight_decay_exclude)
      self.optimizer = distribute.wrap_optimizer(optimizer, self.policy)
      self.optimizer.build(self.model.trainable_variables)
      self.ema = optim.maybe_ema(optim.ema_variables(self.model),
                                 train.ema_decay)
      self.rng = tf.random.Generator.from_seed(
          cfg.data.seed if cfg.data.seed is not None else
          int(np.random.default_rng().integers(2**31)))
      self.plateau = None
      if train.lr_sched == 'plateau':
        self.plateau = optim.PlateauReducer(
            self.schedule, patience=train.plateau_patience,
            factor=train.plateau_factor)
      self.best = tf.Variable(-1.0, trainable=False, dtype=tf.float64)
      self.evals_since_best = tf.Variable(0, trainable=False, dtype=tf.int64)
    tracked = dict(model=self.model, optimizer=self.optimizer, rng=self.rng,
                   best=self.best, evals_since_best=self.evals_since_best)
    if self.ema:
      tracked['ema'] = self.ema
    if self.plateau:
      tracked['plateau'] = self.plateau
    self.checkpoint = tf.train.Checkpoint(**tracked)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, checkpoint_dir,
        max_to_keep=self.cfg.runtime.keep_checkpoints)

  @property
  def step(self) -> int:
    return int(self.optimizer.iterations.numpy())

  def restore(self) -> Optional[str]:
    """Restores the latest checkpoint of this run, if any."""
    path = self.manager.latest_checkpoint
    if path:
      self.checkpoint.restore(path).expect_partial()
      logging.info('resumed from %s at step %d', path, self.step)
    return path

  def save(self) -> str:
    # CheckpointManager writes the data files first and then, atomically,
    # the state file naming them: a killed save leaves the previous
    # checkpoint as the latest.
    return self.manager.save(checkpoint_number=self.step)

  # The training step. -------------------------------------------------------

  def _train_fn(self, stage: progressive.Stage, frozen: bool):
    # The dropout rate is fixed when the step is traced; the image size is
    # not: after a second size the step is traced once more for any size,
    # so stages that differ only in image size share it.
    key = (stage.dropout_rate, frozen)
    if key in self._train_fns:
      return self._train_fns[key]
    cfg, model, optimizer = self.cfg, self.model, self.optimizer
    strategy, plan = self.strategy, self.plan
    _backbone_frozen(model, frozen)
    model.get_layer('top_dropout').rate = stage.dropout_rate
    variables = list(model.trainable_variables)
    accum = cfg.train.grad_accum_steps
    micro_batch = plan.global_batch // accum
    l2 = cfg.train.weight_decay and not self.decoupled_decay
    exclude = cfg.train.weight_decay_exclude
    replicas = strategy.num_replicas_in_sync

    def gradients(images, labels, weight_decay):
      with tf.GradientTape() as tape:
        logits = model(images, training=True)
        per_example = optim.classification_loss(
            labels, logits, loss_type=self.loss_type,
            label_smoothing=cfg.train.label_smoothing)
        loss = tf.nn.compute_average_loss(per_example,
                                          global_batch_size=micro_batch)
        if l2:
          loss += optim.weight_decay_loss(variables, weight_decay,
                                          exclude) / replicas
        loss /= accum
        scaled = (optimizer.scale_loss(loss)
                  if hasattr(optimizer, 'scale_loss') else loss)
      correct = tf.reduce_sum(tf.cast(
          tf.argmax(logits, -1) == tf.argmax(labels, -1), tf.float32))
      return tape.gradient(scaled, variables), loss, correct

    if cfg.train.jit_compile:
      # XLA takes the model's forward and backward pass; the input iterator,
      # the cross-replica gradient sum and the optimizer stay outside it.
      gradients = tf.function(gradients, jit_compile=True)

    def replica_step(*batches):
      grads_sum, loss_sum, correct_sum = None, 0.0, 0.0
      weight_decay = optim.weight_decay_at(
          cfg.train.weight_decay, cfg.train.weight_decay_inc,
          optimizer.iterations, plan.total_steps)
      for images, labels in batches:
        grads, loss, correct = gradients(images, labels, weight_decay)
        grads_sum = grads if grads_sum is None else [
            a + b for a, b in zip(grads_sum, grads)]
        loss_sum += loss
        correct_sum += correct
      grads_sum = optim.clip_gradients(grads_sum, cfg.train.gclip)
      optimizer.apply_gradients(zip(grads_sum, variables))
      if self.ema:
        self.ema.update(optimizer.iterations)
      return loss_sum, correct_sum

    @tf.function(reduce_retracing=True)
    def loop(iterator, steps):
      loss_total = tf.constant(0.0)
      correct_total = tf.constant(0.0)
      for _ in tf.range(steps):
        batches = tuple(next(iterator) for _ in range(accum))
        loss, correct = strategy.run(replica_step, args=batches)
        loss_total += strategy.reduce('SUM', loss, axis=None)
        correct_total += strategy.reduce('SUM', correct, axis=None)
      return loss_total, correct_total

    self._train_fns = {key: loop}  # older traces are not needed again
    return loop

  def run_steps(self, num_steps: int, stage_index: int = 0) -> float:
    """Runs `num_steps` training steps of one stage and returns their mean
    loss; no evaluation, checkpoint or report. For benchmarks: `train` is
    how a run trains. The stage's input is kept from one call to the next.
    """
    stage = self.plan.stages[stage_index]
    if self._bench_input is None or self._bench_input[0] != stage_index:
      self._bench_input = (stage_index, self._pipeline(stage))
    loop = self._train_fn(stage, frozen=False)
    total, done = 0.0, 0
    while done < num_steps:
      steps = min(self.cfg.runtime.steps_per_loop, num_steps - done)
      loss, _ = loop(self._bench_input[1], tf.constant(steps))
      total += float(loss)
      done += steps
    return total / num_steps

  def _pipeline(self, stage: progressive.Stage):
    """The distributed training input of a stage, freshly seeded."""
    accum = self.cfg.train.grad_accum_steps
    seed = int(self.rng.uniform_full_int([], tf.int64).numpy() % 2**31)
    dataset_fn = self.dataset.distribute_fn(
        self.cfg.data.train_split, self.plan.global_batch // accum,
        training=True, image_size=stage.image_size,
        augmentation=stage.augmentation(self.augmentation), seed=seed,
        dtype=self.image_dtype)
    return iter(distribute.distribute_input(self.strategy, dataset_fn))

  # Training. ----------------------------------------------------------------

  def _on_sigterm(self, signum, frame):
    del signum, frame
    self._stop_requested = True

  def train(self, evaluate: bool = False) -> Dict[str, Any]:
    """Trains to the planned last step, resuming from a checkpoint if any;
    with `evaluate`, evaluates after every epoch. Returns the results."""
    self.restore()
    start_time = self._run_started = time.time()
    self.eval_seconds = 0.0
    previous = signal.signal(signal.SIGTERM, self._on_sigterm)
    try:
      last_eval = self._train_loop(evaluate)
    finally:
      signal.signal(signal.SIGTERM, previous)
      _backbone_frozen(self.model, False)
    if not evaluate or last_eval is None or last_eval['step'] != self.step:
      last_eval = self.evaluate() if evaluate else {}
    last_train = {k: v for k, v in self._epoch_metrics.items()
                  if k.startswith('train_')}  # none when nothing was left
    return self._finish({**last_train, **last_eval},
                        time.time() - start_time)

  def _train_loop(self, evaluate: bool) -> Optional[Dict[str, Any]]:
    plan, cfg = self.plan, self.cfg
    freeze_steps = int(cfg.train.freeze_epochs * plan.steps_per_epoch)
    every = cfg.runtime.checkpoint_every_steps
    last_eval = None
    while self.step < plan.total_steps:
      stage = progressive.stage_at(plan.stages, self.step)
      if self.chief:
        print(f'{stage.describe()}', flush=True)
      iterator = self._pipeline(stage)
      logging.info('%s', stage.describe())
      while self.step < stage.end_step:
        epoch = self.step // plan.steps_per_epoch
        epoch_end = min((epoch + 1) * plan.steps_per_epoch, stage.end_step)
        self._train_epoch(stage, iterator, epoch, epoch_end, freeze_steps,
                          every)
        if self.step % plan.steps_per_epoch == 0 or \
            self.step == plan.total_steps:
          self.save()
          row = {'epoch': plan.epoch_of(self.step), 'step': self.step,
                 'stage': stage.index, 'image_size': stage.image_size,
                 'learning_rate': float(self.schedule(self.step)),
                 **self._epoch_metrics}
          # Training time so far in this process: tracing and input
          # included, evaluations left out.
          row['wall_seconds'] = (time.time() - self._run_started -
                                 self.eval_seconds)
          stop = False
          if evaluate:
            last_eval = self.evaluate()
            row.update(last_eval)
            stop = self._update_best(last_eval)
          self.reporter.row(row)
          self.reporter.plot(self._stage_epochs())
          if stop:
            return last_eval
    return last_eval

  def _train_epoch(self, stage, iterator, epoch, epoch_end, freeze_steps,
                   every):
    plan, cfg = self.plan, self.cfg
    progress = keras.utils.Progbar(
        plan.steps_per_epoch, stateful_metrics=['loss', 'top1', 'img/s'],
        verbose=1 if self.chief else 0)
    loss_sum = correct = seen = 0.0
    epoch_start = epoch * plan.steps_per_epoch
    while self.step < epoch_end:
      frozen = self.step < freeze_steps
      boundary = epoch_end
      if frozen:
        boundary = min(boundary, freeze_steps)
      if every:
        boundary = min(boundary, (self.step // every + 1) * every)
      steps = min(cfg.runtime.steps_per_loop, boundary - self.step)
      loop = self._train_fn(stage, frozen)
      traces = loop.experimental_get_tracing_count()
      started = time.perf_counter()
      loss, right = loop(iterator, tf.constant(steps))
      loss = float(loss)
      elapsed = time.perf_counter() - started
      if not math.isfinite(loss):
        raise TrainingError(
            f'the loss became {loss} at step {self.step} (stage '
            f'{stage.index + 1}); the last good checkpoint is '
            f'{self.manager.latest_checkpoint or "none"}. Lower '
            f'train.lr_base or set train.gclip, then rerun to resume')
      images = steps * plan.global_batch
      if loop.experimental_get_tracing_count() == traces:  # not tracing
        self.train_seconds += elapsed
        self.train_images += images
      loss_sum += loss
      correct += float(right)
      seen += images
      progress.update(self.step - epoch_start, [
          ('loss', loss_sum / (seen / plan.global_batch)),
          ('top1', correct / seen), ('img/s', images / elapsed)])
      self.reporter.scalars(self.step, {
          'train/loss': loss / steps, 'learning_rate':
          float(self.schedule(self.step)), 'image_size': stage.image_size,
          'dropout': stage.dropout_rate, 'magnitude': stage.magnitude})
      if every and self.step % every == 0:
        self.save()
      if self._stop_requested:
        path = self.save()
        raise Preempted(f'stopped by SIGTERM at step {self.step}; saved '
                        f'{path}; rerun the same command to resume')
    self._epoch_metrics = {
        'train_loss': loss_sum / max(seen / plan.global_batch, 1),
        'train_top1': correct / max(seen, 1),
        'images_per_second': self.train_images / max(self.train_seconds,
                                                     1e-9)}

  def _update_best(self, metrics: Dict[str, Any]) -> bool:
    """Feeds the plateau schedule; says whether early stopping is due."""
    if self.plateau:
      self.plateau.update(metrics['eval_loss'])
    if metrics['eval_top1'] > float(self.best.numpy()):
      self.best.assign(metrics['eval_top1'])
      self.evals_since_best.assign(0)
    else:
      self.evals_since_best.assign_add(1)
    patience = self.cfg.train.early_stop_patience
    if patience and int(self.evals_since_best.numpy()) >= patience:
      if self.chief:
        print(f'early stop at step {self.step}: no better eval top-1 for '
              f'{patience} evaluations')
      return True
    return False

  def _stage_epochs(self) -> List[float]:
    return [self.plan.epoch_of(s.end_step) for s in self.plan.stages]

  # Evaluation. --------------------------------------------------------------

  def _make_eval_fn(self):
    model, strategy = self.model, self.strategy
    top_k = min(5, self.model.num_classes)

    def replica_step(images, labels):
      logits = tf.cast(model(images, training=False), tf.float32)
      per_example = optim.classification_loss(
          labels, logits, loss_type=self.loss_type, label_smoothing=0.0)
      target = tf.argmax(labels, -1, output_type=tf.int32)
      top1 = tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == target,
                     tf.float32)
      top5 = tf.cast(tf.math.in_top_k(target, logits, top_k), tf.float32)
      count = tf.cast(tf.shape(labels)[0], tf.float32)
      return (tf.reduce_sum(per_example), tf.reduce_sum(top1),
              tf.reduce_sum(top5), count)

    @tf.function
    def step(batch):
      sums = strategy.run(replica_step, args=batch)
      return [strategy.reduce('SUM', s, axis=None) for s in sums]
    return step

  def evaluate(self) -> Dict[str, Any]:
    """Top-1, top-5 and loss on the eval split, with the EMA weights."""
    started = time.time()
    if self._eval_fn is None:
      self._eval_fn = self._make_eval_fn()
    dataset_fn = self.dataset.distribute_fn(
        self.cfg.data.eval_split, self.cfg.eval.batch_size, training=False,
        image_size=self.cfg.eval.isize, augmentation=self.augmentation,
        dtype=self.image_dtype)
    batches = distribute.distribute_input(self.strategy, dataset_fn)
    totals = np.zeros(4)
    with self.ema.applied() if self.ema else contextlib.nullcontext():
      for batch in batches:
        totals += np.array([float(s) for s in self._eval_fn(batch)])
    loss, top1, top5, count = totals
    metrics = {'step': self.step, 'eval_loss': float(loss / count),
               'eval_top1': float(top1 / count),
               'eval_top5': float(top5 / count), 'eval_images': int(count)}
    if self.chief:
      print(f'eval at step {self.step}: top-1 {metrics["eval_top1"]:.4f}, '
            f'top-5 {metrics["eval_top5"]:.4f}, loss '
            f'{metrics["eval_loss"]:.4f} ({int(count)} images)', flush=True)
    self.reporter.scalars(self.step, {
        'eval/top1': metrics['eval_top1'], 'eval/top5': metrics['eval_top5'],
        'eval/loss': metrics['eval_loss']})
    self.eval_seconds += time.time() - started
    return metrics

  def evaluate_checkpoints(self, timeout: Optional[float]) -> Dict[str, Any]:
    """Evaluates each new checkpoint of the run until the last one.

    Without `timeout`, evaluates the latest checkpoint once and fails at
    once if there is none; with it, waits up to `timeout` seconds for each
    next checkpoint, as the original's eval job did.
    """
    directory = self.manager.directory
    if not timeout:
      if not self.restore():
        raise UserError(f'no checkpoint in {directory!r} to evaluate; train '
                        f'first, or pass --eval_timeout=SECONDS to wait')
      return self._finish(self.evaluate(), 0.0)
    metrics = {}
    for path in tf.train.checkpoints_iterator(directory, timeout=timeout,
                                              min_interval_secs=1):
      self.checkpoint.restore(path).expect_partial()
      metrics = self.evaluate()
      self.reporter.row({'epoch': self.plan.epoch_of(self.step),
                         'step': self.step, **metrics})
      if self.step >= self.plan.total_steps:
        break
    if not metrics:
      raise UserError(f'no checkpoint appeared in {directory!r} within '
                      f'{timeout:g} s')
    return self._finish(metrics, 0.0)

  def _finish(self, metrics: Dict[str, Any], wall: float) -> Dict[str, Any]:
    results = {
        'model_name': self.cfg.model.model_name,
        'dataset': self.dataset.name, 'step': self.step,
        'total_steps': self.plan.total_steps, **metrics,
        'wall_seconds': wall,
        'train_images_per_second': (self.train_images / self.train_seconds
                                    if self.train_seconds else None),
        'stages': [s.describe() for s in self.plan.stages],
    }
    path = self.reporter.results(results)
    if self.chief and path:
      print(f'results: {path}')
    return results
