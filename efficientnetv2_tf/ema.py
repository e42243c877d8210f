"""Exponential moving averages of a model's weights, kept for evaluation
as the original did.

    >>> w = tf.Variable([1.0, 2.0])
    >>> ema = maybe_ema([w], decay=0.5)
    >>> _ = w.assign([3.0, 4.0])
    >>> ema.update(step=100)  # decay min(0.5, 101 / 110)
    >>> with ema.applied():
    ...   w.numpy()
    array([2., 3.], dtype=float32)
    >>> w.numpy()
    array([3., 4.], dtype=float32)
"""
import contextlib
from typing import Iterator, List, Optional, Sequence, Union

import keras
import tensorflow as tf

from efficientnetv2_tf.optim import variable_path
from hparams.errors import UserError

Variables = Sequence[tf.Variable]
Step = Union[int, tf.Tensor, tf.Variable]  # e.g. `optimizer.iterations`


class _Untracked:
  """Holds the averaged variables outside tf.Module's tracking, so that
  checkpoints and `ExponentialMovingAverage.variables` hold only averages."""

  def __init__(self, variables: Variables):
    self.variables = tuple(variables)


class ExponentialMovingAverage(tf.Module):
  """Moving averages of variables, as the original kept for evaluation.

  Pass the trainable variables and the batch-norm moving statistics, as
  the original did. The averages start at the variables' values, live in
  the strategy scope current at construction (create this where the model
  was built) and are saved by `tf.train.Checkpoint(ema=...)`; the averaged
  variables themselves are not part of this module's checkpoint.

  `update` may run inside `strategy.run`: the averages are mirrored with
  ONLY_FIRST_REPLICA aggregation, so each follows the first replica's copy
  of its variable. Weights are the same on every replica; Keras 3 leaves
  each replica its own batch-norm statistics (the same on all with
  `bn_sync`), and the first replica's are the ones cross-replica reads and
  checkpoints see. Call `swap`, `applied` and `copy_to` outside
  `strategy.run`.
  A decay <= 0 means no averaging; `maybe_ema` then returns None.
  """

  def __init__(self, variables: Variables, decay: float):
    super().__init__(name='ema')
    if not 0 < decay < 1:
      raise UserError(f'EMA decay must be in (0, 1); Received: decay={decay!r}')
    for v in variables:
      if not tf.as_dtype(v.dtype).is_floating:
        raise ValueError(f'cannot average {variable_path(v)!r} of dtype '
                         f'{v.dtype}')
    self.decay = float(decay)
    self._live = _Untracked(variables)
    self.averages = [
        tf.Variable(tf.convert_to_tensor(v), trainable=False,
                    name=(variable_path(v).split(':')[0] +
                          '/ExponentialMovingAverage'),
                    aggregation=tf.VariableAggregation.ONLY_FIRST_REPLICA)
        for v in variables]

  def decay_at(self, step: Step) -> tf.Tensor:
    """The original's warm-up: min(decay, (1 + step) / (10 + step))."""
    step = tf.cast(step, tf.float32)
    return tf.minimum(self.decay, (1.0 + step) / (10.0 + step))

  def update(self, step: Step) -> None:
    """Moves each average towards its variable by 1 - `decay_at(step)`.

    The original passed the global step after the optimizer's update,
    i.e. `optimizer.iterations` once `apply_gradients` has run.
    """
    rate = 1.0 - self.decay_at(step)
    rates = {}  # one cast per dtype rather than per variable: fewer ops
    for live, average in zip(self._live.variables, self.averages):
      if average.dtype not in rates:
        rates[average.dtype] = tf.cast(rate, average.dtype)
      average.assign_sub(rates[average.dtype] *
                         (average - tf.cast(live, average.dtype)))

  def share_before(self, start_step: int, end_step: int) -> float:
    """How much of the averages, once `update(end_step)` has run, still
    comes from the variables as they were after `update(start_step)`."""
    steps = tf.range(start_step + 1, end_step + 1)
    return float(tf.reduce_prod(self.decay_at(steps)))

  def reset(self) -> None:
    """Sets each average to its variable's value, as construction does."""
    for live, average in zip(self._live.variables, self.averages):
      average.assign(tf.cast(live, average.dtype))

  def swap(self) -> None:
    """Exchanges averages and variables; a second call restores both."""
    for live, average in zip(self._live.variables, self.averages):
      saved = tf.convert_to_tensor(live)
      live.assign(tf.cast(average, live.dtype))
      average.assign(tf.cast(saved, average.dtype))

  @contextlib.contextmanager
  def applied(self) -> Iterator[None]:
    """Runs its body (eval, export) with the averages in the variables."""
    self.swap()
    try:
      yield
    finally:
      self.swap()

  def copy_to(self, variables: Variables) -> None:
    """Writes the averages into `variables`, e.g. another copy of the model."""
    if len(variables) != len(self.averages):
      raise ValueError(f'{len(self.averages)} averages but '
                       f'{len(variables)} variables')
    for target, average in zip(variables, self.averages):
      target.assign(tf.cast(average, target.dtype))


def moving_statistics(model: keras.Model) -> List[tf.Variable]:
  """BatchNorm's moving means and variances in `model`."""
  return [v for v in model.non_trainable_variables if 'moving_' in v.path]


def ema_variables(model: keras.Model) -> List[tf.Variable]:
  """What the EMA of a model averages: its weights and BatchNorm's moving
  statistics, in an order that the same architecture always repeats."""
  return list(model.trainable_variables) + moving_statistics(model)


def maybe_ema(variables: Variables,
              decay: float) -> Optional[ExponentialMovingAverage]:
  """An `ExponentialMovingAverage`, or None when `decay` <= 0 (no EMA)."""
  if decay <= 0:
    return None
  return ExponentialMovingAverage(variables, decay)
