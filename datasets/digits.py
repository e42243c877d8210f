"""The UCI handwritten digits that scikit-learn ships: the offline default.

1,797 real 8x8 grayscale images of the digits 0-9 (16 grey levels), read
from the copy inside scikit-learn, so nothing is downloaded. A fixed,
per-class `val_fraction` (default 20%) is held out for evaluation.

    >>> dataset = Digits()
    >>> dataset.split_size('train') + dataset.split_size('eval')
    1797
"""
import functools
from typing import List, Tuple

import numpy as np

from datasets.arrays import HeldOutArrays


@functools.lru_cache(maxsize=1)
def _load() -> Tuple[np.ndarray, np.ndarray]:
  from sklearn.datasets import load_digits  # pylint: disable=g-import-not-at-top
  digits = load_digits()
  # 0..16 grey levels -> 0..255 pixels.
  images = np.round(digits.images * (255 / 16)).astype(np.uint8)
  return images[..., None], digits.target.astype(np.int32)


class Digits(HeldOutArrays):
  name = 'digits'
  num_classes = 10
  preset = 'Digits'

  def load_class_names(self) -> List[str]:
    return [str(digit) for digit in range(10)]

  def arrays(self) -> Tuple[np.ndarray, np.ndarray]:
    return _load()
