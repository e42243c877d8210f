import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnetv2_tf
import hparams
from efficientnetv2_tf import checkpoints
from efficientnetv2_tf import optim
from hparams import models
from hparams.errors import UserError
from tests import tf1_reference
from tests.conftest import TINY

IMAGE = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3)).astype(
    'float32')


@pytest.fixture(scope='module')
def v2_b0(tmp_path_factory):
  return tf1_reference.official_checkpoint(
      IMAGE, tmp_path_factory.mktemp('v2b0'), 'efficientnetv2-b0',
      models.V2_BASE_BLOCKS)


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
      IMAGE, tmp_path, model_name, blocks_args, **scaling)
  model = efficientnetv2_tf.get_model(
      model_name, {'blocks_args': blocks_args}, weights=str(path))
  logits = model(IMAGE, training=False).numpy()
  max_diff = np.abs(logits - expected).max()
  print(f'{model_name}: max |logit difference| = {max_diff:.2e}')
  assert max_diff < 1e-4
  assert np.abs(expected).max() > 0.1  # the comparison is not trivially 0


def test_ema_values_are_preferred_and_slots_ignored(v2_b0):
  path, _, values = v2_b0
  model = efficientnetv2_tf.get_model('efficientnetv2-b0')
  report = checkpoints.load_official(model, path, 'efficientnetv2-b0')
  assert report.loaded == report.from_ema == len(values) == len(model.weights)
  kernel = model.get_layer('stem').conv.kernel.numpy()
  np.testing.assert_array_equal(kernel,
                                values['efficientnetv2-b0/stem/conv2d/kernel'])


def test_raw_values_load_when_ema_is_not_wanted(v2_b0):
  path, _, values = v2_b0
  model = efficientnetv2_tf.get_model('efficientnetv2-b0')
  report = checkpoints.load_official(model, path, 'efficientnetv2-b0',
                                     prefer_ema=False)
  assert report.from_ema == 0
  np.testing.assert_allclose(
      model.get_layer('head').bn.gamma.numpy(),
      values['efficientnetv2-b0/head/tpu_batch_normalization/gamma'] + 0.5)


def test_other_num_classes_skips_the_head_and_loads_the_rest(v2_b0):
  path, _, values = v2_b0
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', 'num_classes=10',
                                      weights=str(path))
  dense = model.get_layer('predictions')
  assert tuple(dense.kernel.shape) == (1280, 10)
  assert not dense.bias.numpy().any()  # as initialised; the checkpoint's != 0
  np.testing.assert_array_equal(
      model.get_layer('blocks_15').project_bn.moving_variance.numpy(),
      values['efficientnetv2-b0/blocks_15/tpu_batch_normalization_2/'
             'moving_variance'])


def test_without_top_the_head_is_not_needed(v2_b0):
  path, _, values = v2_b0
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', include_top=False,
                                      weights=str(path))
  assert tuple(model(IMAGE).shape) == (2, 1280)
  np.testing.assert_array_equal(
      model.get_layer('head').bn.gamma.numpy(),
      values['efficientnetv2-b0/head/tpu_batch_normalization/gamma'])


def test_default_num_classes_follows_the_checkpoint_head(tmp_path):
  path, expected, _ = tf1_reference.official_checkpoint(
      IMAGE, tmp_path, 'efficientnetv2-b0', models.V2_BASE_BLOCKS[:2],
      num_classes=21, state=False)  # no `checkpoint` file: found by index
  model = efficientnetv2_tf.get_model(
      'efficientnetv2-b0', {'blocks_args': models.V2_BASE_BLOCKS[:2]},
      weights=str(path))
  assert model.num_classes == 21
  np.testing.assert_allclose(model(IMAGE, training=False), expected, atol=1e-4)


def test_mismatch_lists_missing_unexpected_and_wrong_shape(tmp_path):
  name = 'efficientnetv2-b0'
  path, _, _ = tf1_reference.official_checkpoint(
      IMAGE, tmp_path, name, models.V2_BASE_BLOCKS,
      drop=[f'{name}/blocks_2/conv2d_1/kernel',
            f'{name}/blocks_2/conv2d_1/kernel/ExponentialMovingAverage'],
      extra={f'{name}/blocks_99/conv2d/kernel': np.zeros((1,), np.float32),
             f'{name}/head/conv2d/kernel/ExponentialMovingAverage':
                 np.zeros((1, 1, 192, 7), np.float32)})
  model = efficientnetv2_tf.get_model(name)
  with pytest.raises(UserError) as err:
    checkpoints.load_official(model, str(path), name)
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
      IMAGE, tmp_path, name, models.V2_BASE_BLOCKS, width=1.1)
  model = efficientnetv2_tf.get_model(name)
  with pytest.raises(UserError, match=r'of the wrong shape \(checkpoint vs '
                     r'model\) \(efficientnetv2-b0/blocks_3/conv2d_1/kernel/'
                     r'ExponentialMovingAverage \(1, 1, 128, 56\) vs '
                     r'\(1, 1, 128, 48\), '):
    checkpoints.load_official(model, str(path), name)


