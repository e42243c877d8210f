"""Image augmentation: RandAugment, AutoAugment, cutout, mixup and cutmix.

The original EfficientNetV2 code's augmentations (its `autoaugment.py`, and
mixup/cutmix from `datasets.py`), rebuilt on TF 2 ops without
`tensorflow_addons`. Image ops take one uint8 [H, W, 3] image and return
one; H and W may be unknown until run time. A magnitude is a level on the
original's scale, where 10 was the top of its search space and larger values
extrapolate (the paper's presets go up to 25).

By default every op computes what the original computes, quirks included
(`tests/fixtures/augment_ops.npz` holds the original's outputs at every
magnitude 0..25). Levels become arguments in float64, as the original's
Python arithmetic did, so truncations such as `int(level / 10 * 110)` agree.

Randomness is stateless: every random function takes `seed`, an integer
tensor of shape [2], and the same seed gives the same result eagerly and
inside `tf.data.Dataset.map`. The random streams differ from the original's
TF1 ones; the distributions are the same.

    >>> image = tf.fill([8, 8, 3], tf.constant(10, tf.uint8))
    >>> apply_op(image, 'Invert', 0, seed=[1, 2])[0, 0].numpy()
    array([245, 245, 245], dtype=uint8)
    >>> distort(image, 'randaug', 2, 15, seed=[1, 2]).shape
    TensorShape([8, 8, 3])

The original's quirks, kept by default:

- Solarize inverts pixels at or above `int(level / 10 * 256)`, a threshold
  the original compared in uint8, so it wraps modulo 256 and a level acts
  as that level minus 10 or 20: Solarize weakens from level 0 (every pixel
  inverted) to 9 (pixels from 230 up), then 10 and 20 invert every pixel
  again, 15 and 25 those from 128 up.
- Posterize keeps `int(level / 10 * 4)` bits by shifting uint8 pixels by
  8 - bits. Below level 2.5 that shift is 8 and from level 22.5 up it is
  negative, which wraps in uint8; TF clamps both to 7, so those levels keep
  1 bit. Level 20 up to 22.5 keeps all 8 (the identity).
- Contrast blends towards a flat grey of (number of pixels) / 256, clipped
  to 255 and truncated: the original summed a histogram of the grey image
  where it meant to average it. The grey depends on the image size alone
  (3 at 24x40, 64 at 128x128, 196 at 224x224, 255 from 256x256 up), so it
  changes between progressive-learning stages.
- cutmix weights every example's labels by the mean pasted area of the
  whole batch (of its half, when mixup takes the other half), not by the
  area of the example's own box.

What `fixes=True` changes (`data.augment_fixes`):

- Solarize: the threshold stops at 256, so levels from 10 up leave the
  image as it is, continuing the weakening below 10.
- Posterize: the bit count stops at 8, so levels from 20 up leave the
  image as it is.
- Contrast blends towards the image's mean grey level, truncated to an
  integer (PIL rounds it).
- cutmix weights each example's labels by the area of its own box.

Where this module differs from the original, on purpose:

- Warps fill uncovered pixels with the grey directly; the original warped
  an extra channel of ones and filled where it came back 0. With
  nearest-neighbour sampling the pixels are the same.
- cutmix draws the boxes of a whole batch at once; the original drew one
  per example while decoding. The distribution is the same.

Keras 3.15 preprocessing layers checked against the original. None of the
random ones can follow our seed: `keras.random` takes only an int or a
`SeedGenerator` (state in a variable), and their strengths are fixed when
the layer is built, while our magnitude may be a tensor.

- `AutoContrast`: the same per-image, per-channel min/max stretch in
  float32, with no randomness. Used for the AutoContrast op; casting its
  output to uint8 truncates as the original does.
- `RandAugment`: 11 ops (no Invert, Cutout or SolarizeAdd), random
  strengths up to a 0..1 `factor` instead of a fixed magnitude, one op
  choice for the whole batch, and every op computed on every image.
- `MixUp`: pairs examples by a random permutation, not the reversed batch,
  and does not take max(w, 1 - w).
- `CutMix`: draws alpha itself from `factor`, keeps the box inside the
  image (the original clips a box around a uniform centre), weights labels
  by the float box area rather than the pixels pasted, and pairs by a
  random permutation.
- `Equalization`: another lookup table, round(255 (cdf - cdf_min) /
  (n - cdf_min)), not PIL's step-based one; one histogram per batch.
- `Solarization`: adds, then inverts above a threshold, both random; the
  original has two ops (Solarize; SolarizeAdd adds only below 128).
- `RandomPosterization`: the same bit shift, with the bit count fixed at
  construction (1..8) or random per image.
- `RandomColorDegeneration`: blends towards an unrounded float grey (the
  original rounds it to uint8) by a random factor, at most PIL's 2.
- `RandomSharpness`: PIL factor up to 2 (ours reach 4.6 at magnitude 25);
  its "same" convolution zero-pads, darkening the border, where the
  original keeps the border pixels.
- `RandomContrast`: scales around each channel's mean, not around one
  grey for all three channels.
- `RandomBrightness`: adds an offset; PIL's Brightness multiplies.
- `RandomShear`: `x_factor=(a, a)` shears by +-a like ShearX, but `a` is
  fixed at construction and the sign comes from the seed generator.
- `RandomRotation`, `RandomTranslation`: the amount comes from a range,
  with no separate random sign; translation is a fraction of the size,
  not pixels.
- `RandomInvert`: `255 - x` at `factor=1`, but it still draws from its
  seed generator; here the op is one line.
- `RandomErasing`: random patch size and aspect ratio, not cutout's square.
"""
import dataclasses
import functools
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


