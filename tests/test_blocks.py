import keras
import numpy as np
import pytest

from efficientnetv2_tf import blocks
from hparams.errors import UserError


def test_stochastic_depth_is_identity_at_inference():
  layer = blocks.StochasticDepth(0.5)
  x = np.random.rand(8, 4, 4, 2).astype('float32')
  np.testing.assert_array_equal(layer(x, training=False), x)


def test_stochastic_depth_drops_whole_samples_and_rescales_in_training():
  layer = blocks.StochasticDepth(0.5, seed=1)
  out = keras.ops.convert_to_numpy(
      layer(np.ones((64, 4, 4, 2), 'float32'), training=True))
  per_sample = out.reshape(64, -1)
  assert set(np.unique(per_sample)) <= {0.0, 2.0}  # kept ones scaled by 1/0.5
  assert (per_sample.min(1) == per_sample.max(1)).all()  # all or nothing
  assert 10 < (per_sample[:, 0] == 0).sum() < 54


def test_top_dropout_reads_the_rate_it_follows_each_call():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  layer = blocks.TopDropout(0.3, seed=1)
  rate = tf.Variable(layer.settings(0.5))
  layer.follow(rate)
  step = tf.function(lambda x: layer(x, training=True))
  x = np.ones((200, 100), 'float32')
  out = step(x).numpy()
  assert set(np.unique(out)) == {0.0, 2.0}  # kept ones scaled by 1/0.5
  assert 0.45 < (out == 0).mean() < 0.55
  rate.assign(layer.settings(0.0))
  np.testing.assert_array_equal(step(x), x)
  rate.assign(layer.settings(0.8))
  assert 0.75 < (step(x).numpy() == 0).mean() < 0.85
  assert step.experimental_get_tracing_count() == 1
  np.testing.assert_array_equal(layer(x, training=False), x)
  assert not layer.weights or all('seed' in w.path for w in layer.weights)


def test_top_dropout_draws_the_masks_keras_dropout_draws():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  keras_dropout = keras.layers.Dropout(0.3, seed=7)
  ours = blocks.TopDropout(0.3, seed=7)
  ours.follow(tf.Variable(ours.settings(0.3)))
  x = np.random.default_rng(0).random((64, 32)).astype('float32')
  for _ in range(2):  # each call draws a new seed, in both
    np.testing.assert_array_equal(ours(x, training=True),
                                  keras_dropout(x, training=True))


def test_top_dropout_follows_keras_dropout_through_rate_0_and_noise_shape():
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  x = np.random.default_rng(0).random((64, 4, 8)).astype('float32')
  ours = blocks.TopDropout(0.3, noise_shape=(None, 1, 8), seed=7)
  settings = tf.Variable(ours.settings(0.0))
  ours.follow(settings)
  step = tf.function(lambda x: ours(x, training=True))
  # Keras's Dropout(0) draws no seed; a stage at rate 0 must not either.
  np.testing.assert_array_equal(step(x), x)
  settings.assign(ours.settings(0.3))
  out = step(x).numpy()
  keras_dropout = keras.layers.Dropout(0.3, noise_shape=(None, 1, 8), seed=7)
  np.testing.assert_array_equal(out, keras_dropout(x, training=True))
  assert (out == 0).all(axis=1).any()  # masks shared along axis 1


@pytest.mark.parametrize('survival_prob', [0.0, 1.5])
def test_stochastic_depth_rejects_bad_survival_prob(survival_prob):
  with pytest.raises(UserError, match='survival_prob must be in'):
    blocks.StochasticDepth(survival_prob)


def _batch_norm_pair(x, **kwargs):
  """Our BatchNorm and Keras's, built alike with non-trivial weights."""
  layers = [blocks.BatchNorm(momentum=0.9, epsilon=1e-3, **kwargs),
            keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3,
                                            **kwargs)]
  rng = np.random.default_rng(0)
  values = [rng.uniform(0.5, 2, 3), rng.normal(size=3), rng.normal(size=3),
            rng.uniform(0.5, 2, 3)]
  for layer in layers:
    layer.build(x.shape)
    layer.set_weights([v.astype('float32') for v in values])
  return layers


def test_batch_norm_matches_keras_at_inference():
  x = np.random.default_rng(1).normal(2, 3, (4, 5, 5, 3)).astype('float32')
  ours, theirs = _batch_norm_pair(x)
  np.testing.assert_allclose(ours(x, training=False),
                             theirs(x, training=False), rtol=1e-5, atol=1e-5)


def test_batch_norm_trains_on_batch_statistics_with_bessels_correction():
  x = np.random.default_rng(1).normal(2, 3, (4, 5, 5, 3)).astype('float32')
  ours, theirs = _batch_norm_pair(x)
  old_mean, old_variance = ours.moving_mean.numpy(), ours.moving_variance.numpy()
  np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True),
                             rtol=1e-4, atol=1e-4)
  pixels = x.reshape(-1, 3)
  np.testing.assert_allclose(ours.moving_mean.numpy(),
                             0.9 * old_mean + 0.1 * pixels.mean(0), rtol=1e-5)
  # The moving variance takes the unbiased batch variance (n - 1), as TF1's
  # fused BatchNorm did; Keras's takes the biased one.
  np.testing.assert_allclose(ours.moving_variance.numpy(),
                             0.9 * old_variance + 0.1 * pixels.var(0, ddof=1),
                             rtol=1e-5)


