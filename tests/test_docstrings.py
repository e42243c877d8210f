"""The examples in the library's docstrings run and print what they say."""
import doctest
import importlib

import pytest

MODULES = ['hparams', 'hparams.config', 'hparams.registry',
           'efficientnetv2_tf', 'efficientnetv2_tf.blockargs',
           'efficientnetv2_tf.model', 'efficientnetv2_tf.augment',
           'efficientnetv2_tf.preprocessing', 'efficientnetv2_tf.progressive', 'datasets', 'datasets.base',
           'datasets.digits', 'datasets.folder', 'datasets.tfds_datasets']


@pytest.mark.parametrize('name', MODULES)
def test_docstring_examples(name):
  module = importlib.import_module(name)
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  result = doctest.testmod(module, extraglobs={'keras': keras, 'tf': tf},
                           optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0
  assert result.failed == 0
