"""The steps of `Dataset.pipeline` that need nothing of the dataset:
seeds, sharding, decoding, mixing and the tuning of the batches."""
import dataclasses
from typing import Callable, Optional, Tuple

import tensorflow as tf

from efficientnetv2_tf.augment import mix_batch
from efficientnetv2_tf.distribute import check_batch_size
from efficientnetv2_tf.preprocessing import Augmentation
from efficientnetv2_tf.preprocessing import decode_rgb
from hparams.errors import UserError


@dataclasses.dataclass(frozen=True)
class Seeds:
  """The seeds of input pipeline `index` of a run seeded with `base`."""
  base: int
  index: int

  @property
  def shuffle(self) -> int:
    return self.base + self.index

  def element(self, position: tf.Tensor, stream: int = 0) -> tf.Tensor:
    """A stateless seed for the element or batch at `position`; each random
    step (augmenting, mixing) draws from its own `stream`."""
    # A prime stride keeps the pipelines' seeds apart.
    return tf.stack([tf.cast(self.base + self.index * 7919 + stream,
                             tf.int64), position])


def shard_of(input_context: Optional[tf.distribute.InputContext],
             batch_size: int) -> Tuple[int, int, int]:
  """(number of input pipelines, this one's index, its batch size)."""
  if not input_context:
    return 1, 0, batch_size
  return (input_context.num_input_pipelines, input_context.input_pipeline_id,
          check_batch_size(batch_size, input_context.num_replicas_in_sync))


def decode(examples: tf.data.Dataset, deterministic: bool,
           skip_errors: bool,
           preprocess: Optional[Callable[[tf.Tensor, tf.Tensor], tf.Tensor]]
           ) -> tf.data.Dataset:
  """(position, RGB image, label) for each (image, label) example, or with
  `preprocess(position, image)`, (position, its output, label)."""
  dtype = examples.element_spec[0].dtype  # uint8 would floor [0, 1] to 0
  if dtype.is_floating:
    raise UserError(f'images must be encoded or uint8 pixels 0-255; '
                    f'received: {dtype.name}')

  def decode(position, example):
    image, label = example
    if preprocess:
      return position, preprocess(position, image), label
    return position, decode_rgb(image), label

  decoded = examples.enumerate().map(
      decode, num_parallel_calls=tf.data.AUTOTUNE,
      deterministic=deterministic)
  if skip_errors:
    # Sources check their files when they list them; this drops what such
    # checks cannot see, such as damage inside a file. Only decoding (with
    # `preprocess`, when given) is covered, so that errors in later steps
    # still surface.
    decoded = decoded.ignore_errors(log_warning=True)
  return decoded


def mix(batches: tf.data.Dataset, augmentation: Augmentation,
        seeds: Seeds) -> tf.data.Dataset:
  """Batches mixed by the recipe's mixup and CutMix."""

  def mix(position, batch):
    return mix_batch(batch[0], batch[1], augmentation.mixup_alpha,
                     augmentation.cutmix_alpha, seeds.element(position, 1),
                     fixes=augmentation.fixes)

  return batches.enumerate().map(mix, num_parallel_calls=tf.data.AUTOTUNE)


def tuned(batches: tf.data.Dataset, deterministic: bool) -> tf.data.Dataset:
  """The batches with the pipeline's options, prefetched."""
  options = tf.data.Options()
  options.deterministic = deterministic
  options.experimental_optimization.map_parallelization = True
  return batches.with_options(options).prefetch(tf.data.AUTOTUNE)
