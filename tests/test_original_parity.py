"""Parity with the original google/automl code, on numbers it computed.

The fixtures (`tests/oracle_fixtures.py`) hold the original's eval
preprocessing of real JPEG files, and checkpoints its model code saved with
the logits it computes from them. Here the same inputs go through this
package's public paths.
"""
import numpy as np
import pytest
import tensorflow as tf

import datasets
import efficientnetv2_tf
from efficientnetv2_tf import augment
from efficientnetv2_tf import official
from efficientnetv2_tf.preprocessing import Augmentation
from efficientnetv2_tf.preprocessing import preprocess_image
from tests import oracle_fixtures

MODELS = ['efficientnetv2-b0', 'efficientnetv2-s', 'efficientnet-b0']


@pytest.mark.parametrize('recipe, size', [
    (recipe, size) for recipe, sizes in oracle_fixtures.RECIPE_SIZES.items()
    for size in sizes])
def test_eval_preprocessing_of_jpeg_files_matches_the_original(recipe, size):
  augmentation = Augmentation(oracle_fixtures.RECIPE_AUGNAMES[recipe])
  kept = np.ix_(oracle_fixtures.kept_pixels(size),
                oracle_fixtures.kept_pixels(size))
  differences = []
  for index, jpeg in enumerate(oracle_fixtures.jpegs()):
    output = preprocess_image(tf.constant(jpeg), size, training=False,
                              augmentation=augmentation).numpy()
    assert output.shape == (size, size, 3)
    expected = oracle_fixtures.preprocessed(recipe, size, index)
    differences.append(float(np.abs(output[kept] - expected).max()))
  print(f'{recipe} {size} px: max |difference| per image = '
        + ', '.join(f'{d:.1e}' for d in differences))
  assert max(differences) < 1e-5


def test_dataset_evaluation_of_jpeg_files_matches_the_original(tmp_path):
  # The files go through an image folder's evaluation pipeline, which
  # decodes them before preprocessing unless the recipe needs the bytes.
  # Each file is a class of its own, which tells the outputs apart.
  for split in ('train', 'val'):
    for index, jpeg in enumerate(oracle_fixtures.jpegs()):
      folder = tmp_path / split / f'image{index}'
      folder.mkdir(parents=True)
      (folder / 'image.jpg').write_bytes(jpeg)
  dataset = datasets.get_dataset('image_folder', data_dir=str(tmp_path))
  for recipe, sizes in oracle_fixtures.RECIPE_SIZES.items():
    augmentation = Augmentation(oracle_fixtures.RECIPE_AUGNAMES[recipe])
    for size in sizes:
      kept = np.ix_(oracle_fixtures.kept_pixels(size),
                    oracle_fixtures.kept_pixels(size))
      for images, labels in dataset.pipeline(
          'eval', 1, training=False, image_size=size,
          augmentation=augmentation):
        expected = oracle_fixtures.preprocessed(
            recipe, size, int(np.argmax(labels[0])))
        difference = np.abs(images[0].numpy()[kept] - expected).max()
        assert difference < 1e-5, (recipe, size, difference)


@pytest.mark.parametrize('size', [24, 20, 32])
def test_fine_tuning_hands_randaugment_the_originals_pixels(size,
                                                            monkeypatch):
  # The original's flip is random: its image or the mirror of it.
  handed = []

  def recording_distort(pixels, *unused_args, **unused_kwargs):
    handed.append(pixels.numpy())
    return pixels

  monkeypatch.setattr(augment, 'distort', recording_distort)
  fixture = oracle_fixtures.load('finetune')
  image = tf.constant(fixture['image'])
  for fixes in (False, True):
    preprocess_image(image, size, True,
                     Augmentation('ft_randaug', fixes=fixes),
                     tf.constant([1, 2]))
  expected = fixture[f'input/{size}']
  assert any(np.array_equal(handed[0], candidate)
             for candidate in (expected, expected[:, ::-1]))
  # The fixes leave out the round trip, which only ever lowers a pixel; at
  # the image's own size they hand over the image itself.
  assert (handed[1] >= handed[0]).all()
  if size == fixture['image'].shape[0]:
    assert any(np.array_equal(handed[1], candidate) for candidate in (
        fixture['image'], fixture['image'][:, ::-1]))
    assert not np.array_equal(handed[0], handed[1])


def _checkpoint(tmp_path, model_name, classifier_scope='head'):
  return oracle_fixtures.write_official_checkpoint(
      str(tmp_path / 'ckpt'), model_name, classifier_scope)


@pytest.mark.parametrize('classifier_scope', oracle_fixtures.CLASSIFIER_SCOPES)
@pytest.mark.parametrize('model_name', MODELS)
def test_checkpoint_saved_by_the_original_gives_its_ema_logits(
    tmp_path, model_name, classifier_scope):
  prefix = _checkpoint(tmp_path, model_name, classifier_scope)
  model = efficientnetv2_tf.get_model(
      model_name, oracle_fixtures.model_config(model_name), weights=prefix)
  images = oracle_fixtures.load('official_checkpoints')['images']
  logits = model(images, training=False).numpy()
  expected = oracle_fixtures.logits(model_name)
  max_diff = np.abs(logits - expected).max()
  print(f'{model_name} ({classifier_scope}/dense): max |logit difference| '
        f'= {max_diff:.1e}')
  assert max_diff < 1e-4
  # The raw weights would give other logits: the EMA ones were loaded.
  assert np.abs(oracle_fixtures.logits(model_name, ema=False) -
                expected).max() > 0.5


def test_raw_weights_of_an_original_checkpoint_give_its_raw_logits(tmp_path):
  prefix = _checkpoint(tmp_path, 'efficientnetv2-s')
  model = efficientnetv2_tf.get_model(
      'efficientnetv2-s', oracle_fixtures.model_config('efficientnetv2-s'))
  official.load_official(model, prefix, 'efficientnetv2-s',
                            prefer_ema=False)
  images = oracle_fixtures.load('official_checkpoints')['images']
  np.testing.assert_allclose(model(images, training=False),
                             oracle_fixtures.logits('efficientnetv2-s',
                                                    ema=False), atol=1e-4)
