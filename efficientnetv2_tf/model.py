"""The EfficientNet V1/V2 model, built from block strings.

The model takes images normalised to [-1, 1] (`(x - 128) / 128` of 0-255
pixels) and returns logits. Set `include_preprocessing=True` to feed raw
0-255 pixels instead.
"""
from typing import Optional, Sequence, Tuple

import keras
import ml_collections

from efficientnetv2_tf import blockargs
from efficientnetv2_tf import blocks
from efficientnetv2_tf import preprocessing
from hparams.errors import UserError

NUM_REDUCTIONS = 5


@blocks.serializable
class EfficientNet(keras.Model):
  """EfficientNet V1 or V2, as a functional Keras model.

  Layers: `stem`, `blocks_0` ... `blocks_{n-1}`, `head` (1x1 conv and global
  pooling), then with `include_top` `top_dropout` and `predictions`.

  Outputs: the logits (or, without `include_top`, the pooled features); with
  `with_endpoints`, a list `[outputs, reduction_1, ..., reduction_5]` where
  `reduction_i` is the last feature map at stride 2**i.

  `bn_sync=True` makes every BatchNorm compute its training statistics over
  all replicas of the current `tf.distribute` strategy. It changes no
  variable, so weights move freely between models with and without it.

      >>> from hparams.models import V2_BASE_BLOCKS
      >>> model = EfficientNet(V2_BASE_BLOCKS, num_classes=10,
      ...                      width_coefficient=0.25, depth_coefficient=0.2)
      >>> tuple(model(keras.ops.zeros((1, 32, 32, 3))).shape)
      (1, 10)
  """

  def __init__(self,
               blocks_args: Sequence[str],
               width_coefficient: float = 1.0,
               depth_coefficient: float = 1.0,
               num_classes: int = 1000,
               include_top: bool = True,
               with_endpoints: bool = False,
               dropout_rate: float = 0.2,
               survival_prob: Optional[float] = 0.8,
               feature_size: int = 1280,
               depth_divisor: int = 8,
               min_depth: Optional[int] = 8,
               rounding_floor: float = 0.0,
               act_fn: str = 'silu',
               bn_momentum: float = 0.9,
               bn_epsilon: float = 1e-3,
               bn_sync: bool = False,
               conv_dropout: float = 0.0,
               headbias: Optional[float] = None,
               include_preprocessing: bool = False,
               preprocessing_mode: str = 'symmetric',
               input_shape: Tuple[Optional[int], ...] = (None, None, 3),
               name: str = 'efficientnet',
               **kwargs):
    arguments = {k: v for k, v in locals().items()
                 if k not in ('self', 'kwargs', '__class__')}
    arguments.update(blocks_args=list(blocks_args),
                     input_shape=tuple(input_shape))
    _check_arguments(arguments)
    stages = blockargs.scale_stages(blocks_args, width_coefficient,
                                    depth_coefficient, depth_divisor,
                                    min_depth, rounding_floor)
    common = dict(act_fn=act_fn, bn_momentum=bn_momentum,
                  bn_epsilon=bn_epsilon, bn_sync=bn_sync)

    inputs = keras.Input(shape=tuple(input_shape), name='images')
    x = inputs
    if include_preprocessing:
      x = preprocessing.Normalize(preprocessing_mode, name='normalize')(x)
    x = blocks.Stem(stages[0][0].input_filters, name='stem', **common)(x)

    flat = [args for stage in stages for args in stage]
    reductions = []
    for idx, args in enumerate(flat):
      block_survival = None
      if survival_prob:  # linear in depth: 1.0 for the first block
        block_survival = 1.0 - (1.0 - survival_prob) * idx / len(flat)
      x = blocks.MBConv(
          args.input_filters, args.output_filters, args.kernel_size,
          args.strides, args.expand_ratio, args.se_ratio,
          fused=args.conv_type == blockargs.FUSED_MBCONV,
          survival_prob=block_survival, conv_dropout=conv_dropout,
          name=f'blocks_{idx}', **common)(x)
      if idx == len(flat) - 1 or flat[idx + 1].strides > 1:
        reductions.append(x)

    head_filters = blockargs.round_filters(feature_size, width_coefficient,
                                           depth_divisor, min_depth,
                                           rounding_floor)
    outputs = blocks.Head(head_filters, name='head', **common)(x)
    if include_top:
      outputs = keras.layers.Dropout(dropout_rate, name='top_dropout')(outputs)
      # float32 logits under mixed precision keep the loss numerically sound.
      outputs = keras.layers.Dense(
          num_classes, kernel_initializer=blocks.dense_initializer(),
          bias_initializer=keras.initializers.Constant(headbias or 0.0),
          dtype='float32', name='predictions')(outputs)
    if with_endpoints:
      outputs = [outputs] + reductions[:NUM_REDUCTIONS]
    super().__init__(inputs=inputs, outputs=outputs, name=name, **kwargs)

    self.arguments = arguments
    self.include_top = include_top
    self.num_classes = num_classes
    self.num_features = head_filters

  def get_config(self):
    return {**self.arguments, 'trainable': self.trainable}

  @classmethod
  def from_config(cls, config):
    return cls(**config)

  @classmethod
  def from_model_config(cls, model_cfg: ml_collections.ConfigDict,
                        **kwargs) -> 'EfficientNet':
    """Builds the model that the `model` section of a run config describes.

    An unset `num_classes` means ImageNet's 1,000, an unset `bn_sync`
    off: the trainer, which knows the strategy, passes
    `bn_sync=distribute.resolve_bn_sync(...)`.
    """
    arguments = {key: model_cfg[key] for key in MODEL_CONFIG_KEYS}
    if arguments['num_classes'] is None:
      arguments['num_classes'] = 1000
    if arguments['bn_sync'] is None:
      arguments['bn_sync'] = False
    arguments['name'] = model_cfg.model_name
    return cls(**{**arguments, **kwargs})


