import dataclasses

import numpy as np
import pytest

import efficientnetv2_tf
import hparams
from efficientnetv2_tf import official
from hparams import models
from hparams.errors import UserError
from tests import tf1_reference
from tests.tf1_reference import IMAGES


@pytest.mark.parametrize('model_name, blocks_args, scaling', [
    ('efficientnetv2-b0', models.V2_BASE_BLOCKS, {}),
    ('efficientnet-b0', models.V1_BLOCKS, {}),
    ('efficientnetv2-s', models.V2_S_BLOCKS[:4], {}),
    pytest.param('efficientnet-b3', models.V1_BLOCKS,
                 {'width': 1.2, 'depth': 1.4, 'floor': 0.9},
                 marks=pytest.mark.slow),
])
def test_official_checkpoint_reproduces_reference_logits(
    tmp_path, model_name, blocks_args, scaling):
  path, expected, _ = tf1_reference.official_checkpoint(
      IMAGES, tmp_path, model_name, blocks_args, **scaling)
  model = efficientnetv2_tf.get_model(
      model_name, {'blocks_args': blocks_args}, weights=str(path))
  logits = model(IMAGES, training=False).numpy()
  max_diff = np.abs(logits - expected).max()
  print(f'{model_name}: max |logit difference| = {max_diff:.2e}')
  assert max_diff < 1e-4
  assert np.abs(expected).max() > 0.1  # the comparison is not trivially 0


def test_variable_map_covers_every_weight_once(v2_b0):
  model = efficientnetv2_tf.get_model('efficientnetv2-b0')
  mapped = official.official_variable_map(model, 'efficientnetv2-b0')
  assert sorted(id(v) for v in mapped.values()) == sorted(
      id(w) for w in model.weights)
  _, _, values = v2_b0
  assert set(mapped) == set(values)


def test_ema_values_are_preferred_and_slots_ignored(v2_b0):
  path, _, values = v2_b0
  model = efficientnetv2_tf.get_model('efficientnetv2-b0')
  report = official.load_official(model, path, 'efficientnetv2-b0')
  assert report.loaded == report.from_ema == len(values) == len(model.weights)
  kernel = model.get_layer('stem').conv.kernel.numpy()
  np.testing.assert_array_equal(kernel,
                                values['efficientnetv2-b0/stem/conv2d/kernel'])


def test_raw_values_load_when_ema_is_not_wanted(v2_b0):
  path, _, values = v2_b0
  model = efficientnetv2_tf.get_model('efficientnetv2-b0')
  report = official.load_official(model, path, 'efficientnetv2-b0',
                                  prefer_ema=False)
  assert report.from_ema == 0
  np.testing.assert_allclose(
      model.get_layer('head').bn.gamma.numpy(),
      values['efficientnetv2-b0/head/tpu_batch_normalization/gamma'] + 0.5)


def test_without_top_the_head_is_not_needed(v2_b0):
  path, _, values = v2_b0
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', include_top=False,
                                      weights=str(path))
  assert tuple(model(IMAGES).shape) == (2, 1280)
  np.testing.assert_array_equal(
      model.get_layer('head').bn.gamma.numpy(),
      values['efficientnetv2-b0/head/tpu_batch_normalization/gamma'])


def test_head_classes_are_read_from_the_classifier_bias():
  shapes = {'m/stem/conv2d/kernel': [3, 3, 3, 8], 'm/head_1/dense/bias': [21]}
  assert official.head_classes(shapes, 'm') == 21
  assert official.head_classes({'m/stem/conv2d/kernel': [3, 3, 3, 8]},
                               'm') is None


def test_mismatch_lists_missing_unexpected_and_wrong_shape(tmp_path):
  name = 'efficientnetv2-b0'
  path, _, _ = tf1_reference.official_checkpoint(
      IMAGES, tmp_path, name, models.V2_BASE_BLOCKS,
      drop=[f'{name}/blocks_2/conv2d_1/kernel',
            f'{name}/blocks_2/conv2d_1/kernel/ExponentialMovingAverage'],
      extra={f'{name}/blocks_99/conv2d/kernel': np.zeros((1,), np.float32),
             f'{name}/head/conv2d/kernel/ExponentialMovingAverage':
                 np.zeros((1, 1, 192, 7), np.float32)})
  model = efficientnetv2_tf.get_model(name)
  with pytest.raises(UserError) as err:
    official.load_official(model, str(path), name)
  message = str(err.value)
  assert '1 missing (efficientnetv2-b0/blocks_2/conv2d_1/kernel)' in message
  assert '1 unexpected (efficientnetv2-b0/blocks_99/conv2d/kernel)' in message
  assert ('1 of the wrong shape (checkpoint vs model) (efficientnetv2-b0/'
          'head/conv2d/kernel/ExponentialMovingAverage (1, 1, 192, 7) vs '
          '(1, 1, 192, 1280))') in message
  assert '\n' not in message


def test_wrong_shape_is_reported(tmp_path):
  name = 'efficientnetv2-b0'
  path, _, _ = tf1_reference.official_checkpoint(
      IMAGES, tmp_path, name, models.V2_BASE_BLOCKS, width=1.1)
  model = efficientnetv2_tf.get_model(name)
  with pytest.raises(UserError, match=r'of the wrong shape \(checkpoint vs '
                     r'model\) \(efficientnetv2-b0/blocks_3/conv2d_1/kernel/'
                     r'ExponentialMovingAverage \(1, 1, 128, 56\) vs '
                     r'\(1, 1, 128, 48\), '):
    official.load_official(model, str(path), name)


