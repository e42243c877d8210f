"""Data and weights for documented commands run reduced, and their runs.

Fixtures and helpers that the tests of docs/recipes.md and README.md
share. pytest looks fixtures up by name in the test module, so a module
imports `data_dirs` together with the fixtures it reads (`birds_dir`,
`imagenet_dir`, `imagenet21k_dir`):

    argv = commands.reduce(argv, tmp_path, data_dirs)
    run_dir = reduced_runs.train(argv)
    assert reduced_runs.results(run_dir)['step'] == 1
"""
import glob
import json
import os
from typing import Any, Dict, Iterator, List, Sequence

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds
import yaml

import efficientnetv2_tf
from efficientnetv2_tf import loading
from efficientnetv2_tf import official
import hparams
from hparams import models
from tests import commands
from tests import image_files
from tests import tf1_reference

BATCH = commands.TINY['train.batch_size']
# Examples per split of every tfds mock: one training batch.
TFDS_EXAMPLES = BATCH
BIRD_SPECIES = 25


@pytest.fixture(scope='module')
def unoptimised_graphs() -> Iterator[None]:
  """Turns off TensorFlow's graph optimisation for a module's tests: for a
  tiny model it takes longer than the training it would speed up."""
  key = 'disable_meta_optimizer'
  previous = tf.config.optimizer.get_experimental_options().get(key, False)
  tf.config.optimizer.set_experimental_options({key: True})
  yield
  tf.config.optimizer.set_experimental_options({key: previous})


@pytest.fixture(scope='module')
def birds_dir(tmp_path_factory) -> str:
  """The 25 species, one training and one validation JPEG each."""
  root = tmp_path_factory.mktemp('birds')
  for species in range(BIRD_SPECIES):
    for split in ('training_set', 'validation_set'):
      image_files.write(str(root / split / f'species_{species:02d}' /
                            'bird.jpg'),
                        image_files.pixels(24, 32, seed=species))
  return str(root)


@pytest.fixture(scope='module')
def imagenet_dir(tmp_path_factory) -> str:
  """ImageNet's TFRecord layout in small (`image_files.write_imagenet`)."""
  return image_files.write_imagenet(str(tmp_path_factory.mktemp('imagenet')))


@pytest.fixture(scope='module')
def imagenet21k_dir(tmp_path_factory) -> str:
  """21 files: 0-15 are eval (one image each), 16-19 minival and 20 train
  (one batch)."""
  root = tmp_path_factory.mktemp('imagenet21k')
  jpeg = image_files.encode(image_files.pixels(20, 30), 'jpeg')
  for i in range(21):
    image_files.write_records(
        str(root / f'imagenet21k-{i:05d}'),
        [{'image': image_files.bytes_feature(jpeg),
          'labels': image_files.int64_feature([i, 21842])}] *
        (BATCH if i == 20 else 1))
  return str(root)


@pytest.fixture(scope='module')
def data_dirs(tmp_path_factory, birds_dir, imagenet_dir,
              imagenet21k_dir) -> Dict[str, str]:
  """`--data_dir` of every dataset the documented commands read; tfds
  datasets are mocked by `train`."""
  tfds_dir = str(tmp_path_factory.mktemp('tfds'))
  return {'fashion_mnist': tfds_dir, 'mnist': tfds_dir,
          'imagenette': tfds_dir, 'imagenet2012': tfds_dir,
          'cifar10': tfds_dir, 'birds': birds_dir,
          'image_folder': birds_dir, 'imagenet': imagenet_dir,
          'imagenet21k': imagenet21k_dir}


@pytest.fixture(scope='module')
def published_weights(tmp_path_factory) -> Iterator[str]:
  """Serves the named weights of efficientnetv2-b0 and -s: official-format
  archives of the models `commands.TINY` makes, downloaded through the
  real path into the cache directory this yields.

  Exports of named weights (`--mode=export --weights=imagenet`) take no
  model config, so they are made to build that tiny model too.
  """
  root = tmp_path_factory.mktemp('weights')
  images = np.zeros((1, 32, 32, 3), 'float32')
  tiny_model = {key.split('.', 1)[1]: value
                for key, value in commands.TINY.items()
                if key.startswith('model.')}

  def get_tiny_model(model_name, model_config=None, **kwargs):
    return efficientnetv2_tf.get_model(
        model_name, {**tiny_model, **hparams.as_mapping(model_config)},
        **kwargs)
  with pytest.MonkeyPatch.context() as patch:
    patch.setattr(loading, 'get_model', get_tiny_model)
    cache = root / 'cache'
    patch.setenv(official.CACHE_ENV, str(cache))
    for name, blocks in [('efficientnetv2-b0', models.V2_BASE_BLOCKS),
                         ('efficientnetv2-s', models.V2_S_BLOCKS)]:
      directory, _, _ = tf1_reference.official_checkpoint(
          images, root / name, name, blocks,
          width=commands.TINY['model.width_coefficient'],
          depth=commands.TINY['model.depth_coefficient'])
      for tag in ('imagenet', 'imagenet21k-ft1k'):
        tf1_reference.place_in_cache(directory, name, tag)
    yield str(cache)


def train(argv: Sequence[str]) -> str:
  """Runs a reduced training command, tfds reading mock examples; returns
  the run's directory, the sweep's sub-directory for a sweep."""
  with tfds.testing.mock_data(num_examples=TFDS_EXAMPLES):
    commands.run_main(argv)
  found = glob.glob(os.path.join(commands.given_flags(argv)['model_dir'],
                                 '**', 'results.json'), recursive=True)
  assert len(found) == 1, found
  return os.path.dirname(found[0])


def spy(monkeypatch, module: Any, name: str) -> List[Any]:
  """Replaces `module.name` by a wrapper that records what each call
  returns."""
  returned = []
  real = getattr(module, name)

  def wrapper(*args, **kwargs):
    returned.append(real(*args, **kwargs))
    return returned[-1]
  monkeypatch.setattr(module, name, wrapper)
  return returned


def results(run_dir: str) -> Dict[str, Any]:
  with open(os.path.join(run_dir, 'results.json')) as f:
    return json.load(f)


def saved_config(run_dir: str) -> Dict[str, Any]:
  with open(os.path.join(run_dir, 'config.yaml')) as f:
    return yaml.safe_load(f)
