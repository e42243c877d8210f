"""EfficientNet V1 and V2 in Keras 3 / TensorFlow 2.

    >>> import efficientnetv2_tf
    >>> model = efficientnetv2_tf.get_model(
    ...     'efficientnetv2-b0', 'num_classes=10,width_coefficient=0.25')
    >>> images = keras.random.uniform((2, 64, 64, 3), -1, 1)  # in [-1, 1]
    >>> tuple(model(images, training=False).shape)
    (2, 10)
"""
from typing import Any, List, Mapping, Optional, Union

from absl import logging

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


def list_models(pretrained: bool = False) -> List[str]:
  """The names `get_model` accepts; with `pretrained`, every published
  checkpoint as 'model.tag' (e.g. 'efficientnetv2-s.imagenet21k-ft1k')."""
  return hparams.list_published() if pretrained else hparams.list_models()


def weights_info(model_name: str, tag: str) -> hparams.PublishedWeights:
  """What is known of published weights: URL, classes, input contract,
  training recipe and published top-1.

      >>> info = weights_info('efficientnetv2-s', 'imagenet')
      >>> info.contract.image_size, info.top1
      (384, 83.9)
  """
  canonical = hparams.get_config(model_name).model.model_name
  return hparams.published_weights(canonical, tag)


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
    weights: None (random), a published tag ('imagenet', 'imagenet21k',
      'imagenet21k-ft1k'; 'jft', 'jft-475' for V1: see
      `list_models(pretrained=True)` and `weights_info`), or a path: an
      official TF1 checkpoint (prefix or directory), one of our TF2 checkpoints, or a `.weights.h5` file. Named
      weights are downloaded once into `$EFFICIENTNETV2_TF_CACHE` (default
      `~/.keras/efficientnetv2_tf`). Where a checkpoint holds EMA values
      (official ones, and those of a training run), those are loaded. The classifier takes the checkpoint's number of classes (21,843
      for 'imagenet21k') unless `num_classes` is given; a `num_classes` that
      differs from the checkpoint's leaves the classifier freshly initialised.
      Published weights each have their own input contract
      (`weights_info(...).contract`): with `include_preprocessing=True` the
      model normalises as they expect.
    training: if false, the model's variables are frozen (`trainable=False`).
    with_endpoints: also output the feature maps `reduction_1..5`.
    **kwargs: further `EfficientNet` arguments, e.g.
      `include_preprocessing=True` to feed 0-255 pixels.

  Returns:
    An `EfficientNet` returning logits; it takes normalised images, or
    0-255 pixels with `include_preprocessing=True`.
  """
  overrides = hparams.as_mapping(model_config)
  model_cfg = hparams.get_config(model_name, None, {'model': overrides}).model
  model_name = model_cfg.model_name  # the canonical spelling
  checkpoint = checkpoints.locate(weights, model_name) if weights else None
  if checkpoint and checkpoint.head_classes and include_top and \
      model_cfg.num_classes is None:
    model_cfg.num_classes = checkpoint.head_classes
  if kwargs.get('include_preprocessing'):
    kwargs.setdefault('preprocessing_mode',
                      _weights_normalization(model_name, weights))

  model = EfficientNet.from_model_config(
      model_cfg, include_top=include_top, with_endpoints=with_endpoints,
      **kwargs)
  if checkpoint:
    checkpoints.load_weights(model, checkpoint, model_name)
  model.trainable = training
  return model


def _weights_normalization(model_name: str, weights: Optional[str]) -> str:
  """The normalisation `weights` expect: the registry's for published ones;
  for a path, the V2 code's `(x - 128) / 128`, with a warning."""
  if weights in hparams.weights.TAGS:
    return hparams.published_weights(model_name, weights).contract.normalization
  if weights:
    logging.warning(
        'include_preprocessing=True with weights %r, whose input contract is '
        "unknown: assuming 'symmetric' normalisation, (x - 128) / 128. Pass "
        "preprocessing_mode='inception' or 'imagenet' to choose another.",
        weights)
  return 'symmetric'


__all__ = [
    'BlockArgs', 'EfficientNet', 'Normalize', 'UserError', 'checkpoints',
    'decode_block', 'encode_block', 'get_model', 'list_models',
    'load_weights', 'weights_info',
]
