import dataclasses

import keras
import numpy as np
import pytest

import efficientnetv2_tf
import hparams
from efficientnetv2_tf import blocks
from efficientnetv2_tf import EfficientNet
from efficientnetv2_tf import official
from hparams.errors import UserError
from hparams.models import V2_BASE_BLOCKS
from hparams.specs import ModelSpec
from tests.conftest import TINY
from tests.oracle_fixtures import PARAM_COUNTS

TRAINABLE = {'efficientnetv2-b0': 7_139_704, 'efficientnetv2-s': 21_458_488,
             'efficientnet-b8': 87_413_142, 'efficientnet-l2': 480_309_308}
LARGE = {'efficientnetv2-m', 'efficientnetv2-l', 'efficientnetv2-xl',
         'efficientnet-b5', 'efficientnet-b6', 'efficientnet-b7',
         'efficientnet-b8', 'efficientnet-l2'}


def _count(weights):
  return sum(int(np.prod(w.shape)) for w in weights)


def test_every_model_name_has_a_parameter_count_test():
  assert sorted(PARAM_COUNTS) == efficientnetv2_tf.list_models()


@pytest.mark.parametrize('name', [
    pytest.param(n, marks=pytest.mark.slow) if n in LARGE else n
    for n in sorted(PARAM_COUNTS)])
def test_parameter_count_and_output_shape(name, monkeypatch):
  # Counting needs the shapes, not random values: zeros are drawn in a
  # fraction of the time for the largest models.
  monkeypatch.setattr(blocks, 'conv_initializer', keras.initializers.Zeros)
  monkeypatch.setattr(blocks, 'dense_initializer',
                      lambda _: keras.initializers.Zeros())
  model = efficientnetv2_tf.get_model(name)
  assert model.count_params() == PARAM_COUNTS[name]
  if name in TRAINABLE:
    assert _count(model.trainable_weights) == TRAINABLE[name]
  assert tuple(model(np.zeros((1, 32, 32, 3)), training=False).shape) == (
      1, 1000)


def test_endpoints_have_strides_2_to_32():
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY,
                                      with_endpoints=True)
  logits, *features = model(np.zeros((2, 64, 64, 3)), training=False)
  assert tuple(logits.shape) == (2, 10)
  assert [tuple(f.shape[1:3]) for f in features] == [
      (32, 32), (16, 16), (8, 8), (4, 4), (2, 2)]
  assert [f.shape[-1] for f in features] == [8, 8, 16, 32, 48]


def test_without_top_the_model_returns_pooled_features():
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY,
                                      include_top=False)
  assert tuple(model(np.zeros((2, 32, 32, 3))).shape) == (2, 320)
  assert model.num_features == 320
  assert 'predictions' not in [layer.name for layer in model.layers]


def test_layer_names_are_predictable():
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  assert [layer.name for layer in model.layers] == [
      'images', 'stem'] + [f'blocks_{i}' for i in range(7)] + [
          'head', 'top_dropout', 'predictions']
  assert model.name == 'efficientnetv2-b0'
  assert 'blocks_3/project_bn/gamma' in [w.path for w in model.weights]


@pytest.mark.parametrize('dropout, survival, random', [
    (0.5, 1.0, True), (0.0, 0.5, True), (0.0, 1.0, False)])
def test_dropout_and_stochastic_depth_act_only_in_training(
    dropout, survival, random):
  model = efficientnetv2_tf.get_model(
      'efficientnetv2-b0', {'dropout_rate': dropout, 'survival_prob': survival,
                            'width_coefficient': 0.25, 'num_classes': 10})
  x = np.random.rand(4, 32, 32, 3).astype('float32')
  np.testing.assert_array_equal(model(x, training=False),
                                model(x, training=False))
  a, b = model(x, training=True), model(x, training=True)
  assert (not np.allclose(a, b)) == random


