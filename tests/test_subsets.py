"""Subsets of a split and the shares held out of one."""
import collections

import numpy as np
import pytest
import tensorflow as tf

from datasets import subsets
from hparams.errors import UserError


def test_holdout_is_fixed_and_keeps_both_sides_of_small_classes():
  labels = [0] * 10 + [1] * 2 + [2] * 1
  mask = subsets.holdout(labels, 0.3)
  np.testing.assert_array_equal(mask, subsets.holdout(labels, 0.3))
  assert mask[:10].sum() == 3 and mask[10:12].sum() == 1 and not mask[12]


def test_cap_per_class_keeps_the_first_of_each_class_in_order():
  labels = [2, 0, 2, 2, 1, 0, 0, 2]
  examples = tf.data.Dataset.from_tensor_slices((tf.range(8), labels))
  kept = list(subsets.cap_per_class(examples, 3, 2).as_numpy_iterator())
  assert [int(i) for i, _ in kept] == [0, 1, 2, 4, 5]
  assert collections.Counter(int(l) for _, l in kept) == {0: 2, 1: 1, 2: 2}


def test_subset_of_everything_is_marked_so():
  assert subsets.Subset().everything
  assert not subsets.Subset(per_class=3).everything
  with pytest.raises(UserError, match=r'data.fraction must be in \(0, 1\]'):
    subsets.Subset(fraction=0)


def test_take_spread_keeps_evenly_spaced_examples_of_the_order():
  examples = tf.data.Dataset.from_tensor_slices((tf.range(10), tf.range(10)))
  kept = [int(i) for i, _ in subsets.take_spread(examples, 10, 4)]
  assert kept == [2, 4, 7, 9]
  assert subsets.Subset(fraction=0.35).kept(10) == 4
  assert subsets.Subset(fraction=0.01).kept(10) == 1
