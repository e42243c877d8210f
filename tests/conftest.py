"""Shared fixtures; keeps TensorFlow quiet and single-process friendly."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

# A tiny EfficientNetV2 that runs in milliseconds: every stage keeps one
# block (depth 0.2) and channels shrink to a quarter.
TINY = 'width_coefficient=0.25,depth_coefficient=0.2,num_classes=10'


@pytest.fixture(autouse=True)
def _seeded():
  keras.utils.set_random_seed(0)