def test_survival_probability_falls_linearly_with_depth():
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', 'survival_prob=0.8')
  blocks = [layer for layer in model.layers if layer.name.startswith('blocks')]
  assert len(blocks) == 21
  for idx, block in enumerate(blocks):
    assert block.survival_prob == pytest.approx(1 - 0.2 * idx / 21)
    assert (block.drop_path is not None) == (block.has_residual and idx > 0)


def test_get_config_round_trips_with_identical_outputs():
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  clone = EfficientNet.from_config(model.get_config())
  assert clone.get_config() == model.get_config()
  clone.set_weights(model.get_weights())
  x = np.random.rand(2, 32, 32, 3).astype('float32')
  np.testing.assert_allclose(clone(x, training=False),
                             model(x, training=False), atol=1e-6)


def test_keras_file_round_trips(tmp_path):
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  model.save(tmp_path / 'model.keras')
  loaded = keras.models.load_model(tmp_path / 'model.keras')
  x = np.random.rand(2, 32, 32, 3).astype('float32')
  np.testing.assert_allclose(loaded(x, training=False),
                             model(x, training=False), atol=1e-6)


def batch_norms(model):
  return [sub for layer in model.layers if hasattr(layer, 'sublayers')
          for sub in layer.sublayers()
          if isinstance(sub, keras.layers.BatchNormalization)]


def test_bn_sync_synchronises_every_batch_norm_and_round_trips(tmp_path):
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY,
                                      bn_sync=True)
  assert model.get_config()['bn_sync'] is True
  assert len(batch_norms(model)) == sum(
      w.path.endswith('moving_mean') for w in model.weights)
  assert all(bn.synchronized for bn in batch_norms(model))
  model.save(tmp_path / 'model.keras')
  loaded = keras.models.load_model(tmp_path / 'model.keras')
  assert all(bn.synchronized for bn in batch_norms(loaded))
  x = np.random.rand(2, 32, 32, 3).astype('float32')
  np.testing.assert_allclose(loaded(x, training=False),
                             model(x, training=False), atol=1e-6)


def test_bn_sync_changes_no_variable_nor_the_checkpoint_mapping():
  plain = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  synced = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY,
                                       bn_sync=True)
  assert not any(bn.synchronized for bn in batch_norms(plain))
  assert [w.path for w in synced.weights] == [w.path for w in plain.weights]
  mapping = {name: v.path for name, v in
             official.official_variable_map(
                 plain, 'efficientnetv2-b0').items()}
  assert len(mapping) == len(plain.weights)
  assert {name: v.path for name, v in
          official.official_variable_map(
              synced, 'efficientnetv2-b0').items()} == mapping


@pytest.mark.parametrize('bn_sync, synchronized', [
    (None, False), (True, True), (False, False)])
def test_model_config_bn_sync_unset_means_off(bn_sync, synchronized):
  spec = hparams.get_specs('efficientnetv2-b0', None, {
      'model': {**hparams.as_mapping(TINY), 'bn_sync': bn_sync}}).model
  with keras.StatelessScope():  # structure only; skip initialising weights
    model = EfficientNet.from_spec(spec)
  assert {bn.synchronized for bn in batch_norms(model)} == {synchronized}


def test_preprocessing_layer_takes_0_255_pixels():
  plain = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  raw = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY,
                                    include_preprocessing=True)
  raw.set_weights(plain.get_weights())
  pixels = np.random.randint(0, 256, (2, 32, 32, 3)).astype('float32')
  np.testing.assert_allclose(raw(pixels, training=False),
                             plain((pixels - 128) / 128, training=False),
                             atol=1e-5)


def test_training_false_freezes_the_variables():
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY,
                                      training=False)
  assert not model.trainable_weights


