"""Published weights, served end to end, against the original's numbers.

Each case packs the original's tiny checkpoint (tests/fixtures) as the
published archive, puts it in the weights cache so that loading takes the
real download path, exports it, and classifies real JPEGs through the
SavedModel's `serving_bytes` signature, as TF Serving would. The original
code preprocessed the same JPEG bytes with its own evaluation recipe and
scored them with the same weights; the log-probabilities must agree.
"""
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import efficientnetv2_tf
import hparams
from efficientnetv2_tf import export
from efficientnetv2_tf import official
from efficientnetv2_tf.preprocessing import Normalize
from hparams.errors import UserError
from tests import commands
from tests import oracle_fixtures

CASES = [('efficientnetv2-b0', 'imagenet'),
         ('efficientnetv2-b0', 'imagenet21k-ft1k'),
         ('efficientnetv2-s', 'imagenet')]


def _place(model_name, tag, tmp_path, monkeypatch):
  """The original's checkpoint of `model_name`, packed as the archive of
  `tag` and put where the download would keep it."""
  monkeypatch.setenv(official.CACHE_ENV, str(tmp_path / 'cache'))
  directory = str(tmp_path / 'checkpoint')
  oracle_fixtures.write_official_checkpoint(directory, model_name)
  archive = official.archive_path(model_name, tag)
  os.makedirs(os.path.dirname(archive), exist_ok=True)
  oracle_fixtures.pack_archive(directory, archive)


def _check_log_probabilities(probabilities, model_name, tag):
  # Measured: 2e-6. A wrong resize, crop or JPEG decoding moves it to 1e-3
  # to 3e-2, a wrong normalisation to 0.3.
  np.testing.assert_allclose(
      np.log(probabilities), oracle_fixtures.end_to_end(
          model_name, tag)['log_probs'], atol=1e-4)


@pytest.mark.slow
def test_exported_named_weights_serve_the_originals_probabilities(
    tmp_path, monkeypatch):
  # The V1 recipe of V2-B0: mean/std, TF1 bicubic, JPEG decoded in the crop.
  model_name, tag = CASES[0]
  _place(model_name, tag, tmp_path, monkeypatch)
  source = export.load_pretrained(model_name, tag,
                                  oracle_fixtures.model_config(model_name))
  export_dir = str(tmp_path / 'export')
  export.export(source, export_dir, tflite=False, onnx_precision=None)
  serve = tf.saved_model.load(
      os.path.join(export_dir, 'saved_model')).signatures['serving_bytes']
  probabilities = serve(tf.constant(oracle_fixtures.jpegs()))['probabilities']
  _check_log_probabilities(probabilities.numpy(), model_name, tag)
  contract = hparams.published_weights(model_name, tag).contract
  recorded = json.load(open(os.path.join(export_dir, 'export.json')))
  assert recorded['weights'] == f'{model_name}.{tag}'
  assert {k: recorded['preprocessing'][k] for k in
          ('normalization', 'resize', 'crop', 'image_size')} == {
              'normalization': contract.normalization,
              'resize': contract.resize, 'crop': contract.crop,
              'image_size': contract.image_size}


@pytest.mark.parametrize('model_name, tag', CASES)
def test_named_weights_serve_the_originals_probabilities(
    model_name, tag, tmp_path, monkeypatch):
  _place(model_name, tag, tmp_path, monkeypatch)
  source = export.load_pretrained(model_name, tag,
                                  oracle_fixtures.model_config(model_name))
  assert source.image_size == oracle_fixtures.end_to_end(
      model_name, tag)['image_size']
  # The export's serving_bytes signature, traced here without the
  # SavedModel round trip (which the test above and test_export.py cover).
  serving = export.ServingModule(source)
  probabilities = serving.serving_bytes(tf.constant(oracle_fixtures.jpegs()))
  _check_log_probabilities(probabilities['probabilities'].numpy(),
                           model_name, tag)


@pytest.mark.parametrize('tag, mean, stddev', [
    ('imagenet', (0.485 * 255, 0.456 * 255, 0.406 * 255),
     (0.229 * 255, 0.224 * 255, 0.225 * 255)),
    ('imagenet21k-ft1k', 127.5, 127.5)])
def test_built_in_preprocessing_normalises_as_the_weights_expect(
    tag, mean, stddev, tmp_path, monkeypatch):
  _place('efficientnetv2-b0', tag, tmp_path, monkeypatch)
  config = oracle_fixtures.model_config('efficientnetv2-b0')
  with_preprocessing = efficientnetv2_tf.get_model(
      'efficientnetv2-b0', config, weights=tag, include_preprocessing=True)
  plain = efficientnetv2_tf.get_model('efficientnetv2-b0', config,
                                      weights=tag)
  pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3))
  np.testing.assert_allclose(
      with_preprocessing(pixels.astype('float32'), training=False),
      plain(((pixels - mean) / stddev).astype('float32'), training=False),
      atol=1e-4)


def test_preprocessing_mode_none_is_unset(tmp_path, monkeypatch):
  # None, as the error for an unknown mode says ('or unset'): the weights'
  # own normalisation (ImageNet mean and stddev), the layer's default
  # without weights; it was a KeyError.
  _place('efficientnetv2-b0', 'imagenet', tmp_path, monkeypatch)
  config = oracle_fixtures.model_config('efficientnetv2-b0')
  model = efficientnetv2_tf.get_model(
      'efficientnetv2-b0', config, weights='imagenet',
      include_preprocessing=True, preprocessing_mode=None)
  assert model.get_layer('normalize').mode == 'imagenet'
  pixels = np.float32([[[[0.0, 128.0, 255.0]]]])
  np.testing.assert_allclose(
      Normalize(None)(pixels), (pixels - 128) / 128, atol=1e-6)


