"""Datasets held in memory as (images, labels) arrays.

A subclass gives `arrays()`; a fixed share of each class is held out as
'eval', so that data shipped as one pool still has an evaluation split:

    >>> import numpy as np
    >>> class Shades(HeldOutArrays):
    ...   name = 'doc-shades'
    ...   def load_class_names(self):
    ...     return ['dark', 'light']
    ...   def arrays(self):
    ...     images = np.repeat([0, 255], 5).astype('uint8')
    ...     return images.reshape(-1, 1, 1, 1), np.repeat([0, 1], 5)
    >>> dataset = Shades(val_fraction=0.2)
    >>> [dataset.split_size(split) for split in Shades.splits]
    [8, 2, 10]
"""
from typing import Tuple

import numpy as np
import tensorflow as tf

from datasets.base import Dataset
from datasets.subsets import holdout


class HeldOutArrays(Dataset):
  """A dataset held in memory as (images, labels) arrays, with a fixed
  per-class `val_fraction` held out as 'eval'; 'trainval' is all of it.

  A subclass gives `arrays()`: uint8 images [n, height, width, channels]
  and integer labels [n].
  """
  splits = ('train', 'eval', 'trainval')

  def arrays(self) -> Tuple[np.ndarray, np.ndarray]:
    raise NotImplementedError

  def indices(self, split: str) -> np.ndarray:
    """Which of the arrays' examples `split` holds, in order."""
    labels = self.arrays()[1]
    if split == 'trainval':
      return np.arange(len(labels))
    evaluation = holdout(labels, self.val_fraction)
    return np.flatnonzero(evaluation if split == 'eval' else ~evaluation)

  def source(self, split: str) -> tf.data.Dataset:
    images, labels = self.arrays()
    indices = self.indices(split)
    return tf.data.Dataset.from_tensor_slices((images[indices],
                                               labels[indices]))

  def count(self, split: str) -> int:
    return len(self.indices(split))

  def stored_bytes(self, split: str) -> int:
    return self.count(split) * self.arrays()[0][0].nbytes
