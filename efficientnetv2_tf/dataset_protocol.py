"""What the trainer and the run layer read from a dataset.

The library never imports the `datasets` package: it receives a dataset
object, and this is all it may use of one. `Trainer` reads the training
split's size and builds its training and evaluation input through
`distribute_fn`; `runs.run` writes `class_names` to labels.txt and prints
`name`, `num_classes` and the training split's size. Export reads the
labels a run saved, not the dataset.

Anything with these members will do; the check is by name only:

    >>> class Constant:
    ...   name = 'constant'
    ...   num_classes = 2
    ...   class_names = ['no', 'yes']
    ...   def split_size(self, split):
    ...     return 8
    ...   def distribute_fn(self, split, batch_size, **kwargs):
    ...     return lambda context: tf.data.Dataset.range(batch_size)
    >>> isinstance(Constant(), DatasetSource)
    True
"""
from typing import Any, Callable, List, Protocol, runtime_checkable

import tensorflow as tf


@runtime_checkable
class DatasetSource(Protocol):
  """A labelled image dataset, as the trainer sees it."""

  @property
  def name(self) -> str:
    """The dataset's name, as recorded in results."""

  @property
  def num_classes(self) -> int:
    """The number of classes, the classifier's output width."""

  @property
  def class_names(self) -> List[str]:
    """The class names in label order, saved beside a run's model."""

  def split_size(self, split: str) -> int:
    """The number of examples an epoch of `split` draws."""

  def distribute_fn(
      self, split: str, batch_size: int, **kwargs: Any
  ) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A `dataset_fn` for `strategy.distribute_datasets_from_function`.

    It yields batches of (images [B, size, size, 3], soft labels
    [B, num_classes]) of `split`, the per-replica share of the global
    `batch_size`. The trainer passes `training`, `image_size`,
    `augmentation`, `dtype` and, in training, `seed`.
    """