def _level(magnitude: Magnitude) -> tf.Tensor:
  """A float64 level, as the original's Python arithmetic had; tensors
  can't be range-checked while tracing."""
  if tf.is_tensor(magnitude):
    return tf.cast(magnitude, tf.float64)
  return tf.constant(check_magnitude(magnitude), tf.float64)


def _split(seed: Seed, num: int = 2) -> Tuple[tf.Tensor, ...]:
  return tuple(tf.unstack(tf.random.experimental.stateless_split(seed, num)))


def _coin(seed: Seed, prob: float) -> tf.Tensor:
  """True with probability `prob`."""
  return tf.random.stateless_uniform([], seed) < prob


# ---------------------------------------------------------------- image ops


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
  """PIL's SMOOTH filter; the one-pixel border keeps its original values."""
  kernel = tf.constant([[1, 1, 1], [1, 5, 1], [1, 1, 1]], tf.float32) / 13.0
  kernel = tf.tile(kernel[:, :, None, None], [1, 1, 3, 1])
  blurred = tf.nn.depthwise_conv2d(tf.cast(image, tf.float32)[None], kernel,
                                   [1, 1, 1, 1], 'VALID')[0]
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
  row_seed, col_seed = _split(seed)
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
  level = _level(magnitude)
  sign_seed, op_seed = _split(seed)
  arg = None
  if op.level_to_arg:
    arg = op.level_to_arg(level, translate_const, cutout_const)
    if op.random_sign:
      flip = _coin(sign_seed, 0.5) if negate is None else negate
      arg = tf.where(flip, -arg, arg)
  image_fn = op.fixed_fn if fixes and op.fixed_fn else op.image_fn
  return tf.ensure_shape(image_fn(image, arg, replace, op_seed), image.shape)


# ---------------------------------------------------------------- policies


def _one_of_ops(image: tf.Tensor, index: tf.Tensor, level: tf.Tensor,
                seed: tf.Tensor, consts, fixes: bool) -> tf.Tensor:
  """Applies op number `index` of `OPS.names()` at `level`; an index of
  len(OPS.names()) leaves the image as it is."""
  branches = [functools.partial(apply_op, image, name, level, seed,
                                fixes=fixes, **consts)
              for name in OPS.names()]
  return tf.switch_case(index, branches + [lambda: image])


