"""The layers of EfficientNet: Stem, MBConv, Fused-MBConv, SE, Head and
the dropout before the classifier.

Each block is one Keras layer whose sub-layers have fixed names
(`expand_conv`, `expand_bn`, `depthwise_conv`, `se`, `project_conv`, ...), so
a variable's path says where it sits: `blocks_3/project_bn/gamma`. The
official TF1 checkpoints use other names; `official.py` maps them.
"""
from typing import List, Optional

import keras
from keras import ops
import tensorflow as tf

from efficientnetv2_tf.pointwise import PointwiseConv2D
from hparams.errors import UserError


# Each layer needs its own initializer: Keras draws the same values from an
# unseeded instance every time it is called.
def conv_initializer() -> keras.initializers.Initializer:
  """Normal with stddev sqrt(2 / fan_out), as in the original code."""
  return keras.initializers.VarianceScaling(
      scale=2.0, mode='fan_out', distribution='untruncated_normal')


def dense_initializer(name: str = 'original'
                      ) -> keras.initializers.Initializer:
  """The classifier's kernel initialiser `name` (`model.head_init`):
  'original' is uniform in +-1/sqrt(num_classes), as in the original code;
  the others are Keras initialisers of that name."""
  if name == 'original':
    return keras.initializers.VarianceScaling(
        scale=1.0 / 3.0, mode='fan_out', distribution='uniform')
  return keras.initializers.get(name)


_ACTIVATION_ALIASES = {'swish': 'silu', 'hswish': 'hard_silu'}
_ACTIVATIONS = ('silu', 'swish', 'relu', 'relu6', 'elu', 'selu', 'gelu',
                'mish', 'leaky_relu', 'hswish', 'hard_silu')

serializable = keras.saving.register_keras_serializable('efficientnetv2_tf')


def activation(name: str):
  """The activation function called `name` (`act_fn` in the config)."""
  if name not in _ACTIVATIONS:
    raise UserError(f'unknown act_fn {name!r}; allowed: '
                    f'{", ".join(_ACTIVATIONS)}')
  return keras.activations.get(_ACTIVATION_ALIASES.get(name, name))


def _conv(filters: int, kernel_size: int, strides: int, name: str,
          use_bias: bool = False) -> keras.layers.Conv2D:
  """A 'same' convolution; 1x1 ones of stride 1 train as a MatMul."""
  layer = (PointwiseConv2D if (kernel_size, strides) == (1, 1)
           else keras.layers.Conv2D)
  return layer(filters, kernel_size, strides=strides, padding='same',
               use_bias=use_bias, kernel_initializer=conv_initializer(),
               name=name)


class _Block(keras.layers.Layer):
  """Holds the options shared by every block: activation and BatchNorm.

  With `bn_sync`, BatchNorm computes its batch statistics over all replicas
  of a `tf.distribute` strategy (Keras's `synchronized=True`), as the
  original's `tpu_bn` did on TPU; it has the same variables either way.

  A block lists its weighted sub-layers in order in `sublayers()`; `build`
  and `compute_output_shape` walk that chain, so Keras never has to trace
  `call` to build the model (which makes building the large variants fast).
  """

  def __init__(self, act_fn: str = 'silu', bn_momentum: float = 0.9,
               bn_epsilon: float = 1e-3, bn_sync: bool = False, **kwargs):
    super().__init__(**kwargs)
    self.act_fn = act_fn
    self.bn_momentum = bn_momentum
    self.bn_epsilon = bn_epsilon
    self.bn_sync = bn_sync
    self.act = activation(act_fn)

  def _bn(self, name: str) -> keras.layers.BatchNormalization:
    return BatchNorm(
        momentum=self.bn_momentum, epsilon=self.bn_epsilon,
        synchronized=self.bn_sync, name=name)

  def sublayers(self):
    raise NotImplementedError

  def _chain_shape(self, shape, build: bool):
    for layer in self.sublayers():
      if layer is not None:
        if build:
          layer.build(shape)
        shape = layer.compute_output_shape(shape)
    return shape

  def build(self, input_shape):
    self._chain_shape(input_shape, build=True)

  def compute_output_shape(self, input_shape):
    return self._chain_shape(input_shape, build=False)

  def get_config(self):
    return {**super().get_config(), 'act_fn': self.act_fn,
            'bn_momentum': self.bn_momentum, 'bn_epsilon': self.bn_epsilon,
            'bn_sync': self.bn_sync}