def test_checkpoint_of_another_variant_is_refused(v2_b0):
  path, _, _ = v2_b0
  with pytest.raises(UserError, match="holds 'efficientnetv2-b0' weights; "
                     "this model is 'efficientnetv2-b1'"):
    efficientnetv2_tf.get_model('efficientnetv2-b1', weights=str(path))


def test_checkpoint_with_only_ema_values_loads(tmp_path):
  name = 'efficientnetv2-b0'
  blocks_args = models.V2_BASE_BLOCKS[:2]
  weights = tf1_reference.RandomWeights()
  expected = tf1_reference.forward(IMAGES, weights, name, blocks_args, 1000)
  tf1_reference.write_checkpoint(
      str(tmp_path / 'model'),
      {n + official.EMA_SUFFIX: v for n, v in weights.values.items()})
  model = efficientnetv2_tf.get_model(name, {'blocks_args': blocks_args},
                                      weights=str(tmp_path / 'model'))
  np.testing.assert_allclose(model(IMAGES, training=False), expected,
                             atol=1e-4)


def test_unpublished_weights_are_reported():
  with pytest.raises(UserError, match="no 'jft' weights are published for "
                     'efficientnetv2-s; available: imagenet, imagenet21k'):
    efficientnetv2_tf.get_model('efficientnetv2-s', weights='jft')


def test_offline_download_names_the_url_and_how_to_pass_a_path(
    monkeypatch, tmp_path):
  url = 'http://127.0.0.1:9/efficientnetv2-b0.tgz'  # nothing listens here
  entry = dataclasses.replace(
      hparams.published_weights('efficientnetv2-b0', 'imagenet'), url=url)
  monkeypatch.setattr(official, 'published_weights', lambda *_: entry)
  monkeypatch.setenv(official.CACHE_ENV, str(tmp_path))
  with pytest.raises(UserError) as err:
    efficientnetv2_tf.get_model('efficientnetv2-b0', weights='imagenet')
  assert url in str(err.value)
  assert "weights='/path/to/dir'" in str(err.value)
  assert str(tmp_path / 'efficientnetv2_tf' / 'efficientnetv2-b0.tgz') in str(
      err.value)


def test_named_weights_are_fetched_unpacked_and_loaded(v2_b0, monkeypatch,
                                                       tmp_path):
  path, expected, _ = v2_b0
  monkeypatch.setenv(official.CACHE_ENV, str(tmp_path / 'cache'))
  tf1_reference.place_in_cache(path, 'efficientnetv2-b0', 'imagenet')
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', weights='imagenet')
  np.testing.assert_allclose(model(IMAGES, training=False), expected,
                             atol=1e-4)


def test_named_weights_go_to_a_cache_directory_not_made_yet(
    v2_b0, monkeypatch, tmp_path):
  cache = tmp_path / 'new' / 'cache'
  monkeypatch.setenv(official.CACHE_ENV, str(cache))
  tf1_reference.place_in_cache(v2_b0[0], 'efficientnetv2-b0', 'imagenet')
  prefix = official.download('efficientnetv2-b0', 'imagenet')
  assert prefix.startswith(str(cache / 'efficientnetv2_tf'))
  assert (cache / 'efficientnetv2_tf' / 'efficientnetv2-b0.tgz').is_file()


def _ema_only_checkpoint(directory, blocks_args, num_classes=1000):
  name = 'efficientnetv2-b0'
  weights = tf1_reference.RandomWeights()
  tf1_reference.forward(IMAGES, weights, name, blocks_args, num_classes)
  prefix = str(directory / 'model')
  tf1_reference.write_checkpoint(
      prefix, {n + official.EMA_SUFFIX: v for n, v in weights.values.items()})
  return prefix


def test_ema_only_checkpoint_of_a_deeper_model_is_refused(tmp_path):
  prefix = _ema_only_checkpoint(tmp_path, ['r1_k3_s1_e1_i32_o16_c1',
                                           'r3_k3_s2_e4_i16_o32_c1'])
  with pytest.raises(UserError, match=r'unexpected \(efficientnetv2-b0/'
                     r'blocks_3/'):
    efficientnetv2_tf.get_model('efficientnetv2-b0', {'blocks_args': [
        'r1_k3_s1_e1_i32_o16_c1', 'r2_k3_s2_e4_i16_o32_c1']}, weights=prefix)


def test_ema_only_checkpoint_gives_its_classes_or_yields_its_classifier(
    tmp_path):
  blocks_args = models.V2_BASE_BLOCKS[:2]
  prefix = _ema_only_checkpoint(tmp_path, blocks_args, num_classes=21)
  model = efficientnetv2_tf.get_model(
      'efficientnetv2-b0', {'blocks_args': blocks_args}, weights=prefix)
  assert model.num_classes == 21
  finetune = efficientnetv2_tf.get_model(
      'efficientnetv2-b0', {'blocks_args': blocks_args, 'num_classes': 5},
      weights=prefix)
  assert tuple(finetune(IMAGES, training=False).shape) == (2, 5)
