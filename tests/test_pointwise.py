import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientnetv2_tf.pointwise import PointwiseConv2D


def _pair(use_bias, dtype='float32'):
  """A PointwiseConv2D and Keras's Conv2D holding the same weights."""
  ours = PointwiseConv2D(6, 1, padding='same', use_bias=use_bias,
                         dtype=dtype)
  keras_conv = keras.layers.Conv2D(6, 1, padding='same', use_bias=use_bias,
                                   dtype=dtype)
  ours.build((None, None, None, 5))
  keras_conv.build((None, None, None, 5))
  rng = np.random.default_rng(0)
  for a, b in zip(ours.weights, keras_conv.weights):
    value = rng.normal(size=a.shape).astype('float32')
    a.assign(value)
    b.assign(value)
  return ours, keras_conv


def _output_and_gradients(layer, x, training):
  with tf.GradientTape() as tape:
    tape.watch(x)
    y = layer(x, training=training)
    loss = tf.reduce_sum(tf.cast(y, tf.float32) ** 2)
  return [y, *tape.gradient(loss, [x, *layer.trainable_weights])]


@pytest.mark.parametrize('use_bias', [False, True])
def test_training_matches_keras_convolution_and_its_gradients(use_bias):
  ours, keras_conv = _pair(use_bias)
  # Traced at one size, then once more without a static size (relaxed by
  # `reduce_retracing`), as a progressive run's shape-generic step is.
  run = tf.function(_output_and_gradients, reduce_retracing=True)
  for size in (7, 4):
    x = tf.random.normal([3, size, size, 5], seed=size)
    got = run(ours, x, True)
    want = _output_and_gradients(keras_conv, x, True)
    assert got[0].shape == (3, size, size, 6)
    for a, b in zip(got, want):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)


def test_training_in_bfloat16_returns_bfloat16_close_to_float32():
  ours, _ = _pair(True, dtype='mixed_bfloat16')
  _, keras_conv = _pair(True)  # the same weights, in float32
  x = tf.random.normal([2, 4, 4, 5], seed=1)
  got = ours(x, training=True)
  assert got.dtype == tf.bfloat16
  want = keras_conv(x)
  np.testing.assert_allclose(tf.cast(got, tf.float32), want, rtol=0.05,
                             atol=0.1)


def _op_types(layer, training):
  fn = tf.function(lambda x: layer(x, training=training))
  graph = fn.get_concrete_function(
      tf.TensorSpec([1, 4, 4, 5])).graph
  return {op.type for op in graph.get_operations()}


def test_only_training_runs_a_matrix_product():
  ours, _ = _pair(False)
  inference, training = _op_types(ours, False), _op_types(ours, True)
  assert 'Conv2D' in inference and 'MatMul' not in inference
  assert 'MatMul' in training and 'Conv2D' not in training


@pytest.mark.parametrize('kwargs, named', [
    ({'kernel_size': 3}, 'kernel_size=(3, 3)'),
    ({'strides': 2}, 'strides=(2, 2)'),
    ({'dilation_rate': 2}, 'dilation_rate=(2, 2)'),
])
def test_other_convolutions_are_refused_by_name(kwargs, named):
  with pytest.raises(ValueError, match=r'allowed: \(1, 1\)') as error:
    PointwiseConv2D(4, **kwargs)
  assert named in str(error.value)