@serializable
class BatchNorm(keras.layers.BatchNormalization):
  """Keras's BatchNormalization, computed by TensorFlow's fused kernel.

  One op forward and one backward where Keras builds a dozen (moments,
  normalisation, their casts and gradients), so a traced step is smaller
  and quicker to make, and inference that reads the weights from variables
  is quicker. The moving variance takes the batch variance with Bessel's
  correction, as the original's BatchNorm did off TPU (Keras's fused
  kernel in TF1). Cross-replica statistics (`synchronized=True`) and masks
  take Keras's own path, whose moving variance has no correction, as the
  original's TPU BatchNorm had none. The variables are Keras's, so
  checkpoints are unchanged.
  """

  def call(self, inputs, training=None, mask=None):
    if (self.synchronized or mask is not None or len(inputs.shape) != 4
        or self.axis not in (-1, 3)):
      return super().call(inputs, training=training, mask=mask)
    fused = dict(
        x=inputs,
        scale=self.gamma if self.scale else tf.ones_like(self.moving_mean),
        offset=self.beta if self.center else tf.zeros_like(self.moving_mean),
        mean=self.moving_mean, variance=self.moving_variance,
        epsilon=self.epsilon)
    if training and self.trainable:
      outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
          **fused, is_training=True,
          exponential_avg_factor=1.0 - self.momentum)
      self.moving_mean.assign(mean)
      self.moving_variance.assign(variance)
    else:
      outputs, _, _ = tf.compat.v1.nn.fused_batch_norm(**fused,
                                                        is_training=False)
    return ops.cast(outputs, self.compute_dtype)


def replica_seed(generator: keras.random.SeedGenerator) -> tf.Tensor:
  """The next seed of `generator`, as Keras's TensorFlow backend draws
  and casts it, made distinct per replica under a strategy.

  A generator's state is mirrored, the same on every replica; without the
  replica's index folded in, example i of every replica's batch would get
  the same mask. One replica draws exactly what Keras would.
  """
  seed = generator.next()
  if seed.dtype != tf.int32:
    seed = tf.cast(tf.math.floormod(seed, tf.int32.max - 1), tf.int32)
  context = tf.distribute.get_replica_context()
  if context is not None and context.num_replicas_in_sync > 1:
    seed = tf.random.experimental.stateless_fold_in(
        seed, tf.cast(context.replica_id_in_sync_group, tf.int32))
  return seed


@serializable
class StochasticDepth(keras.layers.Layer):
  """Drops the whole residual branch of a sample with prob. 1 - survival_prob.

  Kept branches are scaled by 1 / survival_prob, so inference is the
  identity. Active only when `training` is true.
  """

  def __init__(self, survival_prob: float, seed: Optional[int] = None,
               **kwargs):
    super().__init__(**kwargs)
    if not 0 < survival_prob <= 1:
      raise UserError(f'survival_prob must be in (0, 1], received '
                      f'survival_prob={survival_prob}')
    self.survival_prob = survival_prob
    self.seed = seed
    self.seed_generator = keras.random.SeedGenerator(seed)

  def call(self, inputs, training=False):
    if not training or self.survival_prob == 1.0:
      return inputs
    noise_shape = (ops.shape(inputs)[0],) + (1,) * (len(inputs.shape) - 1)
    return tf.nn.experimental.stateless_dropout(
        inputs, 1.0 - self.survival_prob, noise_shape=noise_shape,
        seed=replica_seed(self.seed_generator))

  def get_config(self):
    return {**super().get_config(), 'survival_prob': self.survival_prob,
            'seed': self.seed}


