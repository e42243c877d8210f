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
               act_fn: str = 'silu',
               bn_momentum: float = 0.9,
               bn_epsilon: float = 1e-3,
               conv_dropout: float = 0.0,
               headbias: Optional[float] = None,
               include_preprocessing: bool = False,
               preprocessing_mode: str = 'symmetric',
               input_shape: Tuple[Optional[int], ...] = (None, None, 3),
               name: str = 'efficientnet',
               **kwargs):
    if include_top and (not isinstance(num_classes, int) or num_classes <= 0):
      raise UserError(f'num_classes must be a positive int, received '
                      f'num_classes={num_classes!r}')
    if not 0 <= dropout_rate < 1:
      raise UserError(f'dropout_rate must be in [0, 1), received '
                      f'dropout_rate={dropout_rate}')
    if survival_prob is not None and not 0 <= survival_prob <= 1:
      raise UserError(f'survival_prob must be in [0, 1], received '
                      f'survival_prob={survival_prob}')
    stages = blockargs.scale_stages(blocks_args, width_coefficient,
                                    depth_coefficient, depth_divisor,
                                    min_depth)
    common = dict(act_fn=act_fn, bn_momentum=bn_momentum,
                  bn_epsilon=bn_epsilon)

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
                                           depth_divisor, min_depth)
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

    self.blocks_args = list(blocks_args)
    self.width_coefficient = width_coefficient
    self.depth_coefficient = depth_coefficient
    self.num_classes = num_classes
    self.include_top = include_top
    self.with_endpoints = with_endpoints
    self.dropout_rate = dropout_rate
    self.survival_prob = survival_prob
    self.feature_size = feature_size
    self.num_features = head_filters
    self.depth_divisor = depth_divisor
    self.min_depth = min_depth
    self.act_fn = act_fn
    self.bn_momentum = bn_momentum
    self.bn_epsilon = bn_epsilon
    self.conv_dropout = conv_dropout
    self.headbias = headbias
    self.include_preprocessing = include_preprocessing
    self.preprocessing_mode = preprocessing_mode
    self.image_input_shape = tuple(input_shape)

  def get_config(self):
    return {
        'name': self.name,
        'blocks_args': self.blocks_args,
        'width_coefficient': self.width_coefficient,
        'depth_coefficient': self.depth_coefficient,
        'num_classes': self.num_classes,
        'include_top': self.include_top,
        'with_endpoints': self.with_endpoints,
        'dropout_rate': self.dropout_rate,
        'survival_prob': self.survival_prob,
        'feature_size': self.feature_size,
        'depth_divisor': self.depth_divisor,
        'min_depth': self.min_depth,
        'act_fn': self.act_fn,
        'bn_momentum': self.bn_momentum,
        'bn_epsilon': self.bn_epsilon,
        'conv_dropout': self.conv_dropout,
        'headbias': self.headbias,
        'include_preprocessing': self.include_preprocessing,
        'preprocessing_mode': self.preprocessing_mode,
        'input_shape': self.image_input_shape,
        'trainable': self.trainable,
    }

  @classmethod
  def from_config(cls, config):
    return cls(**config)

  @classmethod
  def from_model_config(cls, model_cfg: ml_collections.ConfigDict,
                        **kwargs) -> 'EfficientNet':
    """Builds the model that the `model` section of a run config describes."""
    return cls(
        blocks_args=list(model_cfg.blocks_args),
        width_coefficient=model_cfg.width_coefficient,
        depth_coefficient=model_cfg.depth_coefficient,
        num_classes=model_cfg.num_classes,
        dropout_rate=model_cfg.dropout_rate,
        survival_prob=model_cfg.survival_prob,
        feature_size=model_cfg.feature_size,
        depth_divisor=model_cfg.depth_divisor,
        min_depth=model_cfg.min_depth,
        act_fn=model_cfg.act_fn,
        bn_momentum=model_cfg.bn_momentum,
        bn_epsilon=model_cfg.bn_epsilon,
        conv_dropout=model_cfg.conv_dropout,
        headbias=model_cfg.headbias,
        **{'name': model_cfg.model_name, **kwargs})
