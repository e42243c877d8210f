"""Which examples of a split a dataset uses: subsets and held-out shares.

`Subset` takes part of a training split (`data.fraction`, then at most
`data.per_class` of each class); `holdout` marks the fixed share of each
class that sources without an evaluation split set aside for one.

    >>> mask = holdout([0, 0, 0, 0, 1, 1], 0.25)  # one of each class
    >>> int(mask[:4].sum()), int(mask[4:].sum())
    (1, 1)
"""
import dataclasses
import math
from typing import Optional, Sequence

import numpy as np
import tensorflow as tf

from hparams.errors import UserError


@dataclasses.dataclass(frozen=True)
class Subset:
  """Which part of a split to use: a fraction, then at most N per class."""
  per_class: Optional[int] = None
  fraction: float = 1.0

  def __post_init__(self):
    if self.per_class is not None and (
        not isinstance(self.per_class, int) or self.per_class <= 0):
      raise UserError(f'data.per_class must be a positive integer (or None '
                      f'for all images); received: {self.per_class!r}')
    if not isinstance(self.fraction, (int, float)) or not (
        0 < self.fraction <= 1):
      raise UserError(f'data.fraction must be in (0, 1]; received: '
                      f'{self.fraction!r}')

  @property
  def everything(self) -> bool:
    return self.per_class is None and self.fraction == 1

  def kept(self, total: int) -> int:
    """How many of a split's `total` examples `fraction` keeps."""
    return max(1, math.ceil(total * self.fraction))


def take_spread(examples: tf.data.Dataset, total: int,
                kept: int) -> tf.data.Dataset:
  """`kept` of the `total` examples, evenly spaced through their order, so
  that a source sorted by class gives a share of every class, as a shuffled
  one does; the first `kept` would give the first classes alone."""

  def keep(position, example):
    del example
    return (position + 1) * kept // total > position * kept // total

  return examples.enumerate().filter(keep).map(lambda _, example: example)


# What `checked_label` says; main.py reports it in one line.
BAD_LABEL = 'a label outside'


def checked_label(label: tf.Tensor, num_classes: int,
                  dataset: str) -> tf.Tensor:
  """`label` as an int32, or an error naming it and `dataset` when it is
  not a class: `tf.one_hot` would make it a row of zeros, which trains
  nothing and evaluates as class 0."""
  label = tf.cast(label, tf.int32)
  check = tf.debugging.Assert((label >= 0) & (label < num_classes), [
      f'dataset {dataset} has {BAD_LABEL} 0..{num_classes - 1}:', label])
  with tf.control_dependencies([check]):
    return tf.identity(label)


def cap_per_class(examples: tf.data.Dataset, num_classes: int,
                  per_class: int, dataset: str = '') -> tf.data.Dataset:
  """Keeps the first `per_class` examples of each class, in order."""

  def count(seen, example):
    label = checked_label(example[1], num_classes, dataset)
    seen = tf.tensor_scatter_nd_add(seen, [[label]], [1])
    return seen, (example, seen[label] <= per_class)

  capped = examples.scan(tf.zeros([num_classes], tf.int32), count)
  return capped.filter(lambda example, keep: keep).map(
      lambda example, keep: example)


def holdout(labels: Sequence[int], fraction: float) -> np.ndarray:
  """A fixed, per-class random mask marking `fraction` of each class.

  The same labels always give the same mask; a class of two or more
  examples keeps at least one on each side.
  """
  labels = np.asarray(labels)
  mask = np.zeros(len(labels), bool)
  rng = np.random.default_rng(0)
  for label in np.unique(labels):
    members = rng.permutation(np.flatnonzero(labels == label))
    count = int(round(len(members) * fraction))
    if len(members) >= 2:
      count = min(max(count, 1), len(members) - 1)
    mask[members[:count]] = True
  return mask
