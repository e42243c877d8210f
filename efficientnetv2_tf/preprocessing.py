"""Pixel normalisation: what the model expects of its input.

The models take images in [-1, 1]: `(pixels - 128) / 128` ("symmetric"),
as the original EfficientNetV2 code feeds them. The EfficientNet V1
checkpoints trained with Noisy Student (`weights='jft'`) expect the ImageNet
mean and standard deviation instead ("imagenet").
"""
import keras

from efficientnetv2_tf.blocks import serializable
from hparams.errors import UserError

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
