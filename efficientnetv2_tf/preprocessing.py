"""Image preprocessing: decoding, cropping, augmentation and normalisation.

The models take images in [-1, 1]: `(pixels - 128) / 128` ("symmetric"),
as the original EfficientNetV2 code feeds them. The EfficientNet V1
checkpoints trained with Noisy Student (`weights='jft'`) expect the ImageNet
mean and standard deviation instead ("imagenet").

`preprocess_image` turns one encoded or decoded image into a model input,
following the original's three recipes (see `Pipeline`), with stateless
randomness so that a seed makes it repeatable.
"""
import dataclasses
from typing import Any, Optional, Tuple

import keras
import tensorflow as tf

from efficientnetv2_tf import augment
from efficientnetv2_tf.blocks import serializable
from hparams.errors import UserError
from hparams.registry import Registry

MEAN_RGB = (0.485 * 255, 0.456 * 255, 0.406 * 255)
STDDEV_RGB = (0.229 * 255, 0.224 * 255, 0.225 * 255)
NORMALIZATIONS = {
    'symmetric': ((128.0,) * 3, (128.0,) * 3),
    'imagenet': (MEAN_RGB, STDDEV_RGB),
}


@serializable
class Normalize(keras.layers.Layer):
  """Maps 0-255 pixels to the model's input range: `(x - mean) / stddev`."""

  def __init__(self, mode: str = 'symmetric', **kwargs):
    super().__init__(**kwargs)
    if mode not in NORMALIZATIONS:
      raise UserError(f'unknown preprocessing mode {mode!r}; allowed: '
                      f'{", ".join(NORMALIZATIONS)}')
    self.mode = mode
    self.mean, self.stddev = NORMALIZATIONS[mode]

  def call(self, images):
    images = keras.ops.cast(images, self.compute_dtype)
    return (images - self.mean) / self.stddev

  def get_config(self):
    return {**super().get_config(), 'mode': self.mode}


# Images below this size are centre-cropped for evaluation; larger ones are
# resized whole, as in the original.
CENTRE_CROP_BELOW = 320
CROP_PADDING = 32


@dataclasses.dataclass(frozen=True)
class Pipeline:
  """One preprocessing recipe: how to crop, resize, augment and normalise.

  `path` is 'default' (EfficientNetV2), 'ft' (fine-tuning: resize without
  cropping, mean/std 0.5) or 'effnetv1' (ImageNet mean/std, bicubic resize);
  `policy` is None or an `augment.POLICIES` name; `cutout` applies to 'ft'.
  """
  path: str
  policy: Optional[str] = None
  cutout: bool = False


AUGMENTATIONS: Registry = Registry('augmentation')
for _policy in (None, 'randaug', 'autoaug', 'ra_aa'):
  AUGMENTATIONS.add(_policy or 'none', Pipeline('default', _policy))
  AUGMENTATIONS.add(f'effnetv1_{_policy}' if _policy else 'effnetv1',
                    Pipeline('effnetv1', _policy))
  if _policy:
    AUGMENTATIONS.add(f'ft_{_policy}', Pipeline('ft', _policy))
    AUGMENTATIONS.add(f'ft_{_policy}_cutout', Pipeline('ft', _policy, True))
# As in the original, plain 'ft' means fine-tuning with cutout only;
# 'ft_none' resizes and flips only, for images too small for the
# original's cutout and translations, which are sized for 224 px.
AUGMENTATIONS.add('ft', Pipeline('ft', None, True))
AUGMENTATIONS.add('ft_none', Pipeline('ft', None, False))