def test_mixed_bfloat16_computes_in_bf16_and_returns_float32_logits():
  keras.mixed_precision.set_global_policy('mixed_bfloat16')
  try:
    model = efficientnetv2_tf.get_model(
        'efficientnetv2-b0', TINY + ',survival_prob=0.5')
    logits = model(np.zeros((2, 32, 32, 3), 'float32'), training=True)
    assert model.get_layer('blocks_3').compute_dtype == 'bfloat16'
    assert model.get_layer('blocks_3').project_bn.gamma.dtype == 'float32'
    assert logits.dtype == 'float32'
    assert np.isfinite(keras.ops.convert_to_numpy(logits)).all()
  finally:
    keras.mixed_precision.set_global_policy('float32')


S_FUSED = ['r2_k3_s1_e1_i24_o24_c1', 'r4_k3_s2_e4_i24_o48_c1',
           'r4_k3_s2_e4_i48_o64_c1']
S_MB = ['r6_k3_s2_e4_i64_o128_se0.25', 'r9_k3_s1_e6_i128_o160_se0.25',
        'r15_k3_s2_e6_i160_o256_se0.25']
ABLATIONS = {
    'all_fused': ([s.split('_se')[0].replace('_c1', '') + '_c1'
                   for s in S_FUSED + S_MB], 40, 40),
    'all_mbconv': ([s.replace('_c1', '') for s in S_FUSED] + S_MB, 40, 0),
    'halved_repeats': (['r1_k3_s1_e1_i24_o24_c1', 'r2_k3_s2_e4_i24_o48_c1',
                        'r2_k3_s2_e4_i48_o64_c1',
                        'r3_k3_s2_e4_i64_o128_se0.25',
                        'r4_k3_s1_e6_i128_o160_se0.25',
                        'r7_k3_s2_e6_i160_o256_se0.25'], 19, 5),
    'two_stages_dropped': (['r2_k3_s2_e4_i24_o48_c1', 'r4_k3_s2_e4_i48_o64_c1',
                            'r6_k3_s2_e4_i64_o128_se0.25',
                            'r15_k3_s2_e6_i128_o256_se0.25'], 27, 6),
}


@pytest.mark.parametrize('ablation', sorted(ABLATIONS))
def test_ablation_from_config_alone(ablation):
  blocks_args, num_blocks, num_fused = ABLATIONS[ablation]
  spec = hparams.get_specs(
      'efficientnetv2-s', None,
      'model.blocks_args=' + '|'.join(blocks_args) + ',model.num_classes=10'
  ).model
  with keras.StatelessScope():  # structure only; skip initialising weights
    model = EfficientNet.from_spec(spec)
  blocks = [layer for layer in model.layers if layer.name.startswith('blocks')]
  assert len(blocks) == num_blocks
  assert sum(block.fused for block in blocks) == num_fused


def test_width_0_1_ablation_runs():
  model = efficientnetv2_tf.get_model('efficientnetv2-s',
                                      'width_coefficient=0.1,num_classes=10')
  assert model.get_layer('stem').filters == 8  # floored at min_depth
  assert model.num_features == 128
  assert tuple(model(np.zeros((1, 32, 32, 3)), training=True).shape) == (1, 10)


@pytest.mark.parametrize('num_classes', [0, -3])
def test_non_positive_num_classes_is_rejected(num_classes):
  with pytest.raises(UserError, match=f'received: num_classes={num_classes}'):
    efficientnetv2_tf.get_model('efficientnetv2-b0',
                                {'num_classes': num_classes})


def test_model_name_is_matched_case_insensitively():
  model = efficientnetv2_tf.get_model('EfficientNetV2-B0', TINY)
  assert model.name == 'efficientnetv2-b0'


def test_unknown_model_name_lists_known_names():
  with pytest.raises(UserError, match="unknown model name 'efficientnetv3-s'.*"
                     'Known: efficientnet-b0'):
    efficientnetv2_tf.get_model('efficientnetv3-s')


