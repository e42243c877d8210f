"""The examples in every module's docstrings run and print what they say."""
import doctest
import importlib
import pkgutil

import pytest

import app
import datasets
import efficientnetv2_tf
import hparams
import main  # pylint: disable=unused-import


def _modules():
  names = []
  for package in (hparams, efficientnetv2_tf, datasets, app):
    names.append(package.__name__)
    names += [f'{package.__name__}.{info.name}'
              for info in pkgutil.iter_modules(package.__path__)]
  return sorted(names) + ['main']


@pytest.mark.parametrize('name', _modules())
def test_docstring_examples(name):
  module = importlib.import_module(name)
  import keras  # pylint: disable=g-import-not-at-top
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  result = doctest.testmod(module, extraglobs={'keras': keras, 'tf': tf},
                           optionflags=doctest.ELLIPSIS)
  assert result.failed == 0


def test_the_walk_finds_examples():
  examples = sum(
      len(test.examples)
      for name in _modules()
      for test in doctest.DocTestFinder().find(importlib.import_module(name)))
  assert examples > 30