def test_checkpoint_of_another_variant_is_refused(v2_b0):
  path, _, _ = v2_b0
  with pytest.raises(UserError, match="holds 'efficientnetv2-b0' weights; "
                     "this model is 'efficientnetv2-b1'"):
    efficientnetv2_tf.get_model('efficientnetv2-b1', weights=str(path))


def test_weights_path_that_does_not_exist_is_reported(tmp_path):
  missing = str(tmp_path / 'nope')
  with pytest.raises(UserError, match=f"weights path '{missing}' does not"):
    efficientnetv2_tf.get_model('efficientnetv2-b0', TINY, weights=missing)


def test_corrupt_checkpoint_is_reported(tmp_path):
  for suffix in ('.index', '.data-00000-of-00001'):
    (tmp_path / ('model' + suffix)).write_bytes(b'not a checkpoint')
  with pytest.raises(UserError, match="checkpoint '.*model' cannot be read: "):
    efficientnetv2_tf.get_model('efficientnetv2-b0', TINY,
                                weights=str(tmp_path / 'model'))


def test_unpublished_weights_are_reported():
  with pytest.raises(UserError, match="no 'jft' weights are published for "
                     'efficientnetv2-s; available: imagenet, imagenet21k'):
    efficientnetv2_tf.get_model('efficientnetv2-s', weights='jft')


def test_offline_download_names_the_url_and_how_to_pass_a_path(
    monkeypatch, tmp_path):
  url = 'http://127.0.0.1:9/efficientnetv2-b0.tgz'  # nothing listens here
  entry = dataclasses.replace(
      hparams.published_weights('efficientnetv2-b0', 'imagenet'), url=url)
  monkeypatch.setattr(checkpoints, 'published_weights', lambda *_: entry)
  monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path))
  with pytest.raises(UserError) as err:
    efficientnetv2_tf.get_model('efficientnetv2-b0', weights='imagenet')
  assert url in str(err.value)
  assert "weights='/path/to/dir'" in str(err.value)
  assert str(tmp_path / 'efficientnetv2_tf' / 'efficientnetv2-b0.tgz') in str(
      err.value)


def test_named_weights_are_fetched_unpacked_and_loaded(v2_b0, monkeypatch,
                                                       tmp_path):
  path, expected, _ = v2_b0
  monkeypatch.setenv(checkpoints.CACHE_ENV, str(tmp_path / 'cache'))
  tf1_reference.place_in_cache(path, 'efficientnetv2-b0', 'imagenet')
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', weights='imagenet')
  np.testing.assert_allclose(model(IMAGE, training=False), expected,
                             atol=1e-4)


def test_named_weights_go_to_a_cache_directory_not_made_yet(
    v2_b0, monkeypatch, tmp_path):
  cache = tmp_path / 'new' / 'cache'
  monkeypatch.setenv(checkpoints.CACHE_ENV, str(cache))
  tf1_reference.place_in_cache(v2_b0[0], 'efficientnetv2-b0', 'imagenet')
  prefix = checkpoints.download('efficientnetv2-b0', 'imagenet')
  assert prefix.startswith(str(cache / 'efficientnetv2_tf'))
  assert (cache / 'efficientnetv2_tf' / 'efficientnetv2-b0.tgz').is_file()


