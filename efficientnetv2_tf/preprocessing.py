"""Image preprocessing: decoding, cropping, augmentation and normalisation.

A model's inputs follow an `InputContract` (`hparams.weights`): a
normalisation, a resize method and a crop rule. Training follows one of
the original's three recipes (see `Pipeline`): 'default' (EfficientNetV2:
`(x - 128) / 128`), 'effnetv1' (ImageNet mean/std, TF1 bicubic) and 'ft'
(fine-tuning: the whole image, `(x / 255 - 0.5) / 0.5`). Evaluation uses
the contract of the recipe a run trained with (`Augmentation.contract`)
or of the published weights served (`hparams.published_weights`).

`preprocess_image` turns one encoded or decoded image into a model input,
with stateless randomness so that a seed makes it repeatable.
"""
import dataclasses
from typing import Optional, Tuple

import keras
import numpy as np
import tensorflow as tf

from efficientnetv2_tf import augment
from efficientnetv2_tf.blocks import serializable
from hparams.errors import UserError
from hparams.registry import Registry
from hparams.specs import Specs
from hparams.weights import CENTRE_CROP_BELOW
from hparams.weights import check_normalization
from hparams.weights import CROP_PADDING
from hparams.weights import InputContract
from hparams.weights import named_weights
from hparams.weights import NORMALIZATIONS
from hparams.weights import recipe_contract

# The image files that datasets and predict read (case-insensitive).
IMAGE_EXTENSIONS = ('.jpg', '.jpeg', '.png', '.bmp', '.gif')


@serializable
class Normalize(keras.layers.Layer):
  """Maps 0-255 pixels to the model's input range: `(x - mean) / stddev`.

  `mode` names one of `hparams.weights.NORMALIZATIONS`; None is the
  default, 'symmetric'.
  """

  def __init__(self, mode: Optional[str] = 'symmetric', **kwargs):
    super().__init__(**kwargs)
    check_normalization(mode, 'preprocessing mode')
    self.mode = mode or 'symmetric'
    self.mean, self.stddev = NORMALIZATIONS[self.mode]

  def call(self, images):
    # In float32, then to the compute dtype: in bfloat16 the ImageNet means
    # would round (123.675 to 123.5) before the subtraction.
    images = keras.ops.cast(images, 'float32')
    return keras.ops.cast((images - self.mean) / self.stddev,
                          self.compute_dtype)

  def get_config(self):
    return {**super().get_config(), 'mode': self.mode}


def normalize(image: tf.Tensor, mode: str) -> tf.Tensor:
  mean, stddev = NORMALIZATIONS[mode]
  return (image - mean) / stddev


def unit_scale_offset(mode: str) -> Tuple[np.ndarray, np.ndarray]:
  """`normalize` of [0, 1] pixels as `x * scale + offset`: two passes over
  the images instead of three. Scalars when every channel has the same
  mean and stddev, since broadcasting over a last axis of 3 is slow (ONNX
  Runtime). The same as `normalize(255 * x, mode)` to float32 rounding.
  """
  mean, stddev = (np.asarray(v, np.float64) for v in NORMALIZATIONS[mode])
  scale, offset = 255.0 / stddev, -mean / stddev
  if len(set(mean)) == 1 and len(set(stddev)) == 1:
    scale, offset = scale[:1].reshape(()), offset[:1].reshape(())
  return scale.astype(np.float32), offset.astype(np.float32)


@dataclasses.dataclass(frozen=True)
class Pipeline:
  """One preprocessing recipe: how to crop, resize, augment and normalise.

  `path` is 'default' (EfficientNetV2), 'ft' (fine-tuning: resize without
  cropping, mean/std 0.5) or 'effnetv1' (ImageNet mean/std, TF1 bicubic);
  `hparams.weights.RECIPE_CONTRACTS` says how each evaluates;
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
  `flip` allows random horizontal flips (not for digits); `fixes` picks
  the corrected augmentation ops over the original's (`data.augment_fixes`,
  see `augment`); `normalization`, if set, replaces the recipe's.
  Progressive learning changes `magnitude` and the alphas per stage with
  `dataclasses.replace`.
  """
  augname: str = 'randaug'
  num_layers: int = 2
  magnitude: float = 15.0
  mixup_alpha: float = 0.0
  cutmix_alpha: float = 0.0
  flip: bool = True
  fixes: bool = False
  normalization: Optional[str] = None

  def __post_init__(self):
    AUGMENTATIONS.get(self.augname or 'none')
    check_normalization(self.normalization, 'data.normalization')
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

  @property
  def reads_bytes(self) -> bool:
    """Whether images should come encoded: V1 decoded a JPEG's crop."""
    return self.pipeline.path == 'effnetv1'

  def contract(self, image_size: int) -> InputContract:
    """How this recipe evaluates: crop, resize and normalisation."""
    return recipe_contract(self.pipeline.path, image_size, self.normalization)

  @classmethod
  def from_specs(cls, specs: Specs) -> 'Augmentation':
    """The recipe of a run. Unless `data.normalization` says otherwise, a
    run fine-tuning from published weights normalises as they expect."""
    data = specs.data
    normalization = data.normalization
    try:
      entry = named_weights(specs.model.name, specs.optim.init_checkpoint)
    except UserError:  # refused where the checkpoint is loaded
      entry = None
    if normalization is None and entry is not None:
      normalization = entry.contract.normalization
    return cls(data.augmentation, data.randaug_layers,
               data.randaug_magnitude, data.mixup_alpha, data.cutmix_alpha,
               data.flip, data.augment_fixes, normalization)


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


