"""Evaluation on the eval split: once, or each checkpoint as it appears.

    evaluator = Evaluator(specs, dataset, model, ema, strategy, reporter)
    metrics = evaluator.evaluate(step)
    metrics = evaluator.evaluate_checkpoints(state, plan, timeout=600)

Evaluation uses the EMA of the weights when there is one, as the original
did, and leaves the raw weights in place afterwards.
"""
import contextlib
import os
import time
from typing import Any, Callable, Dict, Optional

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from efficientnetv2_tf import checkpoints
from efficientnetv2_tf import cluster
from efficientnetv2_tf import distribute
from efficientnetv2_tf import ema as ema_lib
from efficientnetv2_tf import optim
from efficientnetv2_tf import progressive
from efficientnetv2_tf import reporting
from efficientnetv2_tf.dataset_protocol import DatasetSource
from efficientnetv2_tf.preprocessing import Augmentation
from efficientnetv2_tf.progressive import RunPlan
from efficientnetv2_tf.train_state import TrainState
from hparams.errors import UserError
from hparams.specs import Specs


def _eval_fn(model: keras.Model, strategy: tf.distribute.Strategy,
             loss_type: str) -> Callable[..., Any]:
  """The traced step: summed loss, top-1, top-5 and count of a batch."""
  top_k = min(5, model.num_classes)

  def replica_step(images, labels):
    logits = tf.cast(model(images, training=False), tf.float32)
    per_example = optim.classification_loss(
        labels, logits, loss_type=loss_type, label_smoothing=0.0)
    target = tf.argmax(labels, -1, output_type=tf.int32)
    top1 = tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == target,
                   tf.float32)
    top5 = tf.cast(tf.math.in_top_k(target, logits, top_k), tf.float32)
    count = tf.cast(tf.shape(labels)[0], tf.float32)
    return (tf.reduce_sum(per_example), tf.reduce_sum(top1),
            tf.reduce_sum(top5), count)

  # Traced again only for a dimension that has changed (a short last
  # batch, another stage's size), then for any value of it.
  @tf.function(reduce_retracing=True)
  def step(batch):
    sums = strategy.run(replica_step, args=batch)
    return [strategy.reduce('SUM', s, axis=None) for s in sums]
  return step


