"""The block-string notation, and width/depth scaling of the blocks.

One string describes one stage of blocks. It is a list of `key+value` tokens
joined by `_`:

    r2_k3_s2_e4_i24_o48_c1_se0.25
    |  |  |  |  |   |   |  `- se: squeeze-excitation ratio, of the input
    |  |  |  |  |   |   |       filters (optional; absent means no SE)
    |  |  |  |  |   |   `---- c: conv type, 0 MBConv (default), 1 Fused-MBConv
    |  |  |  |  |   `-------- o: output filters
    |  |  |  |  `------------ i: input filters
    |  |  |  `--------------- e: expansion ratio
    |  |  `------------------ s: stride of the stage's first block
    |  `--------------------- k: kernel size
    `------------------------ r: number of blocks in the stage

    >>> args = decode('r2_k3_s2_e4_i24_o48_c1')
    >>> args.num_repeat, args.conv_type, args.se_ratio
    (2, 1, None)
    >>> encode(args)
    'r2_k3_s2_e4_i24_o48_c1'
"""
import dataclasses
import math
import re
from typing import List, Optional, Sequence

from hparams.errors import UserError

_REQUIRED = {'r': 'num_repeat', 'k': 'kernel_size', 's': 'strides',
             'e': 'expand_ratio', 'i': 'input_filters', 'o': 'output_filters'}
_OPTIONAL = {'se': 'se_ratio', 'c': 'conv_type'}
_KEYS = {**_REQUIRED, **_OPTIONAL}
_TOKEN = re.compile(r'^([a-z]+)(\d.*)$')

MBCONV, FUSED_MBCONV = 0, 1


@dataclasses.dataclass(frozen=True)
class BlockArgs:
  """The arguments of one stage of blocks."""
  num_repeat: int
  kernel_size: int
  strides: int
  expand_ratio: int
  input_filters: int
  output_filters: int
  se_ratio: Optional[float] = None
  conv_type: int = MBCONV

  @property
  def has_se(self) -> bool:
    return self.se_ratio is not None and 0 < self.se_ratio <= 1


def _parse_int(block_string: str, token: str, value: str) -> int:
  if not value.isdigit():
    raise UserError(f'block string {block_string!r}: {token!r} needs a '
                    f'whole number, received {value!r}')
  return int(value)


def decode(block_string: str) -> BlockArgs:
  """Parses one block string; raises UserError naming any bad token."""
  if not isinstance(block_string, str):
    raise UserError(f'a block string must be a str, received {block_string!r}')
  fields = {}
  for token in block_string.split('_'):
    match = _TOKEN.match(token)
    key = match.group(1) if match else token
    if not match or key not in _KEYS:
      allowed = ', '.join(sorted(_KEYS))
      raise UserError(f'block string {block_string!r} has an unknown key in '
                      f'{token!r}; allowed keys: {allowed}')
    value = match.group(2)
    if key == 'se':
      try:
        ratio = float(value)
      except ValueError:
        ratio = -1.0
      if not 0 < ratio <= 1:
        raise UserError(f'block string {block_string!r}: se must be in '
                        f'(0, 1], received {value!r}')
      fields['se_ratio'] = ratio
    else:
      fields[_KEYS[key]] = _parse_int(
          block_string, token, value)
  missing = [k for k, name in _REQUIRED.items() if name not in fields]
  if missing:
    raise UserError(f'block string {block_string!r} lacks the keys '
                    f'{", ".join(missing)}; e.g. r1_k3_s1_e1_i32_o16_c1')
  if fields.get('conv_type', MBCONV) not in (MBCONV, FUSED_MBCONV):
    raise UserError(f'block string {block_string!r}: c must be 0 (MBConv) or '
                    f'1 (Fused-MBConv), received {fields["conv_type"]}')
  for name in ('num_repeat', 'kernel_size', 'strides', 'expand_ratio',
               'input_filters', 'output_filters'):
    if fields[name] <= 0:
      key = next(k for k, v in _REQUIRED.items() if v == name)
      raise UserError(f'block string {block_string!r}: {key} must be > 0, '
                      f'received {name}={fields[name]}')
  return BlockArgs(**fields)


def encode(args: BlockArgs) -> str:
  """The canonical string of `args`; `decode(encode(a)) == a`."""
  tokens = [f'r{args.num_repeat}', f'k{args.kernel_size}', f's{args.strides}',
            f'e{args.expand_ratio}', f'i{args.input_filters}',
            f'o{args.output_filters}']
  if args.se_ratio is not None:
    tokens.append(f'se{args.se_ratio:g}')
  if args.conv_type != MBCONV:
    tokens.append(f'c{args.conv_type}')
  return '_'.join(tokens)


def round_filters(filters: int, width_coefficient: float,
                  depth_divisor: int = 8, min_depth: Optional[int] = 8,
                  rounding_floor: float = 0.0) -> int:
  """Scales a channel count by width and rounds to a multiple of the divisor.

  If rounding lost more than `1 - rounding_floor` of the scaled count, one
  divisor is added back. EfficientNet V1 was trained with a floor of 0.9;
  the V2 code has none (0.0). Of the presets only efficientnet-b3 differs.
  """
  if not width_coefficient:
    return filters
  scaled = filters * width_coefficient
  min_depth = min_depth or depth_divisor
  rounded = int(scaled + depth_divisor / 2) // depth_divisor * depth_divisor
  rounded = max(min_depth, rounded)
  if rounded < rounding_floor * scaled:
    rounded += depth_divisor
  return int(rounded)


def round_repeats(repeats: int, depth_coefficient: float) -> int:
  """Scales a stage's block count by depth, rounding up."""
  if not depth_coefficient:
    return repeats
  return int(math.ceil(depth_coefficient * repeats))


def scale_stages(blocks_args: Sequence[str], width_coefficient: float,
                 depth_coefficient: float, depth_divisor: int = 8,
                 min_depth: Optional[int] = 8,
                 rounding_floor: float = 0.0) -> List[List[BlockArgs]]:
  """Decodes and scales every stage; returns the blocks of each stage.

  In each stage the first block takes the stage's stride and input filters;
  the others have stride 1 and map the output filters to themselves.
  """
  if not blocks_args:
    raise UserError('model.blocks_args is empty: give at least one block '
                    'string, e.g. r1_k3_s1_e1_i32_o16_c1')
  stages = []
  for block_string in blocks_args:
    args = decode(block_string)
    args = dataclasses.replace(
        args,
        input_filters=round_filters(args.input_filters, width_coefficient,
                                    depth_divisor, min_depth, rounding_floor),
        output_filters=round_filters(args.output_filters, width_coefficient,
                                     depth_divisor, min_depth, rounding_floor),
        num_repeat=round_repeats(args.num_repeat, depth_coefficient))
    rest = dataclasses.replace(args, strides=1,
                               input_filters=args.output_filters)
    stages.append([args] + [rest] * (args.num_repeat - 1))
  return stages