def test_frozen_batch_norm_keeps_its_statistics_in_training():
  x = np.random.default_rng(1).normal(2, 3, (4, 5, 5, 3)).astype('float32')
  ours, theirs = _batch_norm_pair(x)
  ours.trainable = theirs.trainable = False
  before = ours.moving_mean.numpy()
  np.testing.assert_allclose(ours(x, training=True), theirs(x, training=True),
                             rtol=1e-5, atol=1e-5)
  np.testing.assert_array_equal(ours.moving_mean.numpy(), before)


def test_batch_norm_without_scale_or_offset_matches_keras():
  x = np.random.default_rng(1).normal(2, 3, (4, 5, 5, 3)).astype('float32')
  ours = blocks.BatchNorm(center=False, scale=False)
  theirs = keras.layers.BatchNormalization(center=False, scale=False)
  for training in (False, True):
    np.testing.assert_allclose(ours(x, training=training),
                               theirs(x, training=training),
                               rtol=1e-4, atol=1e-4)


def test_batch_norm_in_bfloat16_returns_bfloat16_close_to_float32():
  x = np.random.default_rng(1).normal(2, 3, (4, 5, 5, 3)).astype('float32')
  ours, _ = _batch_norm_pair(x)
  mixed, _ = _batch_norm_pair(x, dtype='mixed_bfloat16')
  for training in (False, True):
    out = mixed(keras.ops.cast(x, 'bfloat16'), training=training)
    assert keras.backend.standardize_dtype(out.dtype) == 'bfloat16'
    np.testing.assert_allclose(keras.ops.cast(out, 'float32'),
                               ours(x, training=training), atol=0.1)


def test_squeeze_excite_scales_each_channel_by_one_gate_in_0_1():
  layer = blocks.SqueezeExcite(6, 2)
  x = np.random.rand(2, 5, 5, 6).astype('float32') + 0.1
  ratio = keras.ops.convert_to_numpy(layer(x)) / x
  assert ((ratio > 0) & (ratio < 1)).all()
  np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1, :1], x.shape),
                             rtol=1e-5)


@pytest.mark.parametrize('fused, expand, strides, expected', [
    (False, 4, 2, (2, 8, 8, 16)), (True, 4, 2, (2, 8, 8, 16)),
    (True, 1, 1, (2, 16, 16, 16)), (False, 1, 1, (2, 16, 16, 16))])
def test_mbconv_output_shape(fused, expand, strides, expected):
  block = blocks.MBConv(8 if expand != 1 else 16, 16, 3, strides, expand,
                        0.25, fused=fused)
  x = np.random.rand(2, 16, 16, block.input_filters).astype('float32')
  assert tuple(block(x).shape) == expected
  assert block.compute_output_shape(x.shape) == expected


@pytest.mark.parametrize('fused', [False, True])
def test_residual_block_passes_its_input_when_the_branch_is_zeroed(fused):
  block = blocks.MBConv(8, 8, 3, 1, 4, 0.25, fused=fused, survival_prob=0.5)
  x = np.random.rand(2, 8, 8, 8).astype('float32')
  block(x)
  block.project_bn.gamma.assign(np.zeros(8))
  block.project_bn.beta.assign(np.zeros(8))
  np.testing.assert_allclose(block(x, training=False), x, atol=1e-6)


def test_block_without_residual_has_no_drop_path():
  block = blocks.MBConv(8, 16, 3, 1, 4, survival_prob=0.5)
  assert not block.has_residual and block.drop_path is None


def test_fused_block_without_expansion_activates_after_projection():
  silu_min = -0.2785
  fused = blocks.MBConv(8, 16, 3, 2, 1, fused=True)
  plain = blocks.MBConv(8, 16, 3, 2, 1, fused=False)
  x = np.random.randn(4, 8, 8, 8).astype('float32') * 3
  assert keras.ops.convert_to_numpy(fused(x)).min() >= silu_min
  assert keras.ops.convert_to_numpy(plain(x)).min() < silu_min


@pytest.mark.parametrize('layer', [
    blocks.Stem(16, act_fn='relu', bn_momentum=0.99, name='stem'),
    blocks.MBConv(8, 16, 5, 2, 6, 0.25, survival_prob=0.9, conv_dropout=0.1),
    blocks.MBConv(8, 8, 3, 1, 1, None, fused=True, survival_prob=0.7),
    blocks.MBConv(8, 16, 3, 1, 4, 0.25, bn_sync=True),
    blocks.SqueezeExcite(12, 3, act_fn='relu'),
    blocks.Head(32, bn_epsilon=1e-5),
    blocks.StochasticDepth(0.8, seed=3),
], ids=lambda layer: type(layer).__name__)
def test_block_config_round_trips(layer):
  config = layer.get_config()
  clone = type(layer).from_config(config)
  assert clone.get_config() == config
  x = np.zeros((1, 8, 8, 12 if isinstance(layer, blocks.SqueezeExcite) else 8),
               'float32')
  layer(x)
  clone(x)
  assert [tuple(w.shape) for w in clone.weights] == [
      tuple(w.shape) for w in layer.weights]


@pytest.mark.parametrize('bn_sync', [False, True])
def test_bn_sync_reaches_every_batch_norm_of_a_block(bn_sync):
  for block in (blocks.Stem(8, bn_sync=bn_sync),
                blocks.MBConv(8, 16, 3, 1, 4, 0.25, bn_sync=bn_sync),
                blocks.Head(8, bn_sync=bn_sync)):
    norms = [layer for layer in block.sublayers()
             if isinstance(layer, keras.layers.BatchNormalization)]
    assert norms and all(bn.synchronized == bn_sync for bn in norms)


def test_unknown_activation_lists_allowed_ones():
  with pytest.raises(UserError, match="unknown act_fn 'swishh'; allowed: silu"):
    blocks.Stem(8, act_fn='swishh')
