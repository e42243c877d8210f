"""Shared fixtures; keeps TensorFlow quiet and single-process friendly."""
import os

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import random  # pylint: disable=g-import-not-at-top

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

# A tiny EfficientNetV2 that runs in milliseconds: every stage keeps one
# block (depth 0.2) and channels shrink to a quarter.
TINY = 'width_coefficient=0.25,depth_coefficient=0.2,num_classes=10'

# A training run of that model on 16 digits per class, at 32 px, that the
# trainer's tests share.
TINY_RUN = ('model.width_coefficient=0.25,model.depth_coefficient=0.2,'
            'train.batch_size=32,data.per_class=16,train.image_size=32,'
            'eval.isize=32,data.ibase=16,eval.batch_size=120,'
            'train.lr_warmup_epoch=0.0')


def tiny_config(*overrides):
  """The config of `TINY_RUN`, then `overrides`."""
  import hparams  # pylint: disable=g-import-not-at-top
  return hparams.get_config('efficientnetv2-b0', 'digits', TINY_RUN,
                            *overrides)


def tiny_run(*overrides):
  """The specs and the bound digits dataset of `tiny_config(*overrides)`,
  as a run resolves them."""
  import datasets  # pylint: disable=g-import-not-at-top
  import hparams  # pylint: disable=g-import-not-at-top
  cfg = tiny_config(*overrides)
  dataset = datasets.bind(cfg)
  return hparams.build_specs(cfg), dataset


# The modules that take longest, first: with `pytest -n 2 --dist loadfile`
# each worker takes whole modules in collection order, and the two finish
# together only if the long ones do not come last. (pytest-xdist would
# otherwise order modules by their number of tests; `pytest_configure`
# keeps this order.)
LONGEST_FIRST = ('test_distributed_training', 'test_recipes', 'test_readme',
                 'test_main', 'test_trainer', 'test_model', 'test_export',
                 'test_distribute', 'test_runs', 'test_served_weights',
                 'test_contract_agreement')


def pytest_configure(config):
  if hasattr(config.option, 'loadscopereorder'):
    config.option.loadscopereorder = False
  if os.environ.get('PYTEST_XDIST_WORKER'):
    # Workers share the cores: one thread per op each, so that their
    # threads do not outnumber the cores.
    import tensorflow as tf  # pylint: disable=g-import-not-at-top
    tf.config.threading.set_intra_op_parallelism_threads(1)


def pytest_collection_modifyitems(items):
  def rank(item):
    name = item.module.__name__.rsplit('.', 1)[-1]
    return (LONGEST_FIRST.index(name) if name in LONGEST_FIRST
            else len(LONGEST_FIRST))
  items.sort(key=rank)  # stable: a module keeps its own order


@pytest.fixture(scope='module', autouse=True)
def _seeded_module():
  # TensorFlow's global seed too; setting it clears TensorFlow's caches, so
  # that every traced function is prepared again on its next call: once a
  # module, not once a test.
  keras.utils.set_random_seed(0)


@pytest.fixture(autouse=True)
def _seeded():
  # Keras draws the seeds of unseeded initialisers and layers from Python's
  # generator.
  random.seed(0)
  np.random.seed(0)


@pytest.fixture(scope='session')
def v2_b0(tmp_path_factory):
  """An official-style efficientnetv2-b0 checkpoint of random weights:
  (directory, the reference's EMA logits of `tf1_reference.IMAGES`,
  values)."""
  from hparams import models  # pylint: disable=g-import-not-at-top
  from tests import tf1_reference  # pylint: disable=g-import-not-at-top
  return tf1_reference.official_checkpoint(
      tf1_reference.IMAGES, tmp_path_factory.mktemp('v2b0'),
      'efficientnetv2-b0', models.V2_BASE_BLOCKS)