# The keys of the config's `model` section that are EfficientNet arguments.
MODEL_CONFIG_KEYS = (
    'blocks_args', 'width_coefficient', 'depth_coefficient', 'num_classes',
    'dropout_rate', 'survival_prob', 'feature_size', 'depth_divisor',
    'min_depth', 'rounding_floor', 'act_fn', 'bn_momentum', 'bn_epsilon',
    'bn_sync', 'conv_dropout', 'headbias')

# name: (test, what is allowed), for the numeric and boolean arguments.
_ALLOWED = {
    'width_coefficient': (lambda v: v > 0, '> 0'),
    'depth_coefficient': (lambda v: v > 0, '> 0'),
    'dropout_rate': (lambda v: 0 <= v < 1, 'in [0, 1)'),
    'survival_prob': (lambda v: v is None or 0 <= v <= 1,
                      'in [0, 1], 0 or None to disable'),
    'feature_size': (lambda v: v > 0, '> 0'),
    'depth_divisor': (lambda v: v > 0, '> 0'),
    'min_depth': (lambda v: v is None or v > 0, '> 0 or None'),
    'rounding_floor': (lambda v: 0 <= v < 1, 'in [0, 1)'),
    'bn_momentum': (lambda v: 0 <= v < 1, 'in [0, 1)'),
    'bn_epsilon': (lambda v: v > 0, '> 0'),
    'bn_sync': (lambda v: isinstance(v, bool), 'True or False'),
    'conv_dropout': (lambda v: v is None or 0 <= v < 1, 'in [0, 1)'),
}


def _check_arguments(arguments) -> None:
  """Raises UserError naming the first argument outside its allowed range."""
  if arguments['include_top'] and (
      not isinstance(arguments['num_classes'], int) or
      isinstance(arguments['num_classes'], bool) or
      arguments['num_classes'] <= 0):
    raise UserError(f'num_classes must be a positive int, received '
                    f'num_classes={arguments["num_classes"]!r}')
  for name, (test, allowed) in _ALLOWED.items():
    value = arguments[name]
    try:
      ok = test(value)
    except TypeError:
      ok = False
    if not ok:
      raise UserError(f'{name} must be {allowed}, received {name}={value!r}')