@pytest.mark.parametrize('model_config, expected', [
    ('num_classes10', "must be a dict, a YAML file path or 'key=value,...'"),
    ('num_clases=10', "unknown config key 'model.num_clases'"),
    ('dropout_rate=high', 'model.dropout_rate=.high. has the wrong type'),
    (42, "must be a dict, a YAML file path or 'key=value,...'"),
    ('depth_divisor=0',
     'model.depth_divisor must be > 0; received: depth_divisor=0'),
    ('conv_dropout=1.5', r'conv_dropout must be in \[0, 1\)'),
    ('dropout_rate=None', 'model.dropout_rate=None has the wrong type'),
    ('bn_sync=yes', 'model.bn_sync=.yes. has the wrong type'),
])
def test_malformed_model_config_is_rejected(model_config, expected):
  with pytest.raises(UserError, match=expected):
    efficientnetv2_tf.get_model('efficientnetv2-b0', model_config)


def test_bad_block_string_in_model_config_is_rejected():
  with pytest.raises(UserError, match="unknown key in 'q3'"):
    efficientnetv2_tf.get_model('efficientnetv2-b0',
                                {'blocks_args': ['r1_k3_s1_e1_i32_o16_q3']})


def test_accessors_name_the_head_and_leave_the_backbone():
  model = EfficientNet(V2_BASE_BLOCKS, num_classes=3, width_coefficient=0.25,
                       depth_coefficient=0.2, dropout_rate=0.3)
  assert model.classifier.units == 3
  assert model.top_dropout.rate == pytest.approx(0.3)
  backbone = model.backbone_layers()
  assert model.classifier not in backbone and model.top_dropout not in backbone
  assert len(backbone) == len(model.layers) - 2
  features = EfficientNet(V2_BASE_BLOCKS, include_top=False,
                          width_coefficient=0.25, depth_coefficient=0.2)
  assert features.classifier is None and features.top_dropout is None
  assert features.backbone_layers() == features.layers


def test_arguments_default_to_the_model_spec_and_from_spec_overrides():
  model = EfficientNet(V2_BASE_BLOCKS, width_coefficient=0.25,
                       depth_coefficient=0.2)
  assert model.spec == ModelSpec(blocks_args=V2_BASE_BLOCKS,
                                 width_coefficient=0.25,
                                 depth_coefficient=0.2)
  assert model.name == 'efficientnet' and model.num_classes == 1000
  clone = EfficientNet.from_spec(model.spec, num_classes=4, name='clone')
  assert clone.spec == dataclasses.replace(model.spec, num_classes=4,
                                           name='clone')
  assert clone.classifier.units == 4


def test_a_bad_argument_is_named_by_the_constructor():
  with pytest.raises(UserError, match=r'model.dropout_rate must be in '
                     r'\[0, 1\); received: dropout_rate=1.5'):
    EfficientNet(V2_BASE_BLOCKS, dropout_rate=1.5)


@pytest.mark.parametrize('head_init, bound', [
    # The original's range, 1/sqrt(classes), and Glorot's,
    # sqrt(6 / (fan_in + fan_out)), over the 1280 head features of b0.
    ('original', 1 / np.sqrt(10)),
    ('glorot_uniform', np.sqrt(6 / (1280 + 10))),
    ('zeros', 0.0)])
def test_head_init_draws_the_classifier_from_its_range(head_init, bound):
  model = EfficientNet(V2_BASE_BLOCKS, num_classes=10, head_init=head_init)
  kernel = model.classifier.kernel.numpy()
  assert kernel.shape == (1280, 10)
  assert np.abs(kernel).max() <= bound
  # Drawn over the whole range, not from a narrower one.
  assert np.abs(kernel).max() >= 0.9 * bound
  clone = EfficientNet.from_config(model.get_config())
  assert clone.spec.head_init == head_init


def test_an_unknown_head_init_is_refused_with_the_choices():
  with pytest.raises(UserError, match=r"model.head_init must be one of "
                     r"original, glorot_uniform, zeros; received: "
                     r"head_init='he_normal'"):
    efficientnetv2_tf.get_model('efficientnetv2-b0', {'head_init':
                                                      'he_normal'})
