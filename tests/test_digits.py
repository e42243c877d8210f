"""The digits that scikit-learn ships."""
import numpy as np

import datasets


def test_digits_pixels_span_the_full_range():
  images, labels = datasets.Digits().arrays()
  assert images.shape == (1797, 8, 8, 1) and images.dtype == np.uint8
  assert images.min() == 0 and images.max() == 255
  assert set(labels) == set(range(10))