# The aspect ratios (width / height) a random crop may have: V1 asked for
# 3/4 to 4/3; V2 left TF's default, which stops at 1.33.
_V1_ASPECT_RATIOS = (3 / 4, 4 / 3)
_V2_ASPECT_RATIOS = (0.75, 1.33)


def _crop_window(shape: tf.Tensor, seed: tf.Tensor,
                 area_range: Tuple[float, float],
                 aspect_ratio_range: Tuple[float, float],
                 min_object_covered: float, max_attempts: int
                 ) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """An inception-style crop window of an image of `shape` [h, w, c]:
  (begin, size, whether it is the whole image)."""
  begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
      shape, tf.zeros([0, 0, 4], tf.float32), seed=seed,
      min_object_covered=min_object_covered,
      aspect_ratio_range=aspect_ratio_range, area_range=area_range,
      max_attempts=max_attempts, use_image_if_no_bounding_boxes=True)
  return begin, size, tf.reduce_all(tf.equal(size[:2], shape[:2]))


def _centre_window(height: tf.Tensor, width: tf.Tensor, image_size: int,
                   round_up: bool) -> Tuple[tf.Tensor, tf.Tensor, tf.Tensor]:
  """(top, left, side) of the central square that `image_size /
  (image_size + 32)` of the short side spans; V1 rounds the offsets up
  (`round_up`), V2 down."""
  ratio = image_size / (image_size + CROP_PADDING)
  side = tf.cast(ratio * tf.cast(tf.minimum(height, width), tf.float32),
                 tf.int32)
  side = tf.maximum(side, 1)
  extra = 1 if round_up else 0
  return (height - side + extra) // 2, (width - side + extra) // 2, side


def _centre_crop(image: tf.Tensor, image_size: int,
                 round_up: bool = False) -> tf.Tensor:
  shape = tf.shape(image)
  top, left, side = _centre_window(shape[0], shape[1], image_size, round_up)
  return tf.image.crop_to_bounding_box(image, top, left, side, side)


def _decode_centre_crop(image: tf.Tensor, image_size: int) -> tf.Tensor:
  """V1's evaluation crop of encoded bytes. A JPEG is decoded with the crop
  window, as V1 did: libjpeg then upsamples colour within the window, which
  gives other pixels near its edges than decoding whole and cropping."""
  def jpeg():
    shape = tf.image.extract_jpeg_shape(image)
    top, left, side = _centre_window(shape[0], shape[1], image_size, True)
    return tf.image.decode_and_crop_jpeg(
        image, tf.stack([top, left, side, side]), channels=3)
  return tf.cond(tf.io.is_jpeg(image), jpeg,
                 lambda: _centre_crop(decode_rgb(image), image_size, True))


def _resize(image: tf.Tensor, image_size: int, method: str) -> tf.Tensor:
  """Resizes to a square; 'bicubic_tf1' is TF1's `resize_bicubic` (corner
  pixel centres, a = -0.75), which the V1 code used."""
  if method == 'bicubic_tf1':
    image = tf.compat.v1.image.resize_bicubic(
        image[None], [image_size, image_size], align_corners=False,
        half_pixel_centers=False)[0]
  else:
    image = tf.image.resize(image, [image_size, image_size], method=method)
  image.set_shape([image_size, image_size, 3])
  return image


def eval_pixels(image: tf.Tensor, contract: InputContract) -> tf.Tensor:
  """Encoded bytes or pixels -> float32 0-255 pixels [size, size, 3],
  cropped and resized as `contract` says, not yet normalised: what a
  deployed model file takes, divided by 255."""
  size = contract.image_size
  if contract.crop == 'always' and image.dtype == tf.string:
    image = _decode_centre_crop(image, size)
  else:
    image = decode_rgb(image)
    if contract.crop == 'always':
      image = _centre_crop(image, size, round_up=True)
    elif contract.crop == 'below_320' and size < CENTRE_CROP_BELOW:
      image = _centre_crop(image, size)
  return _resize(tf.cast(image, tf.float32), size, contract.resize)