def randaugment(image: tf.Tensor, num_layers: int, magnitude: Magnitude,
                seed: Seed, *, fixes: bool = False) -> tf.Tensor:
  """RandAugment: `num_layers` times, applies one uniformly chosen op.

  As in the original, the chosen op always applies, at `magnitude`.
  """
  image = tf.convert_to_tensor(image)
  level = _level(magnitude)
  for layer in range(num_layers):
    choice_seed, op_seed = _split(
        tf.random.experimental.stateless_fold_in(seed, layer))
    choice = tf.random.stateless_uniform([], choice_seed, 0, len(OPS.names()),
                                         tf.int32)
    image = _one_of_ops(image, choice, level, op_seed, RANDAUGMENT_CONSTS,
                        fixes)
  return image


# AutoAugment's sub-policies: each is two (op, probability, level) steps,
# applied in turn.
_AUTOAUGMENT_TABLES: Registry = Registry('AutoAugment policy')
_AUTOAUGMENT_TABLES.add('v0', (
    (('Equalize', 0.8, 1), ('ShearY', 0.8, 4)),
    (('Color', 0.4, 9), ('Equalize', 0.6, 3)),
    (('Color', 0.4, 1), ('Rotate', 0.6, 8)),
    (('Solarize', 0.8, 3), ('Equalize', 0.4, 7)),
    (('Solarize', 0.4, 2), ('Solarize', 0.6, 2)),
    (('Color', 0.2, 0), ('Equalize', 0.8, 8)),
    (('Equalize', 0.4, 8), ('SolarizeAdd', 0.8, 3)),
    (('ShearX', 0.2, 9), ('Rotate', 0.6, 8)),
    (('Color', 0.6, 1), ('Equalize', 1.0, 2)),
    (('Invert', 0.4, 9), ('Rotate', 0.6, 0)),
    (('Equalize', 1.0, 9), ('ShearY', 0.6, 3)),
    (('Color', 0.4, 7), ('Equalize', 0.6, 0)),
    (('Posterize', 0.4, 6), ('AutoContrast', 0.4, 7)),
    (('Solarize', 0.6, 8), ('Color', 0.6, 9)),
    (('Solarize', 0.2, 4), ('Rotate', 0.8, 9)),
    (('Rotate', 1.0, 7), ('TranslateY', 0.8, 9)),
    (('ShearX', 0.0, 0), ('Solarize', 0.8, 4)),
    (('ShearY', 0.8, 0), ('Color', 0.6, 4)),
    (('Color', 1.0, 0), ('Rotate', 0.6, 2)),
    (('Equalize', 0.8, 4), ('Equalize', 0.0, 8)),
    (('Equalize', 1.0, 4), ('AutoContrast', 0.6, 2)),
    (('ShearY', 0.4, 7), ('SolarizeAdd', 0.6, 7)),
    (('Posterize', 0.8, 2), ('Solarize', 0.6, 10)),
    (('Solarize', 0.6, 8), ('Equalize', 0.6, 1)),
    (('Color', 0.8, 6), ('Rotate', 0.4, 5)),
))
# A single sub-policy, for debugging.
_AUTOAUGMENT_TABLES.add('test', (
    (('TranslateX', 1.0, 4), ('Equalize', 1.0, 10)),
))


