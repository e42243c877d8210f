"""Image augmentation: RandAugment, AutoAugment, cutout, mixup and cutmix.

The public entry point for the original EfficientNetV2 code's
augmentations (its `autoaugment.py`, and mixup/cutmix from `datasets.py`):
the policies that pick among the per-image ops of `image_ops`, and batch
mixing. `OPS`, `apply_op`, `cutout` and `check_magnitude` are importable
from here too. A policy takes one uint8 [H, W, 3] image, mixing a batch;
randomness is stateless, from a `seed` of shape [2], as in `image_ops`.

    >>> image = tf.fill([8, 8, 3], tf.constant(10, tf.uint8))
    >>> distort(image, 'randaug', 2, 15, seed=[1, 2]).shape
    TensorShape([8, 8, 3])

The original's quirk, kept by default: cutmix weights every example's
labels by the mean pasted area of the whole batch (of its half, when mixup
takes the other half), not by the area of the example's own box;
`fixes=True` weights each by its own.

Where this module differs from the original, on purpose: cutmix draws the
boxes of a whole batch at once; the original drew one per example while
decoding. The distribution is the same.

Of Keras 3's preprocessing layers only `AutoContrast` computes what the
original does, and `image_ops` uses it. The others (`RandAugment`,
`MixUp`, `CutMix`, ...) differ in ways that change training, and the random
ones can't follow a per-example stateless seed; `docs/augmentation.md`
lists how.
"""
import functools
from typing import Optional, Sequence, Tuple, Union

import tensorflow as tf

from efficientnetv2_tf.image_ops import apply_op
from efficientnetv2_tf.image_ops import as_level
from efficientnetv2_tf.image_ops import AUTOAUGMENT_CONSTS
from efficientnetv2_tf.image_ops import check_magnitude
from efficientnetv2_tf.image_ops import coin
from efficientnetv2_tf.image_ops import cutout
from efficientnetv2_tf.image_ops import Magnitude
from efficientnetv2_tf.image_ops import OPS
from efficientnetv2_tf.image_ops import RANDAUGMENT_CONSTS
from efficientnetv2_tf.image_ops import Seed
from efficientnetv2_tf.image_ops import split_seed
from hparams.registry import Registry

__all__ = [
    'OPS', 'POLICIES', 'apply_op', 'autoaugment', 'check_magnitude',
    'cutmix', 'cutmix_masks', 'cutmix_with_masks', 'cutout', 'distort',
    'mix_batch', 'mixup', 'randaugment',
]


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
  level = as_level(magnitude)
  for layer in range(num_layers):
    choice_seed, op_seed = split_seed(
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
  choice_seed, ops_seed = split_seed(seed)
  choice = tf.random.stateless_uniform([], choice_seed, 0, len(table),
                                       tf.int32)
  for step in range(len(table[0])):
    coin_seed, op_seed = split_seed(
        tf.random.experimental.stateless_fold_in(ops_seed, step))
    index = tf.where(coin(coin_seed, probs[choice, step]),
                     op_indices[choice, step], len(names))
    image = _one_of_ops(image, index, levels[choice, step], op_seed,
                        AUTOAUGMENT_CONSTS, fixes)
  return image


def _randaugment_or_autoaugment(image: tf.Tensor, num_layers: int,
                                magnitude: Magnitude, seed: Seed, *,
                                fixes: bool = False) -> tf.Tensor:
  level = as_level(magnitude)
  choice_seed, policy_seed = split_seed(seed)
  return tf.cond(coin(choice_seed, 0.5),
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
  the corrected ops (see `image_ops`).
  """
  return POLICIES.get(policy)(image, num_layers, magnitude, seed,
                              fixes=fixes)


# ------------------------------------------------------------ batch mixing


def _beta(shape, alpha: float, seed: Seed) -> tf.Tensor:
  """Beta(alpha, alpha) samples, as X / (X + Y) of two Gamma(alpha)."""
  x_seed, y_seed = split_seed(seed)
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
  beta_seed, row_seed, col_seed = split_seed(seed, 3)
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
    mixup_seed, cutmix_seed = split_seed(seed)
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