@dataclasses.dataclass(frozen=True)
class Augmentation:
  """What to do to training images: the `data.*` settings, checked.

  `augname` names a `Pipeline` (see `AUGMENTATIONS`); `magnitude` is the
  RandAugment magnitude (`data.ram`); the mix alphas act on whole batches;
  `flip` allows random horizontal flips (not for digits).
  Progressive learning changes `magnitude` and the alphas per stage with
  `dataclasses.replace`.
  """
  augname: str = 'randaug'
  num_layers: int = 2
  magnitude: float = 15.0
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  flip: bool = True

  def __post_init__(self):
    AUGMENTATIONS.get(self.augname or 'none')
    try:
      augment.check_magnitude(self.magnitude)
    except UserError as e:
      raise UserError(f'data.ram: {e}') from None
    if not isinstance(self.num_layers, int) or self.num_layers < 0:
      raise UserError(f'data.ra_num_layers must be an integer >= 0; '
                      f'received: {self.num_layers!r}')
    for key, alpha in (('mixup_alpha', self.mixup_alpha),
                       ('cutmix_alpha', self.cutmix_alpha)):
      if not isinstance(alpha, (int, float)) or alpha < 0:
        raise UserError(f'data.{key} must be a number >= 0 (0 disables it); '
                        f'received: {alpha!r}')

  @property
  def pipeline(self) -> Pipeline:
    return AUGMENTATIONS.get(self.augname or 'none')

  @classmethod
  def from_config(cls, data_cfg: Any) -> 'Augmentation':
    """From the `data` section of a run config."""
    return cls(data_cfg.augname, data_cfg.ra_num_layers, data_cfg.ram,
               data_cfg.mixup_alpha, data_cfg.cutmix_alpha, data_cfg.flip)


def decode_rgb(image: tf.Tensor) -> tf.Tensor:
  """Encoded bytes (JPEG, PNG, BMP, GIF) or a uint8 array -> uint8 [H, W, 3].

  Grayscale is repeated over three channels; an alpha channel is dropped,
  as PIL's `convert('RGB')` does. A GIF gives its first frame.
  """
  if image.dtype == tf.string:
    image = tf.io.decode_image(image, channels=3, expand_animations=False)
    image.set_shape([None, None, 3])
    return image
  image = tf.convert_to_tensor(image)
  if image.shape.rank == 2:
    image = image[..., None]
  channels = image.shape[-1]
  if channels == 1:
    image = tf.image.grayscale_to_rgb(image)
  elif channels == 2:  # grayscale with alpha
    image = tf.image.grayscale_to_rgb(image[..., :1])
  elif channels == 4:
    image = image[..., :3]
  elif channels != 3:
    raise UserError(f'images must have 1 to 4 channels; received shape '
                    f'{image.shape}')
  return tf.cast(image, tf.uint8)


def _random_crop(image: tf.Tensor, seed: tf.Tensor, area_range: Tuple[float,
                 float], min_object_covered: float,
                 max_attempts: int) -> Tuple[tf.Tensor, tf.Tensor]:
  """An inception-style crop; also says whether the whole image came back."""
  shape = tf.shape(image)
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.zeros([0, 0, 4], tf.float32), seed=seed,
      min_object_covered=min_object_covered,
      aspect_ratio_range=(3 / 4, 4 / 3), area_range=area_range,
      max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
  whole = tf.reduce_all(tf.equal(size[:2], shape[:2]))
  return tf.slice(image, begin, size), whole


