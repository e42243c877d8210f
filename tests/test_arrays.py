"""In-memory array datasets and the evaluation share they hold out."""
import numpy as np

import datasets


def test_held_out_splits_are_disjoint_stratified_and_complete():
  dataset = datasets.get_dataset('digits')
  train, evaluation = dataset.indices('train'), dataset.indices('eval')
  assert not set(train) & set(evaluation)
  assert len(train) + len(evaluation) == 1797
  labels = dataset.arrays()[1]
  per_class = np.bincount(labels, minlength=10)
  np.testing.assert_array_equal(np.bincount(labels[evaluation]),
                                np.round(per_class * 0.2))
  assert dataset.split_size('trainval') == 1797


def test_stored_bytes_are_the_split_pixels():
  dataset = datasets.get_dataset('digits')
  assert dataset.stored_bytes('eval') == dataset.count('eval') * 8 * 8
