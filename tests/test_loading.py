import numpy as np
import pytest

import efficientnetv2_tf
from efficientnetv2_tf import checkpoints
from efficientnetv2_tf import loading
from efficientnetv2_tf import progressive
from efficientnetv2_tf.run_dir import RunDir
import hparams
from hparams import models
from hparams.errors import UserError
from tests import tf1_reference
from tests.tf1_reference import IMAGES
from tests.conftest import TINY
from tests.conftest import TINY_RUN


def test_locate_tells_the_kinds_of_checkpoint_apart(v2_b0, tmp_path):
  path, _, _ = v2_b0
  official = loading.locate(str(path), 'efficientnetv2-b0')
  assert (official.kind, official.head_classes) == ('official', 1000)
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  prefix = checkpoints.save(model, str(tmp_path / 'ckpt'))
  assert loading.locate(str(tmp_path), 'x') == loading.Checkpoint(
      prefix, 'tf2', 10)
  model.save_weights(tmp_path / 'w.weights.h5')
  assert loading.locate(str(tmp_path / 'w.weights.h5'), 'x').kind == 'keras'


def test_other_num_classes_skips_the_head_and_loads_the_rest(v2_b0):
  path, _, values = v2_b0
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', 'num_classes=10',
                                      weights=str(path))
  dense = model.classifier
  assert tuple(dense.kernel.shape) == (1280, 10)
  assert not dense.bias.numpy().any()  # as initialised; the checkpoint's != 0
  np.testing.assert_array_equal(
      model.get_layer('blocks_15').project_bn.moving_variance.numpy(),
      values['efficientnetv2-b0/blocks_15/tpu_batch_normalization_2/'
             'moving_variance'])


def test_default_num_classes_follows_the_checkpoint_head(tmp_path):
  path, expected, _ = tf1_reference.official_checkpoint(
      IMAGES, tmp_path, 'efficientnetv2-b0', models.V2_BASE_BLOCKS[:2],
      num_classes=21, state=False)  # no `checkpoint` file: found by index
  model = efficientnetv2_tf.get_model(
      'efficientnetv2-b0', {'blocks_args': models.V2_BASE_BLOCKS[:2]},
      weights=str(path))
  assert model.num_classes == 21
  np.testing.assert_allclose(model(IMAGES, training=False), expected, atol=1e-4)


def test_classes_follow_our_checkpoint_when_not_given(tmp_path):
  source = efficientnetv2_tf.get_model('efficientnetv2-b0',
                                       TINY.replace('=10', '=7'))
  checkpoints.save(source, str(tmp_path / 'ckpt'))
  model = efficientnetv2_tf.get_model(
      'efficientnetv2-b0', 'width_coefficient=0.25,depth_coefficient=0.2',
      weights=str(tmp_path))
  assert model.num_classes == 7
  for a, b in zip(source.weights, model.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_built_in_preprocessing_of_a_runs_checkpoint_follows_its_recipe(
    tmp_path):
  # A digits run fine-tunes ('ft_none'): (x - 127.5) / 127.5, where
  # B0's preset would take ImageNet mean and stddev.
  specs = hparams.get_specs('efficientnetv2-b0', 'digits', TINY_RUN)
  assert specs.data.augmentation == 'ft_none'
  run = RunDir(str(tmp_path / 'run'))
  run.save(specs, progressive.make_plan(specs, 320, 1), list('0123456789'))
  source = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  prefix = checkpoints.save(source, f'{run.checkpoints}/ckpt-1')
  pixels = np.random.default_rng(0).uniform(0, 255, (2, 32, 32, 3))
  expected = source(((pixels - 127.5) / 127.5).astype('float32'),
                    training=False)
  for weights in (run.path, prefix):
    model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY,
                                        weights=weights,
                                        include_preprocessing=True)
    np.testing.assert_allclose(model(pixels.astype('float32'),
                                     training=False), expected, atol=1e-5)


def test_load_weights_takes_a_path_into_a_built_model(tmp_path):
  source = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  checkpoints.save(source, str(tmp_path / 'ckpt'))
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  efficientnetv2_tf.load_weights(model, str(tmp_path / 'ckpt'))
  for a, b in zip(source.weights, model.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


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