def model_file_pixels(image: tf.Tensor, contract: InputContract
                      ) -> tf.Tensor:
  """`eval_pixels` in [0, 1]: what a deployed model file (model.onnx,
  model.tflite, serving_default) takes."""
  return eval_pixels(image, contract) / 255.0


def eval_image(image: tf.Tensor, contract: InputContract) -> tf.Tensor:
  """Encoded bytes or pixels -> a float32 model input, as `contract` says."""
  return normalize(eval_pixels(image, contract), contract.normalization)


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
                           augmentation.magnitude, seed,
                           fixes=augmentation.fixes)
  return tf.cast(pixels, tf.float32)


def _float_pixels(image: tf.Tensor) -> tf.Tensor:
  return tf.cast(decode_rgb(image), tf.float32)


def _default(image, image_size, augmentation, seeds):
  image = _float_pixels(image)
  begin, size, _ = _crop_window(tf.shape(image), seeds[0], (0.05, 1.0),
                                _V2_ASPECT_RATIOS, 0.0, 100)
  image = _resize(tf.slice(image, begin, size), image_size, 'bilinear')
  image = _flip(image, augmentation, seeds[1])
  return _distort(image, augmentation.pipeline.policy, augmentation, seeds[2])


def _finetune(image, image_size, augmentation, seeds):
  policy = augmentation.pipeline.policy
  # The original resized in [-1, 1] and came back to 0-255 for a policy,
  # which float32 leaves a hair below many integers: the policy's uint8
  # cast takes those a level down.
  round_trip = policy and not augmentation.fixes
  image = _float_pixels(image)
  if round_trip:
    image = (image / 255.0 - 0.5) / 0.5
  image = _flip(_resize(image, image_size, 'bilinear'), augmentation,
                seeds[0])
  if round_trip:
    image = (image * 0.5 + 0.5) * 255.0
  return _distort(image, policy, augmentation, seeds[1])


def _v1_crop(image: tf.Tensor, image_size: int, seed: tf.Tensor) -> tf.Tensor:
  """V1's training crop of encoded bytes or pixels: a window of 8 to 100%
  of the area covering a tenth of the image or, where ten attempts find
  none, the evaluation crop. A JPEG is decoded within the window, as V1
  did (see `_decode_centre_crop`)."""
  def window(shape):
    return _crop_window(shape, seed, (0.08, 1.0), _V1_ASPECT_RATIOS, 0.1, 10)

  def from_pixels(pixels):
    begin, size, whole = window(tf.shape(pixels))
    return tf.cond(whole, lambda: _centre_crop(pixels, image_size, True),
                   lambda: tf.slice(pixels, begin, size))

  def from_jpeg():
    begin, size, whole = window(tf.image.extract_jpeg_shape(image))
    return tf.cond(
        whole, lambda: _decode_centre_crop(image, image_size),
        lambda: tf.image.decode_and_crop_jpeg(
            image, tf.concat([begin[:2], size[:2]], 0), channels=3))

  if image.dtype != tf.string:
    return from_pixels(decode_rgb(image))
  return tf.cond(tf.io.is_jpeg(image), from_jpeg,
                 lambda: from_pixels(decode_rgb(image)))


def _effnetv1(image, image_size, augmentation, seeds):
  image = tf.cast(_v1_crop(image, image_size, seeds[0]), tf.float32)
  image = _resize(image, image_size, 'bicubic_tf1')
  image = _flip(image, augmentation, seeds[1])
  return _distort(image, augmentation.pipeline.policy, augmentation, seeds[2])


_PATHS = {'default': _default, 'ft': _finetune, 'effnetv1': _effnetv1}


def preprocess_image(image: tf.Tensor,
                     image_size: int,
                     training: bool,
                     augmentation: Augmentation = Augmentation(),
                     seed: Optional[tf.Tensor] = None,
                     dtype: tf.DType = tf.float32) -> tf.Tensor:
  """Encoded bytes or uint8 pixels -> a normalised [size, size, 3] image.

  Training crops at random (inception-style), resizes, flips and augments
  as the recipe says; evaluation follows `augmentation.contract(size)`.
  `seed` (shape [2]) makes training preprocessing repeatable; without it
  one is drawn at random.

      >>> image = tf.zeros([40, 60, 1], tf.uint8)  # grayscale
      >>> preprocess_image(image, 32, training=False).shape
      TensorShape([32, 32, 3])
  """
  contract = augmentation.contract(image_size)
  if not training:
    return tf.cast(eval_image(image, contract), dtype)
  if seed is None:
    seed = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int32)
  seeds = tf.random.experimental.stateless_split(seed, 4)
  path = _PATHS[augmentation.pipeline.path]
  image = normalize(path(image, image_size, augmentation, seeds),
                    contract.normalization)
  if augmentation.pipeline.cutout:
    noise = tf.random.stateless_uniform(tf.shape(image), seeds[3])
    image = augment.cutout(image, image_size // 4, noise, seeds[2])
  return tf.cast(image, dtype)