@serializable
class TopDropout(keras.layers.Dropout):
  """The dropout before the classifier. After `follow(variable)`, training
  reads its rate from that variable each time the step runs, so
  progressive stages that change only the rate share one traced step;
  inference ignores it, as any dropout does. The variable holds
  `settings(rate)`. On one replica each call draws the values
  `keras.layers.Dropout(rate)` would, from the same seeds; under a
  strategy each replica draws its own (`replica_seed`).
  """

  @staticmethod
  def settings(rate: float) -> List[float]:
    """The rate and its scale 1 / (1 - rate), worked out in Python as
    Keras does for a rate it is given as a number."""
    return [rate, 1.0 / (1.0 - rate)]

  def follow(self, settings: tf.Variable) -> None:
    # Set past Keras's tracking: the rate belongs to the training loop, not
    # to the model's weights or checkpoints.
    object.__setattr__(self, '_settings', settings)

  def call(self, inputs, training=False):
    # Keras makes no seed generator for a rate of 0.
    if not training or not hasattr(self, 'seed_generator'):
      return super().call(inputs, training=training)
    settings = getattr(self, '_settings', None)
    if settings is None:
      settings = self.settings(self.rate)
    rate, scale = tf.unstack(tf.cast(settings, inputs.dtype))
    # At rate 0 Keras draws nothing, so later draws keep their seeds.
    return tf.cond(rate > 0, lambda: self._drop(inputs, rate, scale),
                   lambda: tf.identity(inputs))

  def _drop(self, inputs, rate, scale):
    seed = replica_seed(self.seed_generator)
    shape = tf.shape(inputs)
    if self.noise_shape is not None:  # None where it follows the inputs
      shape = tf.stack([shape[i] if size is None else size
                        for i, size in enumerate(self.noise_shape)])
    noise = tf.random.stateless_uniform(shape, seed, dtype=inputs.dtype)
    return tf.where(noise >= rate, inputs * scale, tf.zeros_like(inputs))


