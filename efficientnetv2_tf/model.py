"""The EfficientNet V1/V2 model, built from block strings.

The model takes images normalised to [-1, 1] (`(x - 128) / 128` of 0-255
pixels) and returns logits. Set `include_preprocessing=True` to feed raw
0-255 pixels instead.
"""
import dataclasses
from typing import Optional, Sequence

import keras

from efficientnetv2_tf import blockargs
from efficientnetv2_tf import blocks
from efficientnetv2_tf import preprocessing
from hparams.specs import ModelSpec

NUM_REDUCTIONS = 5


@blocks.serializable
class EfficientNet(keras.Model):
  """EfficientNet V1 or V2, as a functional Keras model.

  Layers: `stem`, `blocks_0` ... `blocks_{n-1}`, `head` (1x1 conv and global
  pooling), then with `include_top` `top_dropout` and `predictions`.

  Outputs: the logits (or, without `include_top`, the pooled features); with
  `with_endpoints`, a list `[outputs, reduction_1, ..., reduction_5]` where
  `reduction_i` is the last feature map at stride 2**i.

  The arguments, their defaults and allowed ranges are the fields of
  `hparams.specs.ModelSpec`; `from_spec` builds the model a spec describes.

  `bn_sync=True` makes every BatchNorm compute its training statistics over
  all replicas of the current `tf.distribute` strategy; unset, it is off
  here (the trainer resolves it for its strategy). It changes no variable,
  so weights move freely between models with and without it.

      >>> from hparams.models import V2_BASE_BLOCKS
      >>> model = EfficientNet(V2_BASE_BLOCKS, num_classes=10,
      ...                      width_coefficient=0.25, depth_coefficient=0.2)
      >>> tuple(model(keras.ops.zeros((1, 32, 32, 3))).shape)
      (1, 10)
  """

  def __init__(self, blocks_args: Optional[Sequence[str]] = None,
               **kwargs):
    """Takes `ModelSpec`'s fields as keyword arguments (their defaults and
    allowed ranges are there) and Keras `Model` arguments."""
    arguments = {key: kwargs.pop(key) for key in _ARGUMENT_NAMES
                 if key in kwargs}
    if blocks_args is not None:
      arguments['blocks_args'] = blocks_args
    spec = ModelSpec(**arguments)
    inputs, outputs, num_features = _graph(spec)
    super().__init__(inputs=inputs, outputs=outputs, name=spec.name, **kwargs)
    self.spec = spec
    self.include_top = spec.include_top
    self.num_classes = spec.num_classes
    self.num_features = num_features

  @property
  def classifier(self) -> Optional[keras.layers.Dense]:
    """The final Dense layer (None without `include_top`)."""
    return self.get_layer('predictions') if self.include_top else None

  @property
  def top_dropout(self) -> Optional[keras.layers.Dropout]:
    """The dropout before the classifier (None without `include_top`)."""
    return self.get_layer('top_dropout') if self.include_top else None

  def backbone_layers(self) -> list:
    """Every layer but the classifier and its dropout: what fine-tuning
    freezes and what a feature extractor keeps."""
    head = {id(self.classifier), id(self.top_dropout)}
    return [layer for layer in self.layers if id(layer) not in head]

  def get_config(self):
    return {**self.spec.arguments(), 'blocks_args': list(self.spec.blocks_args),
            'trainable': self.trainable}

  @classmethod
  def from_config(cls, config):
    return cls(**config)

  @classmethod
  def from_spec(cls, spec: ModelSpec, **overrides) -> 'EfficientNet':
    """The model `spec` describes, with some of its fields replaced."""
    return cls(**{**spec.arguments(), **overrides})


_ARGUMENT_NAMES = tuple(f.name for f in dataclasses.fields(ModelSpec))


def _graph(spec: ModelSpec):
  """The model's inputs, outputs and pooled feature count."""
  stages = blockargs.scale_stages(
      spec.blocks_args, spec.width_coefficient, spec.depth_coefficient,
      spec.depth_divisor, spec.min_depth, spec.rounding_floor)
  common = dict(act_fn=spec.act_fn, bn_momentum=spec.bn_momentum,
                bn_epsilon=spec.bn_epsilon,
                bn_sync=bool(spec.bn_sync))
  inputs = keras.Input(shape=spec.input_shape, name='images')
  x = inputs
  if spec.include_preprocessing:
    x = preprocessing.Normalize(spec.preprocessing_mode, name='normalize')(x)
  x = blocks.Stem(stages[0][0].input_filters, name='stem', **common)(x)

  flat = [args for stage in stages for args in stage]
  reductions = []
  for idx, args in enumerate(flat):
    block_survival = None
    if spec.survival_prob:  # linear in depth: 1.0 for the first block
      block_survival = 1.0 - (1.0 - spec.survival_prob) * idx / len(flat)
    x = blocks.MBConv(
        args.input_filters, args.output_filters, args.kernel_size,
        args.strides, args.expand_ratio, args.se_ratio,
        fused=args.conv_type == blockargs.FUSED_MBCONV,
        survival_prob=block_survival, conv_dropout=spec.conv_dropout,
        name=f'blocks_{idx}', **common)(x)
    if idx == len(flat) - 1 or flat[idx + 1].strides > 1:
      reductions.append(x)

  head_filters = blockargs.round_filters(
      spec.feature_size, spec.width_coefficient, spec.depth_divisor,
      spec.min_depth, spec.rounding_floor)
  outputs = blocks.Head(head_filters, name='head', **common)(x)
  if spec.include_top:
    outputs = blocks.TopDropout(spec.dropout_rate,
                                name='top_dropout')(outputs)
    # float32 logits under mixed precision keep the loss numerically sound.
    outputs = keras.layers.Dense(
        spec.num_classes,
        kernel_initializer=blocks.dense_initializer(spec.head_init),
        bias_initializer=keras.initializers.Constant(spec.headbias or 0.0),
        dtype='float32', name='predictions')(outputs)
  if spec.with_endpoints:
    outputs = [outputs] + reductions[:NUM_REDUCTIONS]
  return inputs, outputs, head_filters
