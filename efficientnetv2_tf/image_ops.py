"""Per-image augmentation ops: the original's 16, on uint8 images.

The ops of the original EfficientNetV2 code's `autoaugment.py`, rebuilt on
TF 2 ops without `tensorflow_addons`. Each takes one uint8 [H, W, 3] image
and returns one; H and W may be unknown until run time. A magnitude is a
level on the original's scale, where 10 was the top of its search space
and larger values extrapolate (the paper's presets go up to 25).

By default every op computes what the original computes, quirks included
(`tests/fixtures/augment_ops.npz` holds the original's outputs at every
magnitude 0..25). Levels become arguments in float64, as the original's
Python arithmetic did, so truncations such as `int(level / 10 * 110)` agree.
The quirks kept (`docs/augmentation.md` has the details):

- Solarize compares with its threshold in uint8, which wraps: levels 10
  and 20 invert every pixel again, 15 and 25 those from 128 up.
- Posterize's shift of 8 - bits is clamped to 7 below level 2.5 and from
  22.5 up, so those levels keep 1 bit; 20 up to 22.5 keeps all 8.
- Contrast blends towards a grey of (number of pixels) / 256, not the
  image's mean grey, so its target changes with the image size.

`fixes=True` (`data.augment_fixes`) stops Solarize's threshold at 256 and
Posterize's bit count at 8, so higher levels leave the image as it is, and
makes Contrast blend towards the image's mean grey.

Randomness is stateless: every random function takes `seed`, an integer
tensor of shape [2], and the same seed gives the same result eagerly and
inside `tf.data.Dataset.map`. The random streams differ from the original's
TF1 ones; the distributions are the same.

    >>> image = tf.fill([8, 8, 3], tf.constant(10, tf.uint8))
    >>> apply_op(image, 'Invert', 0, seed=[1, 2])[0, 0].numpy()
    array([245, 245, 245], dtype=uint8)

Where this module differs from the original, on purpose: warps fill
uncovered pixels with the grey directly; the original warped an extra
channel of ones and filled where it came back 0. With nearest-neighbour
sampling the pixels are the same.
"""
import dataclasses
import math
import numbers
from typing import Callable, Optional, Sequence, Tuple, Union

import keras
import tensorflow as tf

from hparams.errors import UserError
from hparams.registry import Registry

Seed = Union[tf.Tensor, Sequence[int]]
Magnitude = Union[float, tf.Tensor]

# The top of the original's level scale: a level of 10 gives each op the
# strongest argument the AutoAugment search could pick.
LEVEL_SCALE = 10.0
MAX_MAGNITUDE = 30.0
# Pixels uncovered by a rotation, shear or translation, and the Cutout op's
# square, get this grey rather than black: later ops such as AutoContrast
# and Equalize react to intensities, and black would skew them.
REPLACE = 128
# How far Translate (pixels) and Cutout (half-side) reach at level 10.
RANDAUGMENT_CONSTS = {'translate_const': 100, 'cutout_const': 40}
AUTOAUGMENT_CONSTS = {'translate_const': 250, 'cutout_const': 100}


def check_magnitude(magnitude: float) -> float:
  """`magnitude` as a float; a `UserError` unless it is a number in range."""
  if (isinstance(magnitude, bool) or not isinstance(magnitude, numbers.Real)
      or not 0 <= magnitude <= MAX_MAGNITUDE):
    raise UserError(f'augmentation magnitude must be a number in '
                    f'[0, {MAX_MAGNITUDE:g}]; received magnitude='
                    f'{magnitude!r}')
  return float(magnitude)


def as_level(magnitude: Magnitude) -> tf.Tensor:
  """`magnitude` as a float64 level, as the original's Python arithmetic
  had. A Python number must pass `check_magnitude`; a tensor is used as is,
  since it can't be range-checked while tracing."""
  if tf.is_tensor(magnitude):
    return tf.cast(magnitude, tf.float64)
  return tf.constant(check_magnitude(magnitude), tf.float64)


def split_seed(seed: Seed, num: int = 2) -> Tuple[tf.Tensor, ...]:
  """`num` independent seeds derived from `seed`."""
  return tuple(tf.unstack(tf.random.experimental.stateless_split(seed, num)))


def coin(seed: Seed, prob: float) -> tf.Tensor:
  """True with probability `prob`."""
  return tf.random.stateless_uniform([], seed) < prob


def _blend(degenerate: tf.Tensor, image: tf.Tensor,
           factor: tf.Tensor) -> tf.Tensor:
  """PIL's ImageEnhance: factor 0 gives `degenerate`, 1 gives `image`, and
  larger factors extrapolate (then clip)."""
  degenerate = tf.cast(degenerate, tf.float32)
  mixed = degenerate + factor * (tf.cast(image, tf.float32) - degenerate)
  return tf.cast(tf.clip_by_value(mixed, 0.0, 255.0), tf.uint8)