def _centre_crop(image: tf.Tensor, image_size: int,
                 round_up: bool = False) -> tf.Tensor:
  """The central square that `image_size / (image_size + 32)` of the short
  side spans."""
  shape = tf.shape(image)
  height, width = shape[0], shape[1]
  ratio = image_size / (image_size + CROP_PADDING)
  side = tf.cast(ratio * tf.cast(tf.minimum(height, width), tf.float32),
                 tf.int32)
  side = tf.maximum(side, 1)
  extra = 1 if round_up else 0
  return tf.image.crop_to_bounding_box(image, (height - side + extra) // 2,
                                       (width - side + extra) // 2, side, side)


def _resize(image: tf.Tensor, image_size: int, method: str) -> tf.Tensor:
  image = tf.image.resize(image, [image_size, image_size], method=method)
  image.set_shape([image_size, image_size, 3])
  return image


def _flip(image: tf.Tensor, augmentation: Augmentation,
          seed: tf.Tensor) -> tf.Tensor:
  if not augmentation.flip:
    return image
  return tf.image.stateless_random_flip_left_right(image, seed)


def _distort(image: tf.Tensor, policy: Optional[str], augmentation:
             Augmentation, seed: tf.Tensor) -> tf.Tensor:
  """Applies an augmentation policy to 0-255 float pixels."""
  if not policy:
    return image
  pixels = tf.cast(tf.clip_by_value(image, 0.0, 255.0), tf.uint8)
  pixels = augment.distort(pixels, policy, augmentation.num_layers,
                           augmentation.magnitude, seed)
  return tf.cast(pixels, tf.float32)


def _default(image, image_size, training, augmentation, seeds):
  if training:
    image, _ = _random_crop(image, seeds[0], (0.05, 1.0), 0.0, 100)
    image = _resize(image, image_size, 'bilinear')
    image = _flip(image, augmentation, seeds[1])
    image = _distort(image, augmentation.pipeline.policy, augmentation,
                     seeds[2])
  else:
    if image_size < CENTRE_CROP_BELOW:
      image = _centre_crop(image, image_size)
    image = _resize(image, image_size, 'bilinear')
  return (image - 128.0) / 128.0


def _finetune(image, image_size, training, augmentation, seeds):
  image = _resize(tf.cast(image, tf.float32), image_size, 'bilinear')
  if training:
    image = _flip(image, augmentation, seeds[0])
    image = _distort(image, augmentation.pipeline.policy, augmentation,
                     seeds[1])
  image = (image / 255.0 - 0.5) / 0.5
  if training and augmentation.pipeline.cutout:
    noise = tf.random.stateless_uniform(tf.shape(image), seeds[3])
    image = augment.cutout(image, image_size // 4, noise, seeds[2])
  return image


def _effnetv1(image, image_size, training, augmentation, seeds):
  if training:
    cropped, whole = _random_crop(image, seeds[0], (0.08, 1.0), 0.1, 10)
    # When no crop satisfies the constraints, fall back to the eval crop.
    image = tf.cond(whole, lambda: _centre_crop(image, image_size, True),
                    lambda: cropped)
    image = _resize(image, image_size, 'bicubic')
    image = _flip(image, augmentation, seeds[1])
    image = _distort(image, augmentation.pipeline.policy, augmentation,
                     seeds[2])
  else:
    image = _resize(_centre_crop(image, image_size, True), image_size,
                    'bicubic')
  return (image - MEAN_RGB) / STDDEV_RGB


_PATHS = {'default': _default, 'ft': _finetune, 'effnetv1': _effnetv1}


def preprocess_image(image: tf.Tensor,
                     image_size: int,
                     training: bool,
                     augmentation: Augmentation = Augmentation(),
                     seed: Optional[tf.Tensor] = None,
                     dtype: tf.DType = tf.float32) -> tf.Tensor:
  """Encoded bytes or uint8 pixels -> a normalised [size, size, 3] image.

  Training crops at random (inception-style, 5-100% of the area), resizes,
  flips and augments; evaluation centre-crops by `size / (size + 32)` below
  320 px and resizes. The result is in about [-1, 1] (ImageNet mean/std for
  the 'effnetv1' pipelines). `seed` (shape [2]) makes training
  preprocessing repeatable; without it one is drawn at random.

      >>> image = tf.zeros([40, 60, 1], tf.uint8)  # grayscale
      >>> preprocess_image(image, 32, training=False).shape
      TensorShape([32, 32, 3])
  """
  if seed is None:
    seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
  seeds = tf.random.experimental.stateless_split(seed, 4)
  image = tf.cast(decode_rgb(image), tf.float32)
  path = _PATHS[augmentation.pipeline.path]
  return tf.cast(path(image, image_size, training, augmentation, seeds), dtype)