class Evaluator:
  """Top-1, top-5 and loss of `model` on the eval split of `dataset`, with
  the EMA weights when `ema` is given."""

  def __init__(self, specs: Specs, dataset: DatasetSource,
               model: keras.Model,
               ema: Optional[ema_lib.ExponentialMovingAverage],
               strategy: tf.distribute.Strategy,
               reporter: Optional[reporting.Reporter] = None,
               image_dtype: tf.DType = tf.float32,
               augmentation: Optional[Augmentation] = None):
    """`augmentation` is the run's recipe when the caller has built it
    already; its evaluation path and normalisation are what count."""
    self.specs = specs
    self.dataset = dataset
    self.model = model
    self.ema = ema
    self.strategy = strategy
    self.reporter = reporter
    self.image_dtype = image_dtype
    self.split = specs.data.eval_split
    self.batch_size = specs.data.eval_batch_size
    self.image_size = specs.data.eval_image_size
    self.augmentation = augmentation or Augmentation.from_specs(specs)
    self.loss_type = specs.optim.loss_type
    self.chief = cluster.is_chief(strategy)
    self.seconds = 0.0  # spent evaluating, for training-time figures
    self._step_fn = None

  def _totals(self, image_size: int) -> np.ndarray:
    if self._step_fn is None:
      self._step_fn = _eval_fn(self.model, self.strategy, self.loss_type)
    dataset_fn = self.dataset.distribute_fn(
        self.split, self.batch_size, training=False,
        image_size=image_size, augmentation=self.augmentation,
        dtype=self.image_dtype)
    totals = np.zeros(4)
    if not self.ema and self.strategy.num_replicas_in_sync > 1:
      # The EMA's swap does this as well: without it, each replica would
      # evaluate with BatchNorm statistics of its own, and not those of
      # the first replica, which checkpoints and exports keep.
      distribute.share_first_replica(ema_lib.moving_statistics(self.model))
    # The iterator is let go of off this thread (`distribute.release`),
    # however the evaluation ends.
    held = [iter(distribute.distribute_input(self.strategy, dataset_fn))]
    try:
      with self.ema.applied() if self.ema else contextlib.nullcontext():
        for batch in held[0]:
          totals += np.array([float(s) for s in self._step_fn(batch)])
    finally:
      distribute.release(held)
    return totals

  def evaluate(self, step: int,
               image_size: Optional[int] = None) -> Dict[str, Any]:
    """Evaluates the model as it is at training step `step`, at
    `image_size` (default: the eval size)."""
    started = time.time()
    image_size = image_size or self.image_size
    loss, top1, top5, count = self._totals(image_size)
    metrics = {'step': step, 'eval_loss': float(loss / count),
               'eval_top1': float(top1 / count),
               'eval_top5': float(top5 / count), 'eval_images': int(count),
               'eval_image_size': image_size}
    if self.chief:
      print(f'eval at step {step}: top-1 {metrics["eval_top1"]:.4f}, '
            f'top-5 {metrics["eval_top5"]:.4f}, loss '
            f'{metrics["eval_loss"]:.4f} ({int(count)} images)', flush=True)
      listed = self.dataset.split_size(self.split)
      if count < listed:  # damage that only decoding finds
        logging.warning('%d of the %d images of split %r could not be '
                        'decoded and were left out of this evaluation',
                        listed - int(count), listed, self.split)
    if self.reporter:
      self.reporter.scalars(step, {
          'eval/top1': metrics['eval_top1'],
          'eval/top5': metrics['eval_top5'],
          'eval/loss': metrics['eval_loss']})
    self.seconds += time.time() - started
    return metrics

  def _check_ema(self, path: str) -> None:
    """Refuses to evaluate the averages of a checkpoint that holds none (a
    run trained without them): they would be the initial weights."""
    if self.ema and not checkpoints.holds_ema(path):
      raise UserError(
          f'checkpoint {path!r} holds no moving average of the weights, '
          f'which train.ema_decay={self.specs.optim.ema_decay:g} evaluates; '
          'evaluate its weights with train.ema_decay=0')

  def _evaluate_loaded(self, state: TrainState,
                       plan: RunPlan) -> Dict[str, Any]:
    """Evaluates the checkpoint `state` holds at the size training
    evaluated it at: that of the stage that trained its last step."""
    stage = progressive.stage_at(plan.stages, max(state.step - 1, 0))
    return self.evaluate(state.step,
                         progressive.eval_image_size(self.specs, stage))

  def evaluate_checkpoints(self, state: TrainState, plan: RunPlan,
                           timeout: Optional[float]) -> Dict[str, Any]:
    """Evaluates each new checkpoint of `state`'s run until the last one.

    Without `timeout`, evaluates the latest checkpoint once and fails at
    once if there is none; with it, waits up to `timeout` seconds for each
    next checkpoint, as the original's eval job did, and skips one that
    cannot be read with a warning.
    """
    directory = state.checkpoint_dir
    if not timeout:
      path = state.restore()
      if not path:
        raise UserError(f'no checkpoint in {directory!r} to evaluate; train '
                        f'first, or pass --eval_timeout=SECONDS to wait')
      self._check_ema(path)
      return self._evaluate_loaded(state, plan)
    metrics, unreadable = {}, []
    for path in tf.train.checkpoints_iterator(directory, timeout=timeout,
                                              min_interval_secs=1):
      try:
        state.load(path)
      # Damaged (a short read is an IndexError) or deleted since it was
      # listed: skipped, as the original's eval job skipped it.
      except (tf.errors.OpError, IndexError) as e:
        reason = (str(e).strip() or type(e).__name__).splitlines()[0]
        logging.warning('checkpoint %s cannot be read (%s); skipped', path,
                        reason)
        unreadable.append(os.path.basename(path))
        continue
      self._check_ema(path)
      metrics = self._evaluate_loaded(state, plan)
      if self.reporter:
        self.reporter.row({'epoch': plan.epoch_of(state.step),
                           'step': state.step, **metrics})
      if state.step >= plan.total_steps:
        break
    if not metrics:
      read = (f' that can be read (not {", ".join(unreadable)})'
              if unreadable else '')
      raise UserError(f'no checkpoint{read} appeared in {directory!r} '
                      f'within {timeout:g} s')
    return metrics
