"""A 1x1, stride-1 convolution that trains as a matrix product.

Such a convolution is a product of the pixels, as rows, with its kernel.
TensorFlow's CPU convolution kernels (oneDNN) and their two gradients run
it slower than `MatMul` on the same numbers, so in training the layer
reshapes and multiplies; the training section of `bench/run_all.py`
measures the difference ("ours, 1x1 as convolutions"). Outside training
it runs TensorFlow's convolution, so inference and the exported
SavedModel, TFLite and ONNX graphs are the convolution's, and the
variables (`kernel` of shape (1, 1, in, out), `bias`) are Keras's in both
cases.
"""
import keras
import tensorflow as tf


@keras.saving.register_keras_serializable('efficientnetv2_tf')
class PointwiseConv2D(keras.layers.Conv2D):
  """Keras's `Conv2D` with a 1x1 kernel and stride 1, which in training
  computes its output as a matrix product."""

  def __init__(self, filters: int, kernel_size=1, **kwargs):
    super().__init__(filters, kernel_size, **kwargs)
    for key, allowed in (('kernel_size', (1, 1)), ('strides', (1, 1)),
                         ('dilation_rate', (1, 1)), ('groups', 1),
                         ('data_format', 'channels_last')):
      value = getattr(self, key)
      if value != allowed:
        raise ValueError(f'PointwiseConv2D: {key}={value!r}; allowed: '
                         f'{allowed!r}')

  def call(self, inputs, training=False):
    if not training:
      return super().call(inputs)
    kernel = tf.cast(self.kernel, inputs.dtype)
    kernel = tf.reshape(kernel, kernel.shape[2:])
    rows = tf.reshape(inputs, [-1, kernel.shape[0]])
    outputs = tf.matmul(rows, kernel)
    if self.use_bias:
      outputs = tf.nn.bias_add(outputs, tf.cast(self.bias, outputs.dtype))
    shape = tf.concat([tf.shape(inputs)[:-1], [self.filters]], 0)
    outputs = tf.reshape(outputs, shape)
    outputs.set_shape(inputs.shape[:-1] + (self.filters,))
    if self.activation is not None:
      outputs = self.activation(outputs)
    return outputs
