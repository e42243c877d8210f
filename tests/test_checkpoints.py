import json

import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnetv2_tf
from efficientnetv2_tf import checkpoints
from efficientnetv2_tf import ema as ema_lib
from hparams.errors import UserError
from tests.conftest import TINY


def _tiny(num_classes=10, **kwargs):
  return efficientnetv2_tf.get_model(
      'efficientnetv2-b0', TINY.replace('=10', f'={num_classes}'), **kwargs)


def _training_checkpoint(path, num_classes):
  """A checkpoint laid out as a training run writes it: the model beside
  its EMA, whose averages differ from the raw weights; no model_info.json."""
  model = _tiny(num_classes)
  ema = ema_lib.ExponentialMovingAverage(ema_lib.ema_variables(model), 0.5)
  for average in ema.averages:
    average.assign_add(tf.ones_like(average))
  optimizer = keras.optimizers.SGD()
  optimizer.build(model.trainable_variables)
  prefix = tf.train.Checkpoint(model=model, ema=ema, optimizer=optimizer
                               ).write(str(path / 'ckpt-1'))
  return model, ema, prefix


def test_own_checkpoint_saves_and_restores(tmp_path):
  model = _tiny()
  prefix = checkpoints.save(model, str(tmp_path / 'ckpt'))
  assert not tf.io.gfile.glob(prefix + '.tmp*')
  restored = _tiny()
  assert checkpoints.restore(restored, str(tmp_path)) == prefix
  for a, b in zip(model.weights, restored.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_save_writes_which_model_the_checkpoint_holds(tmp_path):
  checkpoints.save(_tiny(7), str(tmp_path / 'ckpt'))
  assert checkpoints.read_model_info(str(tmp_path)) == {
      'model_name': 'efficientnetv2-b0', 'include_top': True,
      'num_classes': 7}
  assert json.loads((tmp_path / checkpoints.MODEL_INFO).read_text())[
      'num_classes'] == 7
  assert checkpoints.read_model_info(str(tmp_path / 'elsewhere')) is None


def test_head_classes_come_from_model_info_first(tmp_path):
  _, _, prefix = _training_checkpoint(tmp_path, num_classes=10)
  assert checkpoints.head_classes(prefix) == 10  # from the variables' shapes
  checkpoints.write_model_info(str(tmp_path), _tiny(10, include_top=False))
  assert checkpoints.head_classes(prefix) is None


def test_unreadable_model_info_is_reported(tmp_path):
  (tmp_path / checkpoints.MODEL_INFO).write_text('{not json')
  with pytest.raises(UserError, match='is not valid JSON'):
    checkpoints.read_model_info(str(tmp_path))


def test_own_and_training_checkpoints_are_told_apart_by_their_content(
    tmp_path):
  prefix = checkpoints.save(_tiny(), str(tmp_path / 'saved' / 'ckpt'))
  _, _, training = _training_checkpoint(tmp_path, num_classes=10)
  assert checkpoints.is_own(prefix) and checkpoints.is_own(training)
  assert not checkpoints.holds_ema(prefix)
  assert checkpoints.holds_ema(training)


def test_own_checkpoint_of_another_shape_is_refused(tmp_path):
  checkpoints.save(_tiny(), str(tmp_path / 'ckpt'))
  wider = efficientnetv2_tf.get_model('efficientnetv2-b0',
                                      TINY.replace('0.25', '0.5'))
  with pytest.raises(UserError, match='does not fit efficientnetv2-b0: '):
    checkpoints.restore(wider, str(tmp_path / 'ckpt'))


def test_training_checkpoint_loads_its_ema_and_skips_another_head(tmp_path):
  source, ema, prefix = _training_checkpoint(tmp_path, num_classes=10)
  model = _tiny(7)
  head = [v.numpy() for v in model.classifier.weights]
  checkpoints.load_own(model, prefix)
  averaged = dict(zip([v.path for v in ema_lib.ema_variables(source)],
                      ema.averages))
  classifier = {id(w) for w in model.classifier.weights}
  for variable in ema_lib.ema_variables(model):
    if id(variable) not in classifier:
      np.testing.assert_array_equal(variable.numpy(),
                                    averaged[variable.path].numpy())
  for before, after in zip(head, model.classifier.weights):
    np.testing.assert_array_equal(before, after.numpy())


def test_training_checkpoint_loads_raw_weights_when_asked(tmp_path):
  source, _, prefix = _training_checkpoint(tmp_path, num_classes=10)
  model = _tiny()
  checkpoints.load_own(model, prefix, prefer_ema=False)
  for a, b in zip(source.weights, model.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_checkpoints_load_across_built_in_preprocessing(tmp_path):
  # The normalisation layer holds no variable but renumbers the layers.
  pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3))
  normalised = ((pixels - 128) / 128).astype('float32')
  source, _, prefix = _training_checkpoint(tmp_path, num_classes=10)
  with_preprocessing = _tiny(include_preprocessing=True)
  checkpoints.load_own(with_preprocessing, prefix, prefer_ema=False)
  np.testing.assert_allclose(
      with_preprocessing(pixels.astype('float32'), training=False),
      source(normalised, training=False), atol=1e-5)
  saved = checkpoints.save(with_preprocessing, str(tmp_path / 'saved'))
  plain = _tiny()
  checkpoints.restore(plain, saved)
  np.testing.assert_allclose(plain(normalised, training=False),
                             source(normalised, training=False), atol=1e-5)


def test_training_checkpoint_of_another_shape_is_refused_untouched(tmp_path):
  _, _, prefix = _training_checkpoint(tmp_path, num_classes=10)
  wider = efficientnetv2_tf.get_model('efficientnetv2-b0',
                                      TINY.replace('0.25', '0.5'))
  before = [w.numpy() for w in wider.weights]
  with pytest.raises(UserError, match=r'does not fit efficientnetv2-b0: .*'
                     r'incompatible tensor with shape .* name stem/'):
    checkpoints.load_own(wider, prefix)
  for value, weight in zip(before, wider.weights):
    np.testing.assert_array_equal(value, weight.numpy())


def test_directory_with_several_checkpoints_and_no_state_is_refused(
    tmp_path):
  model = _tiny()
  checkpoints.save(model, str(tmp_path / 'a'))
  checkpoints.save(model, str(tmp_path / 'b'))
  with pytest.raises(UserError, match='holds 2 checkpoints .*; pass one'):
    checkpoints.find_checkpoint(str(tmp_path))


def test_a_weights_path_that_is_another_kind_of_file_is_named_so(tmp_path):
  picture = tmp_path / 'photo.jpg'
  picture.write_bytes(b'not weights')
  with pytest.raises(UserError, match=f"weights path '{picture}' is a file "
                     'but not a checkpoint; pass'):
    checkpoints.find_checkpoint(str(picture))
  with pytest.raises(UserError, match='does not exist'):
    checkpoints.find_checkpoint(str(tmp_path / 'missing'))


def test_corrupt_checkpoint_is_reported(tmp_path):
  for suffix in ('.index', '.data-00000-of-00001'):
    (tmp_path / ('model' + suffix)).write_bytes(b'not a checkpoint')
  with pytest.raises(UserError, match="checkpoint '.*model' cannot be read: "):
    checkpoints.open_checkpoint(str(tmp_path / 'model'))
