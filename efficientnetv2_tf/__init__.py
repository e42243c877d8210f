"""EfficientNet V1 and V2 in Keras 3 / TensorFlow 2.

    >>> import efficientnetv2_tf
    >>> model = efficientnetv2_tf.get_model(
    ...     'efficientnetv2-b0', 'num_classes=10,width_coefficient=0.25')
    >>> images = keras.random.uniform((2, 64, 64, 3), -1, 1)  # in [-1, 1]
    >>> tuple(model(images, training=False).shape)
    (2, 10)
"""
from typing import Any, Mapping, Optional, Union

import keras

import hparams
from efficientnetv2_tf import checkpoints
from efficientnetv2_tf.blockargs import BlockArgs
from efficientnetv2_tf.blockargs import decode as decode_block
from efficientnetv2_tf.blockargs import encode as encode_block
from efficientnetv2_tf.model import EfficientNet
from efficientnetv2_tf.preprocessing import Normalize
from hparams.errors import UserError


def load_weights(model: keras.Model, weights: str,
                 model_name: Optional[str] = None) -> None:
  """Loads named weights ('imagenet', ...) or a checkpoint path into `model`.

  `model_name` is the variant whose official weights to use; it defaults to
  the model's name, which `get_model` sets to the variant's.
  """
  model_name = model_name or model.name
  checkpoints.load_weights(model, checkpoints.locate(weights, model_name),
                           model_name)


def list_models():
  """The names `get_model` accepts."""
  return hparams.list_models()


def get_model(model_name: str,
              model_config: Union[None, str, Mapping[str, Any]] = None,
              include_top: bool = True,
              weights: Optional[str] = None,
              training: bool = True,
              with_endpoints: bool = False,
              **kwargs) -> EfficientNet:
  """Builds a named EfficientNet and optionally loads weights into it.

  Args:
    model_name: one of `list_models()`, e.g. 'efficientnetv2-s'.
    model_config: overrides of the model section, as a dict or a
      'key=value,...' string, e.g. 'num_classes=10,dropout_rate=0.3'.
    include_top: whether to end in the classifier; if false the model
      returns pooled features.
    weights: None (random), 'imagenet', 'imagenet21k', 'imagenet21k-ft1k',
      'jft' (V1 only), or a path: an official TF1 checkpoint (prefix or
      directory), one of our TF2 checkpoints, or a `.weights.h5` file. Named
      weights are downloaded once into `$EFFICIENTNETV2_TF_CACHE` (default
      `~/.keras/efficientnetv2_tf`). Where a checkpoint holds EMA values
      (official ones, and those of a training run), those are loaded. The classifier takes the checkpoint's number of classes (21,843
      for 'imagenet21k') unless `num_classes` is given; a `num_classes` that
      differs from the checkpoint's leaves the classifier freshly initialised.
      'jft' checkpoints expect ImageNet mean/std inputs: use them with
      `include_preprocessing=True`.
    training: if false, the model's variables are frozen (`trainable=False`).
    with_endpoints: also output the feature maps `reduction_1..5`.
    **kwargs: further `EfficientNet` arguments, e.g.
      `include_preprocessing=True` to feed 0-255 pixels.

  Returns:
    An `EfficientNet` taking images in [-1, 1] and returning logits.
  """
  overrides = hparams.as_mapping(model_config)
  model_cfg = hparams.get_config(model_name, None, {'model': overrides}).model
  model_name = model_cfg.model_name  # the canonical spelling
  checkpoint = checkpoints.locate(weights, model_name) if weights else None
  if checkpoint and checkpoint.head_classes and include_top and \
      model_cfg.num_classes is None:
    model_cfg.num_classes = checkpoint.head_classes
  if weights == 'jft':
    kwargs.setdefault('preprocessing_mode', 'imagenet')

  model = EfficientNet.from_model_config(
      model_cfg, include_top=include_top, with_endpoints=with_endpoints,
      **kwargs)
  if checkpoint:
    checkpoints.load_weights(model, checkpoint, model_name)
  model.trainable = training
  return model


__all__ = [
    'BlockArgs', 'EfficientNet', 'Normalize', 'UserError', 'checkpoints',
    'decode_block', 'encode_block', 'get_model', 'list_models',
    'load_weights',
]