def test_own_checkpoint_saves_and_restores(tmp_path):
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  prefix = checkpoints.save(model, str(tmp_path / 'ckpt'))
  assert not tf.io.gfile.glob(prefix + '.tmp*')
  restored = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY,
                                         weights=str(tmp_path))
  for a, b in zip(model.weights, restored.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_own_checkpoint_of_another_shape_is_refused(tmp_path):
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  checkpoints.save(model, str(tmp_path / 'ckpt'))
  with pytest.raises(UserError, match='does not fit efficientnetv2-b0: '):
    efficientnetv2_tf.get_model(
        'efficientnetv2-b0', TINY.replace('0.25', '0.5'),
        weights=str(tmp_path / 'ckpt'))


def _training_checkpoint(path, num_classes):
  """A checkpoint laid out as a training run writes it: the model beside
  its EMA, whose averages differ from the raw weights."""
  model = efficientnetv2_tf.get_model(
      'efficientnetv2-b0', TINY.replace('=10', f'={num_classes}'))
  ema = optim.ExponentialMovingAverage(optim.ema_variables(model), 0.5)
  for average in ema.averages:
    average.assign_add(tf.ones_like(average))
  optimizer = keras.optimizers.SGD()
  optimizer.build(model.trainable_variables)
  prefix = tf.train.Checkpoint(model=model, ema=ema, optimizer=optimizer
                               ).write(str(path / 'ckpt-1'))
  return model, ema, prefix


def test_training_checkpoint_loads_its_ema_and_skips_another_head(tmp_path):
  source, ema, prefix = _training_checkpoint(tmp_path, num_classes=10)
  located = checkpoints.locate(prefix, 'efficientnetv2-b0')
  assert (located.kind, located.head_classes) == ('tf2', 10)
  model = efficientnetv2_tf.get_model('efficientnetv2-b0',
                                      TINY.replace('=10', '=7'))
  head = [v.numpy() for v in model.get_layer('predictions').weights]
  checkpoints.load_weights(model, located, 'efficientnetv2-b0')
  averaged = dict(zip([v.path for v in optim.ema_variables(source)],
                      ema.averages))
  for variable in optim.ema_variables(model):
    if variable.path.startswith('predictions/'):
      continue
    np.testing.assert_array_equal(variable.numpy(),
                                  averaged[variable.path].numpy())
  for before, after in zip(head, model.get_layer('predictions').weights):
    np.testing.assert_array_equal(before, after.numpy())


def test_training_checkpoint_loads_raw_weights_when_asked(tmp_path):
  source, _, prefix = _training_checkpoint(tmp_path, num_classes=10)
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  checkpoints.load_weights(model, checkpoints.locate(prefix, 'x'),
                           'efficientnetv2-b0', prefer_ema=False)
  for a, b in zip(source.weights, model.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_classes_follow_our_checkpoint_when_not_given(tmp_path):
  _, _, prefix = _training_checkpoint(tmp_path, num_classes=7)
  model = efficientnetv2_tf.get_model(
      'efficientnetv2-b0', 'width_coefficient=0.25,depth_coefficient=0.2',
      weights=prefix)
  assert model.num_classes == 7


def test_training_checkpoint_of_another_shape_lists_the_mismatches(tmp_path):
  _, _, prefix = _training_checkpoint(tmp_path, num_classes=10)
  with pytest.raises(UserError, match=r'does not fit efficientnetv2-b0: \d+ '
                     r'variables of the wrong shape .*stem/conv/kernel'):
    efficientnetv2_tf.get_model('efficientnetv2-b0',
                                TINY.replace('0.25', '0.5'), weights=prefix)


def test_keras_weights_file_loads(tmp_path):
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  model.save_weights(tmp_path / 'w.weights.h5')
  loaded = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY,
                                       weights=str(tmp_path / 'w.weights.h5'))
  for a, b in zip(loaded.get_weights(), model.get_weights()):
    np.testing.assert_array_equal(a, b)


def test_keras_weights_file_of_another_shape_is_refused(tmp_path):
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  model.save_weights(tmp_path / 'w.weights.h5')
  with pytest.raises(UserError, match='w.weights.h5.* does not fit'):
    efficientnetv2_tf.get_model('efficientnetv2-b0', 'num_classes=3',
                                weights=str(tmp_path / 'w.weights.h5'))


def test_mistyped_weights_name_suggests_the_named_weights():
  with pytest.raises(UserError, match="unknown weights 'imagenet21'; did you "
                     "mean 'imagenet21k'?.*or a checkpoint path"):
    efficientnetv2_tf.get_model('efficientnetv2-b0', TINY,
                                weights='imagenet21')


def test_directory_with_several_checkpoints_and_no_state_is_refused(
    tmp_path):
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  checkpoints.save(model, str(tmp_path / 'a'))
  checkpoints.save(model, str(tmp_path / 'b'))
  with pytest.raises(UserError, match='holds 2 checkpoints .*; pass one'):
    efficientnetv2_tf.get_model('efficientnetv2-b0', TINY,
                                weights=str(tmp_path))


def test_checkpoint_with_only_ema_values_loads(tmp_path):
  name = 'efficientnetv2-b0'
  blocks_args = models.V2_BASE_BLOCKS[:2]
  weights = tf1_reference.RandomWeights()
  expected = tf1_reference.forward(IMAGE, weights, name, blocks_args, 1000)
  tf1_reference.write_checkpoint(
      str(tmp_path / 'model'),
      {n + checkpoints.EMA_SUFFIX: v for n, v in weights.values.items()})
  model = efficientnetv2_tf.get_model(name, {'blocks_args': blocks_args},
                                      weights=str(tmp_path / 'model'))
  np.testing.assert_allclose(model(IMAGE, training=False), expected,
                             atol=1e-4)
