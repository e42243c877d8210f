"""Building named models and loading weights into them.

`get_model` builds a variant from the registry and loads weights given by
name ('imagenet', ...) or by path: an official TF1 checkpoint, one of our
TF2 checkpoints, or a Keras weights file. `locate` finds and inspects such
weights first, so that the classifier can be built to fit them.
"""
import dataclasses
import os
from typing import Any, List, Mapping, Optional, Tuple, Union

from absl import logging
import tensorflow as tf

import hparams
from efficientnetv2_tf import checkpoints
from efficientnetv2_tf import official
from efficientnetv2_tf.model import EfficientNet
from efficientnetv2_tf.preprocessing import Augmentation
from efficientnetv2_tf.run_dir import RunDir
from hparams.errors import UserError
from hparams.registry import close_matches
from hparams.registry import unknown_name_message
from hparams.weights import InputContract
from hparams.weights import named_weights
from hparams.weights import TAGS


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A located checkpoint: its path, its kind and its classifier's size.

  `kind` is 'official' (TF1 name-based), 'tf2' (`tf.train.Checkpoint`, as
  `checkpoints.save` and training write) or 'keras' (a `.weights.h5` or
  `.keras` file).
  """
  path: str
  kind: str
  head_classes: Optional[int] = None


def locate(weights: str, model_name: str) -> Checkpoint:
  """Finds (downloading named weights first) and inspects a checkpoint."""
  if weights in TAGS:
    weights = official.download(model_name, weights)
  if weights.endswith(('.weights.h5', '.keras')):
    if not tf.io.gfile.exists(weights):
      raise UserError(f'weights file {weights!r} does not exist')
    return Checkpoint(weights, 'keras')
  if not tf.io.gfile.exists(weights) and os.sep not in weights and \
      close_matches(weights, TAGS):
    raise UserError(unknown_name_message('weights', weights, TAGS) +
                    ', or a checkpoint path')
  path = checkpoints.find_checkpoint(weights)
  if checkpoints.is_own(path):
    return Checkpoint(path, 'tf2', checkpoints.head_classes(path))
  shapes = checkpoints.open_checkpoint(path).get_variable_to_shape_map()
  return Checkpoint(path, 'official', official.head_classes(shapes,
                                                            model_name))


def load_weights(model: EfficientNet, weights: Union[str, Checkpoint],
                 model_name: Optional[str] = None,
                 prefer_ema: bool = True) -> None:
  """Loads named weights ('imagenet', ...), a checkpoint path or a located
  `Checkpoint` into `model`.

  `model_name` is the variant whose official weights to use; it defaults to
  the model's name, which `get_model` sets to the variant's. When the
  checkpoint's classifier has another number of classes than the model,
  the classifier is skipped and keeps its initial values. `prefer_ema`
  picks the checkpoint's EMA values over the raw ones.
  """
  model_name = model_name or model.name
  checkpoint = weights if isinstance(weights, Checkpoint) else locate(
      weights, model_name)
  if checkpoint.kind == 'keras':
    try:
      model.load_weights(checkpoint.path)
    except ValueError as e:
      raise UserError(f'weights file {checkpoint.path!r} does not fit '
                      f'{model.name}: {str(e).strip().splitlines()[0]}'
                      ) from None
  elif checkpoint.kind == 'tf2':
    checkpoints.load_own(model, checkpoint.path, prefer_ema)
  else:
    classes = checkpoint.head_classes
    skip_head = bool(model.include_top and classes and
                     classes != model.num_classes)
    if skip_head:
      logging.warning('Checkpoint head has %d classes, the model %d: the '
                      'classifier is not loaded.', classes, model.num_classes)
    official.load_official(model, checkpoint.path, model_name,
                           prefer_ema=prefer_ema, skip_head=skip_head)


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
  canonical = hparams.get_specs(model_name).model.name
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
      official TF1 checkpoint (prefix or directory), one of our TF2
      checkpoints, or a `.weights.h5` file. Named weights are downloaded
      once into `$EFFICIENTNETV2_TF_CACHE/efficientnetv2_tf` (the
      variable defaults to `~/.keras`). Where a checkpoint holds EMA values
      (official ones, and those of a training run), those are loaded. The
      classifier takes the checkpoint's number of classes (21,843 for
      'imagenet21k') unless `num_classes` is given; a `num_classes` that
      differs from the checkpoint's leaves the classifier freshly
      initialised. Published weights each have their own input contract
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
  spec = hparams.get_specs(model_name, None, {'model': overrides}).model
  model_name = spec.name  # the canonical spelling
  checkpoint = locate(weights, model_name) if weights else None
  if checkpoint and checkpoint.head_classes and include_top and \
      overrides.get('num_classes') is None:
    kwargs['num_classes'] = checkpoint.head_classes
  if kwargs.get('include_preprocessing') and \
      kwargs.get('preprocessing_mode') is None:  # None, as unset
    kwargs['preprocessing_mode'] = _weights_normalization(model_name, weights)

  model = EfficientNet.from_spec(
      spec, include_top=include_top, with_endpoints=with_endpoints, **kwargs)
  if checkpoint:
    load_weights(model, checkpoint, model_name)
  model.trainable = training
  return model


def _weights_normalization(model_name: str, weights: Optional[str]) -> str:
  """The normalisation `weights` expect: a training run's checkpoint its
  run's recipe's, others `weights_contract`'s; without weights, the V2
  code's `(x - 128) / 128`."""
  if not weights:
    return 'symmetric'
  run = weights_run(weights)
  if run:  # a training run's checkpoint: its run's recipe
    specs = RunDir(run[0]).load_specs()
    return Augmentation.from_specs(specs).contract(
        specs.data.eval_image_size).normalization
  return weights_contract(model_name, weights)[0].normalization


def weights_run(weights: str) -> Optional[Tuple[str, Optional[str]]]:
  """(run directory, checkpoint or None for its newest) when `weights` is
  a training run's directory, its checkpoints/ or a checkpoint there."""
  if (weights in TAGS or weights.endswith(('.weights.h5', '.keras')) or
      not tf.io.gfile.exists(weights + '.index') and
      not tf.io.gfile.isdir(weights)):
    return None  # for `loading` to name what it takes
  if os.path.isfile(RunDir(weights).config):
    return weights, None
  prefix = checkpoints.find_checkpoint(weights)
  run = RunDir.of_checkpoint(prefix)
  return (run.path, prefix) if run else None


def weights_contract(model_name: str, weights: str,
                     normalization: Optional[str] = None
                     ) -> Tuple[InputContract, Optional[str]]:
  """The input contract of checkpoint `weights` of `model_name`, and the
  name of the published weights it is, if any.

  Published weights (a tag, or the folder their archive unpacked into:
  `hparams.weights.named_weights`) have their own contract. Any other
  checkpoint gets the evaluation contract of the recipe the model's preset
  trains with, at its eval size, with a warning; `normalization` replaces
  its normalisation.
  """
  entry = named_weights(model_name, weights)
  if entry is not None:
    return entry.contract, entry.name
  specs = hparams.get_specs(model_name)
  contract = Augmentation.from_specs(specs).contract(
      specs.data.eval_image_size)
  if normalization:
    contract = dataclasses.replace(contract, normalization=normalization)
  logging.warning(
      'weights %r are not published ones named by tag or by their '
      "archive's folder: assuming the input contract of the recipe %s "
      'trains with, %s', weights, model_name, contract)
  return contract, None
