"""Model presets: the block strings and per-variant settings of each model.

The figures are those of the original EfficientNet V1/V2 code. Each preset is
a plain dict of config overrides, applied on top of `base_config()`.
"""
from typing import Any, Dict, List

from hparams.registry import Registry

MODEL_PRESETS: Registry = Registry('model name')

# EfficientNet V1: every variant scales the B0 blocks.
V1_BLOCKS = [
    'r1_k3_s1_e1_i32_o16_se0.25',
    'r2_k3_s2_e6_i16_o24_se0.25',
    'r2_k5_s2_e6_i24_o40_se0.25',
    'r3_k3_s2_e6_i40_o80_se0.25',
    'r3_k5_s1_e6_i80_o112_se0.25',
    'r4_k5_s2_e6_i112_o192_se0.25',
    'r1_k3_s1_e6_i192_o320_se0.25',
]

# name: (width_coefficient, depth_coefficient, eval_size, dropout_rate)
V1_VARIANTS = {
    'efficientnet-b0': (1.0, 1.0, 224, 0.2),
    'efficientnet-b1': (1.0, 1.1, 240, 0.2),
    'efficientnet-b2': (1.1, 1.2, 260, 0.3),
    'efficientnet-b3': (1.2, 1.4, 300, 0.3),
    'efficientnet-b4': (1.4, 1.8, 380, 0.4),
    'efficientnet-b5': (1.6, 2.2, 456, 0.4),
    'efficientnet-b6': (1.8, 2.6, 528, 0.5),
    'efficientnet-b7': (2.0, 3.1, 600, 0.5),
    'efficientnet-b8': (2.2, 3.6, 672, 0.5),
    'efficientnet-l2': (4.3, 5.3, 800, 0.5),
}

# EfficientNetV2. Stages marked c1 are Fused-MBConv, the others MBConv.
V2_BASE_BLOCKS = [  # B0-B3, scaled like V1
    'r1_k3_s1_e1_i32_o16_c1',
    'r2_k3_s2_e4_i16_o32_c1',
    'r2_k3_s2_e4_i32_o48_c1',
    'r3_k3_s2_e4_i48_o96_se0.25',
    'r5_k3_s1_e6_i96_o112_se0.25',
    'r8_k3_s2_e6_i112_o192_se0.25',
]
V2_S_BLOCKS = [
    'r2_k3_s1_e1_i24_o24_c1',
    'r4_k3_s2_e4_i24_o48_c1',
    'r4_k3_s2_e4_i48_o64_c1',
    'r6_k3_s2_e4_i64_o128_se0.25',
    'r9_k3_s1_e6_i128_o160_se0.25',
    'r15_k3_s2_e6_i160_o256_se0.25',
]
V2_M_BLOCKS = [
    'r3_k3_s1_e1_i24_o24_c1',
    'r5_k3_s2_e4_i24_o48_c1',
    'r5_k3_s2_e4_i48_o80_c1',
    'r7_k3_s2_e4_i80_o160_se0.25',
    'r14_k3_s1_e6_i160_o176_se0.25',
    'r18_k3_s2_e6_i176_o304_se0.25',
    'r5_k3_s1_e6_i304_o512_se0.25',
]
V2_L_BLOCKS = [
    'r4_k3_s1_e1_i32_o32_c1',
    'r7_k3_s2_e4_i32_o64_c1',
    'r7_k3_s2_e4_i64_o96_c1',
    'r10_k3_s2_e4_i96_o192_se0.25',
    'r19_k3_s1_e6_i192_o224_se0.25',
    'r25_k3_s2_e6_i224_o384_se0.25',
    'r7_k3_s1_e6_i384_o640_se0.25',
]
V2_XL_BLOCKS = [  # published for ImageNet-21k pretraining only
    'r4_k3_s1_e1_i32_o32_c1',
    'r8_k3_s2_e4_i32_o64_c1',
    'r8_k3_s2_e4_i64_o96_c1',
    'r16_k3_s2_e4_i96_o192_se0.25',
    'r24_k3_s1_e6_i192_o256_se0.25',
    'r32_k3_s2_e6_i256_o512_se0.25',
    'r8_k3_s1_e6_i512_o640_se0.25',
]

# name: (blocks, width, depth, train_size, eval_size, dropout, randaug
#        magnitude, mixup/cutmix alpha, augmentation)
V2_VARIANTS = {
    'efficientnetv2-s': (V2_S_BLOCKS, 1.0, 1.0, 300, 384, 0.2, 10, 0.0,
                         'randaug'),
    'efficientnetv2-m': (V2_M_BLOCKS, 1.0, 1.0, 384, 480, 0.3, 15, 0.2,
                         'randaug'),
    'efficientnetv2-l': (V2_L_BLOCKS, 1.0, 1.0, 384, 480, 0.4, 20, 0.5,
                         'randaug'),
    'efficientnetv2-xl': (V2_XL_BLOCKS, 1.0, 1.0, 384, 512, 0.4, 20, 0.5,
                          'randaug'),
    'efficientnetv2-b0': (V2_BASE_BLOCKS, 1.0, 1.0, 192, 224, 0.2, 0, 0.0,
                          'effnetv1_autoaug'),
    'efficientnetv2-b1': (V2_BASE_BLOCKS, 1.0, 1.1, 192, 240, 0.2, 0, 0.0,
                          'effnetv1_autoaug'),
    'efficientnetv2-b2': (V2_BASE_BLOCKS, 1.1, 1.2, 208, 260, 0.3, 0, 0.0,
                          'effnetv1_autoaug'),
    'efficientnetv2-b3': (V2_BASE_BLOCKS, 1.2, 1.4, 240, 300, 0.3, 0, 0.0,
                          'effnetv1_autoaug'),
}

for _name, (_width, _depth, _size, _dropout) in V1_VARIANTS.items():
  MODEL_PRESETS.add(_name, {
      'model': {
          'model_name': _name,
          'blocks_args': V1_BLOCKS,
          'width_coefficient': _width,
          'depth_coefficient': _depth,
          'dropout_rate': _dropout,
          'rounding_floor': 0.9,
      },
      'train': {'image_size_ratio': 0.8},
      'eval': {'isize': _size},
      'data': {'augname': 'effnetv1_autoaug'},
  })

for _name, (_blocks, _width, _depth, _train_size, _eval_size, _dropout, _ram,
            _mix, _aug) in V2_VARIANTS.items():
  MODEL_PRESETS.add(_name, {
      'model': {
          'model_name': _name,
          'blocks_args': _blocks,
          'width_coefficient': _width,
          'depth_coefficient': _depth,
          'dropout_rate': _dropout,
      },
      'train': {'image_size': _train_size, 'stages': 4, 'sched': True},
      'eval': {'isize': _eval_size},
      'data': {'augname': _aug, 'ram': _ram, 'mixup_alpha': _mix,
               'cutmix_alpha': _mix},
  })


def model_preset(model_name: str) -> Dict[str, Any]:
  """The config overrides of a named model; raises UserError if unknown."""
  return MODEL_PRESETS.get(model_name)


def list_models() -> List[str]:
  return MODEL_PRESETS.names()