@serializable
class SqueezeExcite(keras.layers.Layer):
  """Rescales channels by a gate computed from their global average."""

  def __init__(self, filters: int, reduced_filters: int, act_fn: str = 'silu',
               **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.reduced_filters = reduced_filters
    self.act_fn = act_fn
    self.act = activation(act_fn)
    self.reduce = _conv(reduced_filters, 1, 1, 'reduce', use_bias=True)
    self.expand = _conv(filters, 1, 1, 'expand', use_bias=True)

  def build(self, input_shape):
    pooled = (input_shape[0], 1, 1, input_shape[-1])
    self.reduce.build(pooled)
    self.expand.build(self.reduce.compute_output_shape(pooled))

  def compute_output_shape(self, input_shape):
    return input_shape

  def call(self, inputs):
    gate = ops.mean(inputs, axis=(1, 2), keepdims=True)
    gate = self.expand(self.act(self.reduce(gate)))
    return inputs * ops.sigmoid(gate)

  def get_config(self):
    return {**super().get_config(), 'filters': self.filters,
            'reduced_filters': self.reduced_filters, 'act_fn': self.act_fn}


class _ConvBNAct(_Block):
  """A convolution, BatchNorm and activation; subclasses fix kernel, stride."""
  kernel_size = strides = 1

  def __init__(self, filters: int, **kwargs):
    super().__init__(**kwargs)
    self.filters = filters
    self.conv = _conv(filters, self.kernel_size, self.strides, 'conv')
    self.bn = self._bn('bn')

  def sublayers(self):
    return [self.conv, self.bn]

  def call(self, inputs, training=False):
    return self.act(self.bn(self.conv(inputs), training=training))

  def get_config(self):
    return {**super().get_config(), 'filters': self.filters}


@serializable
class Stem(_ConvBNAct):
  """A strided 3x3 convolution, BatchNorm and activation."""
  kernel_size, strides = 3, 2


@serializable
class MBConv(_Block):
  """Inverted residual: 1x1 expand, depthwise conv, SE, 1x1 project.

  With `fused=True` this is Fused-MBConv: a single kxk convolution replaces
  the expansion and the depthwise convolution (when `expand_ratio` is 1, the
  kxk convolution is the projection and the activation follows it).
  """

  def __init__(self, input_filters: int, output_filters: int,
               kernel_size: int = 3, strides: int = 1, expand_ratio: int = 1,
               se_ratio: Optional[float] = None, fused: bool = False,
               survival_prob: Optional[float] = None,
               conv_dropout: float = 0.0, **kwargs):
    super().__init__(**kwargs)
    self.input_filters = input_filters
    self.output_filters = output_filters
    self.kernel_size = kernel_size
    self.strides = strides
    self.expand_ratio = expand_ratio
    self.se_ratio = se_ratio
    self.fused = fused
    self.survival_prob = survival_prob
    self.conv_dropout = conv_dropout

    expanded = input_filters * expand_ratio
    expands = expand_ratio != 1
    self.expand_conv = self.expand_bn = None
    self.depthwise_conv = self.depthwise_bn = None
    if expands:
      # Fused: the kxk conv both expands and strides.
      self.expand_conv = (_conv(expanded, kernel_size, strides, 'expand_conv')
                          if fused else _conv(expanded, 1, 1, 'expand_conv'))
      self.expand_bn = self._bn('expand_bn')
    if not fused:
      self.depthwise_conv = keras.layers.DepthwiseConv2D(
          kernel_size, strides=strides, padding='same', use_bias=False,
          depthwise_initializer=conv_initializer(), name='depthwise_conv')
      self.depthwise_bn = self._bn('depthwise_bn')
    self.dropout = (keras.layers.Dropout(conv_dropout, name='conv_dropout')
                    if conv_dropout and expand_ratio > 1 else None)
    self.se = None
    if se_ratio is not None and 0 < se_ratio <= 1:
      self.se = SqueezeExcite(expanded, max(1, int(input_filters * se_ratio)),
                              self.act_fn, name='se')
    if fused and not expands:
      self.project_conv = _conv(output_filters, kernel_size, strides,
                                'project_conv')
    else:
      self.project_conv = _conv(output_filters, 1, 1, 'project_conv')
    self.project_bn = self._bn('project_bn')
    self.drop_path = None
    if self.has_residual and survival_prob and survival_prob < 1:
      self.drop_path = StochasticDepth(survival_prob, name='drop_path')

  def sublayers(self):
    return [self.expand_conv, self.expand_bn, self.depthwise_conv,
            self.depthwise_bn, self.se, self.project_conv, self.project_bn]

  @property
  def has_residual(self) -> bool:
    return self.strides == 1 and self.input_filters == self.output_filters

  def call(self, inputs, training=False):
    x = inputs
    if self.expand_conv is not None:
      x = self.act(self.expand_bn(self.expand_conv(x), training=training))
    if self.depthwise_conv is not None:
      x = self.act(self.depthwise_bn(self.depthwise_conv(x),
                                     training=training))
    if self.dropout is not None:
      x = self.dropout(x, training=training)
    if self.se is not None:
      x = self.se(x)
    x = self.project_bn(self.project_conv(x), training=training)
    if self.fused and self.expand_conv is None:
      x = self.act(x)
    if self.has_residual:
      if self.drop_path is not None:
        x = self.drop_path(x, training=training)
      x = x + inputs
    return x

  def get_config(self):
    return {**super().get_config(), 'input_filters': self.input_filters,
            'output_filters': self.output_filters,
            'kernel_size': self.kernel_size, 'strides': self.strides,
            'expand_ratio': self.expand_ratio, 'se_ratio': self.se_ratio,
            'fused': self.fused, 'survival_prob': self.survival_prob,
            'conv_dropout': self.conv_dropout}


@serializable
class Head(_ConvBNAct):
  """1x1 convolution to the feature size, BatchNorm, activation, pooling."""

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.filters)

  def call(self, inputs, training=False):
    return ops.mean(super().call(inputs, training=training), axis=(1, 2))