def test_built_in_preprocessing_for_a_path_follows_the_presets_recipe(
    tmp_path, caplog):
  # B0's preset trains with the V1 recipe: ImageNet mean and stddev, as
  # export.load_pretrained serves such a path.
  directory = str(tmp_path / 'checkpoint')
  oracle_fixtures.write_official_checkpoint(directory, 'efficientnetv2-b0')
  config = oracle_fixtures.model_config('efficientnetv2-b0')
  with_preprocessing = efficientnetv2_tf.get_model(
      'efficientnetv2-b0', config, weights=directory,
      include_preprocessing=True)
  assert 'assuming the input contract of the recipe' in caplog.text
  plain = efficientnetv2_tf.get_model('efficientnetv2-b0', config,
                                      weights=directory)
  mean = np.float32([0.485, 0.456, 0.406]) * 255
  stddev = np.float32([0.229, 0.224, 0.225]) * 255
  pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3))
  np.testing.assert_allclose(
      with_preprocessing(pixels.astype('float32'), training=False),
      plain(((pixels - mean) / stddev).astype('float32'), training=False),
      atol=1e-4)
  contract = export.load_pretrained('efficientnetv2-b0', directory,
                                    config).contract
  assert contract.normalization == 'imagenet'


def test_named_weights_of_another_model_list_the_tags_it_has():
  with pytest.raises(UserError, match=r"no 'jft' weights are published for "
                     r'efficientnetv2-s; available: imagenet, imagenet21k, '
                     r'imagenet21k-ft1k'):
    efficientnetv2_tf.get_model('efficientnetv2-s', weights='jft')


def test_every_published_checkpoint_is_listed_and_described():
  listed = efficientnetv2_tf.list_models(pretrained=True)
  assert 'efficientnet-l2.jft-475' in listed
  assert 'efficientnet-b8.imagenet' in listed
  assert 'efficientnetv2-xl.imagenet' not in listed  # never published
  for name in listed:
    model_name, tag = name.split('.', 1)
    assert model_name in efficientnetv2_tf.list_models()
    info = efficientnetv2_tf.weights_info(model_name, tag)
    assert info.url.startswith('https://storage.googleapis.com/')
    assert info.num_classes in (1000, 21843)


@pytest.mark.slow
def test_predict_with_named_weights_gives_the_originals_probabilities(
    tmp_path, monkeypatch):
  model_name, tag = 'efficientnetv2-b0', 'imagenet'  # the V1 recipe
  _place(model_name, tag, tmp_path, monkeypatch)
  images = tmp_path / 'images'
  images.mkdir()
  for index, jpeg in enumerate(oracle_fixtures.jpegs()):
    (images / f'{index}.jpg').write_bytes(jpeg)
  model_keys = ','.join(f'model.{key}={value}' for key, value in
                        oracle_fixtures.model_config(model_name).items())
  output = tmp_path / 'predictions.json'
  commands.run_main([
      'main.py', '--mode=predict', f'--model_name={model_name}',
      f'--weights={tag}', f'--hparam_str={model_keys}',
      f'--image_path={images}', f'--predictions_file={output}',
      f'--model_dir={tmp_path / "run"}'])
  rows = sorted(json.load(open(output)), key=lambda row: row['file'])
  expected = np.exp(oracle_fixtures.end_to_end(model_name, tag)['log_probs'])
  for row, probabilities in zip(rows, expected):
    best = row['top_k'][0]
    assert best['id'] == int(np.argmax(probabilities))
    assert np.log(best['probability']) == pytest.approx(
        np.log(probabilities.max()), abs=1e-3)


@pytest.mark.parametrize('folder, tag', [
    # The 21k-ft1k archive unpacked by hand: its folder names the weights.
    ('efficientnetv2-b0-21k-ft1k', 'imagenet21k-ft1k'),
    # A folder with the model's own name: the recipe its preset trains
    # with, for B0 the V1 one, as its 'imagenet' weights were trained.
    ('efficientnetv2-b0', 'imagenet')])
def test_unpacked_archive_passed_as_a_path_serves_the_originals_probabilities(
    folder, tag, tmp_path):
  model_name = 'efficientnetv2-b0'
  directory = str(tmp_path / 'downloads' / folder)
  oracle_fixtures.write_official_checkpoint(directory, model_name)
  source = export.load_pretrained(model_name, directory,
                                  oracle_fixtures.model_config(model_name))
  assert source.contract == hparams.published_weights(model_name,
                                                      tag).contract
  serving = export.ServingModule(source)
  probabilities = serving.serving_bytes(tf.constant(oracle_fixtures.jpegs()))
  _check_log_probabilities(probabilities['probabilities'].numpy(),
                           model_name, tag)


def test_a_folder_names_published_weights_only_unambiguously():
  published_at = hparams.weights.published_at
  assert published_at('efficientnet-b0', '/d/noisy_student_efficientnet-b0'
                      ).tag == 'jft'
  assert published_at('efficientnetv2-s', '/c/efficientnetv2-s-21k_extracted/'
                      'efficientnetv2-s-21k').tag == 'imagenet21k'
  assert published_at('efficientnet-b0', '/d/efficientnet-b0') is None
  assert published_at('efficientnetv2-s', '/runs/my-s-21k-ft1k') is None