def autoaugment(image: tf.Tensor, seed: Seed, policy: str = 'v0', *,
                fixes: bool = False) -> tf.Tensor:
  """AutoAugment: picks one sub-policy of `policy` ('v0', the paper's, or
  'test') uniformly and applies each of its ops with its probability."""
  table = _AUTOAUGMENT_TABLES.get(policy)
  image = tf.convert_to_tensor(image)
  names = OPS.names()
  # Looking the chosen sub-policy's ops up in tensors lets one switch over
  # the 16 ops serve every sub-policy: a much smaller graph than a branch
  # per sub-policy.
  op_indices = tf.constant([[names.index(name.lower()) for name, _, _ in steps]
                            for steps in table])
  probs = tf.constant([[prob for _, prob, _ in steps] for steps in table])
  levels = tf.constant([[level for _, _, level in steps] for steps in table],
                       tf.float64)
  choice_seed, ops_seed = _split(seed)
  choice = tf.random.stateless_uniform([], choice_seed, 0, len(table),
                                       tf.int32)
  for step in range(len(table[0])):
    coin_seed, op_seed = _split(
        tf.random.experimental.stateless_fold_in(ops_seed, step))
    index = tf.where(_coin(coin_seed, probs[choice, step]),
                     op_indices[choice, step], len(names))
    image = _one_of_ops(image, index, levels[choice, step], op_seed,
                        AUTOAUGMENT_CONSTS, fixes)
  return image


def _randaugment_or_autoaugment(image: tf.Tensor, num_layers: int,
                                magnitude: Magnitude, seed: Seed, *,
                                fixes: bool = False) -> tf.Tensor:
  level = _level(magnitude)
  choice_seed, policy_seed = _split(seed)
  return tf.cond(_coin(choice_seed, 0.5),
                 lambda: autoaugment(image, policy_seed, fixes=fixes),
                 lambda: randaugment(image, num_layers, level, policy_seed,
                                     fixes=fixes))


# Each takes (image, num_layers, magnitude, seed, *, fixes).
POLICIES: Registry = Registry('augmentation policy')
POLICIES.add('randaug', randaugment)
POLICIES.add('autoaug', lambda image, num_layers, magnitude, seed, *, fixes:
             autoaugment(image, seed, fixes=fixes))
POLICIES.add('ra_aa', _randaugment_or_autoaugment)


def distort(image: tf.Tensor, policy: str, num_layers: int,
            magnitude: Magnitude, seed: Seed, *,
            fixes: bool = False) -> tf.Tensor:
  """Applies the `POLICIES` entry `policy` to a uint8 image.

  `num_layers` and `magnitude` are RandAugment's; 'autoaug' ignores them and
  'ra_aa' picks RandAugment or AutoAugment with equal chance. `fixes` picks
  the corrected ops (see the module docstring).
  """
  return POLICIES.get(policy)(image, num_layers, magnitude, seed,
                              fixes=fixes)


# ------------------------------------------------------------ batch mixing


def _beta(shape, alpha: float, seed: Seed) -> tf.Tensor:
  """Beta(alpha, alpha) samples, as X / (X + Y) of two Gamma(alpha)."""
  x_seed, y_seed = _split(seed)
  x = tf.random.stateless_gamma(shape, x_seed, alpha)
  y = tf.random.stateless_gamma(shape, y_seed, alpha)
  # TF's gamma samples never go below the smallest normal float32, even
  # for a tiny alpha, so the sum is never 0.
  return x / (x + y)


def _mix_labels(labels: tf.Tensor, own_weight: tf.Tensor) -> tf.Tensor:
  own_weight = tf.cast(own_weight, labels.dtype)[:, None]
  return own_weight * labels + (1 - own_weight) * labels[::-1]


def mixup(images: tf.Tensor, labels: tf.Tensor, alpha: float,
          seed: Seed) -> Tuple[tf.Tensor, tf.Tensor]:
  """Mixup: blends each example with its partner in the reversed batch.

  Each example keeps a weight w ~ Beta(alpha, alpha), taken as
  max(w, 1 - w) so that its own image and label dominate.
  """
  images, labels = tf.convert_to_tensor(images), tf.convert_to_tensor(labels)
  weight = _beta(tf.shape(images)[:1], alpha, seed)
  weight = tf.maximum(weight, 1 - weight)
  image_weight = tf.reshape(tf.cast(weight, images.dtype),
                            [-1] + [1] * (images.shape.rank - 1))
  images = image_weight * images + (1 - image_weight) * images[::-1]
  return images, _mix_labels(labels, weight)