def _gray(image: tf.Tensor) -> tf.Tensor:
  return tf.image.grayscale_to_rgb(tf.image.rgb_to_grayscale(image))


def _mean_gray(image: tf.Tensor) -> tf.Tensor:
  mean = tf.reduce_mean(tf.cast(tf.image.rgb_to_grayscale(image), tf.float32))
  return tf.fill(tf.shape(image), tf.cast(mean, tf.uint8))


def _pixel_count_gray(image: tf.Tensor) -> tf.Tensor:
  """The original's Contrast target: it summed a 256-bin histogram of the
  grey image, which counts its pixels, and divided by 256."""
  count = tf.cast(tf.reduce_prod(tf.shape(image)[:2]), tf.float32)
  gray = tf.clip_by_value(count / 256.0, 0.0, 255.0)
  return tf.fill(tf.shape(image), tf.cast(gray, tf.uint8))


def _smooth(image: tf.Tensor) -> tf.Tensor:
  """PIL's SMOOTH filter; the one-pixel border keeps its original values.

  The nine products are added one by one, row by row, in float32: what the
  original's convolution gave to the last bit, so the truncation to uint8
  matches it everywhere, whichever convolution kernels TensorFlow runs
  (oneDNN's, summing in another order, put one pixel 2 levels off).
  """
  weights = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  pixels = tf.cast(image, tf.float32)
  height, width = tf.shape(image)[0] - 2, tf.shape(image)[1] - 2
  blurred = tf.zeros_like(pixels[1:-1, 1:-1])
  for row in range(3):
    for column in range(3):
      window = pixels[row:row + height, column:column + width]
      blurred += window * weights[row, column]
  blurred = tf.cast(tf.clip_by_value(blurred, 0.0, 255.0), tf.uint8)
  border = [[1, 1], [1, 1], [0, 0]]
  interior = tf.pad(tf.ones_like(blurred, tf.bool), border)
  return tf.where(interior, tf.pad(blurred, border), image)


def _enhance(degenerate_fn: Callable[[tf.Tensor], tf.Tensor]):
  return lambda image, factor: _blend(degenerate_fn(image), image, factor)


_AUTO_CONTRAST = keras.layers.AutoContrast(value_range=(0, 255),
                                           dtype='float32')


def _autocontrast(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(_AUTO_CONTRAST(image), tf.uint8)


def _equalize(image: tf.Tensor) -> tf.Tensor:
  """PIL's equalize, on each channel separately."""
  # Offsetting each channel's values by 256 counts all three histograms at
  # once and lets one gather read all three lookup tables.
  pixels = tf.cast(image, tf.int32)
  values = pixels + tf.range(3) * 256
  histograms = tf.reshape(tf.math.bincount(
      tf.reshape(values, [-1]), minlength=768, maxlength=768), [3, 256])
  # PIL spreads all pixels but those of the brightest value over 255 steps.
  brightest = tf.gather(histograms, tf.reduce_max(pixels, axis=[0, 1]),
                        batch_dims=1)
  steps = (tf.reduce_sum(histograms, 1) - brightest) // 255
  luts = ((tf.cumsum(histograms, axis=1) + steps[:, None] // 2)
          // tf.maximum(steps, 1)[:, None])
  luts = tf.clip_by_value(tf.pad(luts[:, :-1], [[0, 0], [1, 0]]), 0, 255)
  equalized = tf.cast(tf.gather(tf.reshape(luts, [-1]), values), tf.uint8)
  return tf.where(steps == 0, image, equalized)


def _shift_bits(image: tf.Tensor, shift: tf.Tensor) -> tf.Tensor:
  shift = tf.cast(shift, tf.uint8)
  return tf.bitwise.left_shift(tf.bitwise.right_shift(image, shift), shift)


def _posterize(image: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
  # The original's shift of 8 - bits became a uint8, so a negative one (more
  # than 8 bits, from level 22.5 up) wrapped past 7; TF clamps any shift past
  # 7 to 7, and so those levels keep 1 bit, as do those below 2.5 (0 bits).
  return _shift_bits(image, tf.minimum((8 - bits) % 256, 7))


def _posterize_clamped(image: tf.Tensor, bits: tf.Tensor) -> tf.Tensor:
  return _shift_bits(image, 8 - tf.clip_by_value(bits, 1, 8))


def _solarize(image: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
  # The original compared with the threshold as a uint8, which wraps.
  return tf.where(image < tf.cast(threshold % 256, tf.uint8), image,
                  255 - image)


def _solarize_clamped(image: tf.Tensor, threshold: tf.Tensor) -> tf.Tensor:
  return tf.where(tf.cast(image, tf.int32) < threshold, image, 255 - image)


def _solarize_add(image: tf.Tensor, addition: tf.Tensor) -> tf.Tensor:
  added = tf.clip_by_value(tf.cast(image, tf.int32) + addition, 0, 255)
  return tf.where(image < 128, tf.cast(added, tf.uint8), image)


def _warp(image: tf.Tensor, matrix: tf.Tensor, replace) -> tf.Tensor:
  """Applies a projective transform, given as the 8 numbers that map an
  output pixel (x, y) to the input pixel it samples, nearest neighbour.

  The original appended a channel of ones, warped with black fill and set
  pixels whose extra channel came back 0 to `replace`; with nearest
  neighbour sampling, filling with `replace` directly gives the same pixels.
  """
  warped = tf.raw_ops.ImageProjectiveTransformV3(
      images=image[None], transforms=tf.reshape(matrix, [1, 8]),
      output_shape=tf.shape(image)[:2],
      fill_value=tf.cast(replace, tf.float32), interpolation='NEAREST',
      fill_mode='CONSTANT')
  return warped[0]


def _rotation(degrees: tf.Tensor, height: tf.Tensor,
              width: tf.Tensor) -> tf.Tensor:
  """Rotation about the image centre (as `tfa.image.rotate` built it)."""
  radians = degrees * (math.pi / 180.0)
  cos, sin = tf.cos(radians), tf.sin(radians)
  x_max, y_max = tf.cast(width - 1, tf.float32), tf.cast(height - 1,
                                                          tf.float32)
  x_offset = (x_max - (cos * x_max - sin * y_max)) / 2.0
  y_offset = (y_max - (sin * x_max + cos * y_max)) / 2.0
  return tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def _affine(a0, a1, a2, b0, b1, b2) -> tf.Tensor:
  return tf.cast(tf.stack([a0, a1, a2, b0, b1, b2, 0.0, 0.0]), tf.float32)


def _shear_x(amount, height, width):
  return _affine(1.0, amount, 0.0, 0.0, 1.0, 0.0)


def _shear_y(amount, height, width):
  return _affine(1.0, 0.0, 0.0, amount, 1.0, 0.0)


# A positive shift samples from further right (down), so the content moves
# left (up), as with the original's `translate(image, [-pixels, 0])`.
def _translate_x(pixels, height, width):
  return _affine(1.0, 0.0, pixels, 0.0, 1.0, 0.0)


def _translate_y(pixels, height, width):
  return _affine(1.0, 0.0, 0.0, 0.0, 1.0, pixels)


def cutout(image: tf.Tensor, pad_size: Union[int, tf.Tensor], replace,
           seed: Seed) -> tf.Tensor:
  """Sets a square of side 2 * `pad_size`, centred on a uniformly random
  pixel and clipped at the borders, to `replace`.

  Works on uint8 and float images; `replace` is a scalar or anything that
  broadcasts to the image, e.g. an image of noise.
  """
  image = tf.convert_to_tensor(image)
  height, width = tf.shape(image)[0], tf.shape(image)[1]
  row_seed, col_seed = split_seed(seed)
  row = tf.random.stateless_uniform([], row_seed, 0, height, tf.int32)
  col = tf.random.stateless_uniform([], col_seed, 0, width, tf.int32)
  rows, cols = tf.range(height), tf.range(width)
  in_rows = (rows >= row - pad_size) & (rows < row + pad_size)
  in_cols = (cols >= col - pad_size) & (cols < col + pad_size)
  inside = in_rows[:, None, None] & in_cols[None, :, None]
  return tf.where(inside, tf.cast(replace, image.dtype), image)


# ------------------------------------------------------------ the registry


@dataclasses.dataclass(frozen=True)
class Op:
  """An image op and how a level becomes its argument.

  `image_fn(image, arg, replace, seed)` returns the new uint8 image, as the
  original computes it; `fixed_fn`, with the same arguments, is what
  `fixes=True` runs instead (None where the two agree).
  `level_to_arg(level, translate_const, cutout_const)` maps a float64 level
  to `arg`; None for ops without one. With `random_sign`, `arg` is negated
  with probability 1/2, as the original does for geometric ops.
  """
  image_fn: Callable[..., tf.Tensor]
  level_to_arg: Optional[Callable[[tf.Tensor, float, float], tf.Tensor]]
  random_sign: bool = False
  fixed_fn: Optional[Callable[..., tf.Tensor]] = None


OPS: Registry = Registry('augmentation op')


def _image_only(fn):
  return lambda image, arg, replace, seed: fn(image)


def _with_arg(fn):
  return lambda image, arg, replace, seed: fn(image, arg)


def _warp_by(matrix):
  """An image_fn warping by `matrix(arg, height, width)`."""
  def warp(image, arg, replace, seed):
    shape = tf.shape(image)
    return _warp(image, matrix(arg, shape[0], shape[1]), replace)
  return warp


def _linear(top: float):
  return lambda level, translate_const, cutout_const: tf.cast(
      level / LEVEL_SCALE * top, tf.float32)


def _truncated(top: float):
  """`int(level / 10 * top)` of the original."""
  return lambda level, translate_const, cutout_const: tf.cast(
      level / LEVEL_SCALE * top, tf.int32)


def _enhance_factor(level, translate_const, cutout_const):
  return tf.cast(level / LEVEL_SCALE * 1.8 + 0.1, tf.float32)


def _translate_pixels(level, translate_const, cutout_const):
  return tf.cast(level / LEVEL_SCALE * translate_const, tf.float32)


def _cutout_pad(level, translate_const, cutout_const):
  return tf.cast(level / LEVEL_SCALE * cutout_const, tf.int32)


for _name, _op in {
    'AutoContrast': Op(_image_only(_autocontrast), None),
    'Equalize': Op(_image_only(_equalize), None),
    'Invert': Op(_image_only(lambda image: 255 - image), None),
    'Rotate': Op(_warp_by(_rotation), _linear(30.0), random_sign=True),
    'Posterize': Op(_with_arg(_posterize), _truncated(4),
                    fixed_fn=_with_arg(_posterize_clamped)),
    'Solarize': Op(_with_arg(_solarize), _truncated(256),
                   fixed_fn=_with_arg(_solarize_clamped)),
    'SolarizeAdd': Op(_with_arg(_solarize_add), _truncated(110)),
    'Color': Op(_with_arg(_enhance(_gray)), _enhance_factor),
    'Contrast': Op(_with_arg(_enhance(_pixel_count_gray)), _enhance_factor,
                   fixed_fn=_with_arg(_enhance(_mean_gray))),
    'Brightness': Op(_with_arg(_enhance(tf.zeros_like)), _enhance_factor),
    'Sharpness': Op(_with_arg(_enhance(_smooth)), _enhance_factor),
    'ShearX': Op(_warp_by(_shear_x), _linear(0.3), random_sign=True),
    'ShearY': Op(_warp_by(_shear_y), _linear(0.3), random_sign=True),
    'TranslateX': Op(_warp_by(_translate_x), _translate_pixels,
                     random_sign=True),
    'TranslateY': Op(_warp_by(_translate_y), _translate_pixels,
                     random_sign=True),
    'Cutout': Op(cutout, _cutout_pad),
}.items():
  OPS.add(_name, _op)


def apply_op(image: tf.Tensor, name: str, magnitude: Magnitude, seed: Seed,
             *,
             translate_const: float = RANDAUGMENT_CONSTS['translate_const'],
             cutout_const: float = RANDAUGMENT_CONSTS['cutout_const'],
             replace=REPLACE, negate: Optional[bool] = None,
             fixes: bool = False) -> tf.Tensor:
  """Applies the op `name` (see `OPS`) at `magnitude` to a uint8 image.

  A Python magnitude must pass `check_magnitude`; a tensor is used as is.
  The geometric ops negate their argument (turn, shear or shift the other
  way) with probability 1/2, drawn from `seed`; `negate` True or False
  fixes that choice, and other ops ignore it. `fixes` picks the corrected
  ops (see the module docstring).

      >>> row = tf.constant([[[10] * 3, [20] * 3, [30] * 3]], tf.uint8)
      >>> for negate in (False, True):  # level 1 of 10 pixels shifts by 1
      ...   shifted = apply_op(row, 'TranslateX', 1, [0, 0], negate=negate,
      ...                      translate_const=10)
      ...   print(shifted[0, :, 0].numpy())
      [ 20  30 128]
      [128  10  20]
  """
  op = OPS.get(name)
  image = tf.convert_to_tensor(image)
  level = as_level(magnitude)
  sign_seed, op_seed = split_seed(seed)
  arg = None
  if op.level_to_arg:
    arg = op.level_to_arg(level, translate_const, cutout_const)
    if op.random_sign:
      flip = coin(sign_seed, 0.5) if negate is None else negate
      arg = tf.where(flip, -arg, arg)
  image_fn = op.fixed_fn if fixes and op.fixed_fn else op.image_fn
  return tf.ensure_shape(image_fn(image, arg, replace, op_seed), image.shape)