def cutmix_masks(shape: Union[tf.Tensor, Sequence[int]], alpha: float,
                 seed: Seed) -> tf.Tensor:
  """CutMix's boxes for images of `shape` [B, H, W, ...], as a bool mask of
  shape [B, H, W].

  Per example, lam ~ Beta(alpha, alpha); the box has sides sqrt(1 - lam)
  times the image's (truncated, then halved), a uniformly random centre,
  and is clipped at the borders, as the original's `cutmix_mask`.
  """
  shape = tf.convert_to_tensor(shape)
  batch, height, width = shape[0], shape[1], shape[2]
  beta_seed, row_seed, col_seed = _split(seed, 3)
  ratio = tf.sqrt(1.0 - _beta([batch], alpha, beta_seed))

  def inside(length, centre_seed):
    """Whether each position along one axis is in each box: [B, length]."""
    centre = tf.random.stateless_uniform([batch], centre_seed, 0, length,
                                         tf.int32)
    half = tf.cast(ratio * tf.cast(length, tf.float32), tf.int32) // 2
    start = tf.clip_by_value(centre - half, 0, length)[:, None]
    end = tf.clip_by_value(centre + half, 0, length)[:, None]
    positions = tf.range(length)[None]
    return (positions >= start) & (positions < end)

  return (inside(height, row_seed)[:, :, None]
          & inside(width, col_seed)[:, None, :])


def cutmix_with_masks(images: tf.Tensor, labels: tf.Tensor, masks: tf.Tensor,
                      *, fixes: bool = False) -> Tuple[tf.Tensor, tf.Tensor]:
  """Pastes the reversed batch's images into each example where `masks`
  [B, H, W] is True, and mixes the labels by the area pasted.

  As in the original, every example's labels take the mean pasted area of
  the whole batch; with `fixes`, each takes its own.
  """
  images, labels = tf.convert_to_tensor(images), tf.convert_to_tensor(labels)
  masks = tf.cast(masks, tf.bool)
  area = tf.reduce_mean(tf.cast(masks, tf.float32), axis=[1, 2])
  if not fixes:
    area = tf.fill(tf.shape(area), tf.reduce_mean(area))
  images = tf.where(masks[..., None], images[::-1], images)
  return images, _mix_labels(labels, 1 - area)


def cutmix(images: tf.Tensor, labels: tf.Tensor, alpha: float, seed: Seed,
           *, fixes: bool = False) -> Tuple[tf.Tensor, tf.Tensor]:
  """CutMix: pastes a box of the reversed batch's image into each example
  (boxes from `cutmix_masks`, mixing by `cutmix_with_masks`)."""
  masks = cutmix_masks(tf.shape(images), alpha, seed)
  return cutmix_with_masks(images, labels, masks, fixes=fixes)


def mix_batch(images: tf.Tensor, labels: tf.Tensor,
              mixup_alpha: Optional[float], cutmix_alpha: Optional[float],
              seed: Seed, *,
              fixes: bool = False) -> Tuple[tf.Tensor, tf.Tensor]:
  """Mixup, cutmix, or both on halves of the batch, as the alphas ask.

  A zero or None alpha disables that method. With both, the first half of
  the batch gets mixup and the second half cutmix, each mixed within its
  own half, as in the original. `fixes` picks cutmix's per-example label
  weights (see `cutmix_with_masks`).
  """
  if mixup_alpha and cutmix_alpha:
    half = tf.shape(images)[0] // 2
    mixup_seed, cutmix_seed = _split(seed)
    first = mixup(images[:half], labels[:half], mixup_alpha, mixup_seed)
    second = cutmix(images[half:], labels[half:], cutmix_alpha, cutmix_seed,
                    fixes=fixes)
    return (tf.concat([first[0], second[0]], 0),
            tf.concat([first[1], second[1]], 0))
  if mixup_alpha:
    return mixup(images, labels, mixup_alpha, seed)
  if cutmix_alpha:
    return cutmix(images, labels, cutmix_alpha, seed, fixes=fixes)
  return images, labels
