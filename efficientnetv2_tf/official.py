"""The official TF1 checkpoints: their names, their downloads, their loading.

The published checkpoints are TF1 name-based. A variable is named
`<model_name>/<layer>/<sublayer>/<weight>`, for instance
`efficientnetv2-s/blocks_0/tpu_batch_normalization/gamma`, beside its
`.../ExponentialMovingAverage` shadow, `global_step` and sometimes optimizer
slots. `official_variable_map` spells out where each one goes in our model.
"""
import dataclasses
import os
import re
from typing import Dict, List, Mapping, Optional

from absl import logging
import keras

from efficientnetv2_tf import checkpoints
from efficientnetv2_tf.blocks import Head
from efficientnetv2_tf.blocks import MBConv
from efficientnetv2_tf.blocks import Stem
from efficientnetv2_tf.model import EfficientNet
from hparams.errors import UserError
from hparams.weights import published_weights

CACHE_ENV = 'EFFICIENTNETV2_TF_CACHE'
EMA_SUFFIX = '/ExponentialMovingAverage'
# Optimizer slots and bookkeeping that a checkpoint may hold beside weights.
_IGNORED = re.compile(r'(/(RMSProp|Momentum|Adam)(_\d+)?$)|(^global_step$)')
# The published archives name the classifier `head/dense`; the original
# code run in TF1 graph mode today writes `head_1/dense`.
CLASSIFIER_SCOPES = ('head/dense', 'head_1/dense')


def cache_dir() -> str:
  """Where named weights are kept: `$EFFICIENTNETV2_TF_CACHE`, else
  `~/.keras`; archives go in its `efficientnetv2_tf/` folder."""
  return os.path.expanduser(os.environ.get(CACHE_ENV) or '~/.keras')


def archive_path(model_name: str, tag: str) -> str:
  """Where `download` keeps the archive of published weights. An archive
  put there by hand (fetched elsewhere) is used without a download."""
  url = published_weights(model_name, tag).url
  return os.path.join(cache_dir(), 'efficientnetv2_tf', os.path.basename(url))


def download(model_name: str, weights: str) -> str:
  """Downloads and unpacks named weights once; returns the checkpoint prefix.

  The archives are kept in `archive_path(model_name, weights)`.
  """
  url = published_weights(model_name, weights).url
  archive = archive_path(model_name, weights)
  # Keras takes a directory that does not exist for an unwritable one and
  # silently puts the archive in /tmp/.keras instead.
  os.makedirs(os.path.dirname(archive), exist_ok=True)
  try:
    unpacked = keras.utils.get_file(
        os.path.basename(archive), url, extract=True,
        cache_dir=cache_dir(), cache_subdir='efficientnetv2_tf')
  except Exception as e:  # pylint: disable=broad-except
    cause = (str(e).strip().splitlines() or [type(e).__name__])[0]
    raise UserError(
        f'could not download {weights!r} weights for {model_name} from {url} '
        f'({cause}). Offline? Fetch that archive elsewhere and put it at '
        f"{archive}, or unpack it and pass its directory: "
        "weights='/path/to/dir'") from None
  return checkpoints.find_checkpoint(unpacked)


def _layer_weights(layer: keras.layers.Layer) -> Dict[str, keras.Variable]:
  """The TF1 weight names of one Keras layer."""
  if isinstance(layer, keras.layers.DepthwiseConv2D):
    return {'depthwise_kernel': layer.kernel}
  if isinstance(layer, keras.layers.BatchNormalization):
    return {'gamma': layer.gamma, 'beta': layer.beta,
            'moving_mean': layer.moving_mean,
            'moving_variance': layer.moving_variance}
  names = {'kernel': layer.kernel}
  if layer.use_bias:
    names['bias'] = layer.bias
  return names


def _block_layers(block: MBConv) -> Dict[str, keras.layers.Layer]:
  """TF1 sub-layer names of a block: convs and BNs are numbered in order."""
  names = {}
  convs = bns = 0
  for layer in block.sublayers():
    if layer is None:
      continue
    if layer is block.se:
      names['se/conv2d'] = layer.reduce
      names['se/conv2d_1'] = layer.expand
    elif isinstance(layer, keras.layers.DepthwiseConv2D):
      names['depthwise_conv2d'] = layer
    elif isinstance(layer, keras.layers.BatchNormalization):
      names['tpu_batch_normalization' + (f'_{bns}' if bns else '')] = layer
      bns += 1
    else:
      names['conv2d' + (f'_{convs}' if convs else '')] = layer
      convs += 1
  return names


def official_variable_map(model: EfficientNet, prefix: str,
                          classifier: str = CLASSIFIER_SCOPES[0]
                          ) -> Dict[str, keras.Variable]:
  """Maps each official TF1 variable name to the variable of `model`;
  `classifier` is the classifier's scope (see `CLASSIFIER_SCOPES`)."""
  layers = {}
  blocks = 0
  for layer in model.backbone_layers():
    # The original numbers its blocks from 0, as the model builds them.
    if isinstance(layer, (Stem, Head)):
      scope = 'stem' if isinstance(layer, Stem) else 'head'
      layers[f'{scope}/conv2d'] = layer.conv
      layers[f'{scope}/tpu_batch_normalization'] = layer.bn
    elif isinstance(layer, MBConv):
      for sub_name, sub_layer in _block_layers(layer).items():
        layers[f'blocks_{blocks}/{sub_name}'] = sub_layer
      blocks += 1
  if model.include_top:
    layers[classifier] = model.classifier
  return {f'{prefix}/{layer_name}/{weight_name}': variable
          for layer_name, layer in layers.items()
          for weight_name, variable in _layer_weights(layer).items()}


@dataclasses.dataclass(frozen=True)
class LoadReport:
  """What a checkpoint load did: variables loaded, and how many from EMA."""
  checkpoint: str
  loaded: int
  from_ema: int
  skipped_head: bool


def _checkpoint_model_name(path: str, names: List[str]) -> str:
  suffix = '/stem/conv2d/kernel'
  stems = {n[:n.index(suffix)] for n in names
           if n.endswith((suffix, suffix + EMA_SUFFIX))}
  if len(stems) != 1:
    raise UserError(f'{path!r} is not an EfficientNet TF1 checkpoint: no '
                    "'<model_name>/stem/conv2d/kernel' variable in it")
  return stems.pop()


def _classifier_scope(names, model_name: str) -> str:
  """The scope the checkpoint's classifier is under (`head/dense` unless
  only `head_1/dense` is there)."""
  for scope in CLASSIFIER_SCOPES:
    if any(n.startswith(f'{model_name}/{scope}/') for n in names):
      return scope
  return CLASSIFIER_SCOPES[0]


def _weight_name(name: str) -> str:
  """The weight an EMA shadow averages; other names as they are."""
  return name[:-len(EMA_SUFFIX)] if name.endswith(EMA_SUFFIX) else name


def head_classes(shapes: Mapping[str, List[int]],
                 model_name: str) -> Optional[int]:
  """The classifier size of an official checkpoint, from its variables'
  shapes (`reader.get_variable_to_shape_map()`), raw or EMA; None without
  one."""
  bias = f'{model_name}/{_classifier_scope(shapes, model_name)}/bias'
  shape = shapes.get(bias) or shapes.get(bias + EMA_SUFFIX)
  return int(shape[0]) if shape else None


def _ema_sources(names: List[str], shapes: Mapping[str, List[int]],
                 prefer_ema: bool) -> Dict[str, str]:
  """Our variable name -> the checkpoint tensor to load it from: the EMA
  shadow where present and preferred, or where the raw value is absent."""
  sources = {}
  for name in names:
    averaged = name + EMA_SUFFIX
    use_ema = averaged in shapes and (prefer_ema or name not in shapes)
    sources[name] = averaged if use_ema else name
  return sources


def _listing(title: str, items: List[str], limit: int = 5) -> str:
  shown = ', '.join(items[:limit]) + (', ...' if len(items) > limit else '')
  return f'{len(items)} {title} ({shown})'


def load_official(model: EfficientNet, path: str, model_name: str,
                  prefer_ema: bool = True,
                  skip_head: bool = False) -> LoadReport:
  """Loads an official TF1 checkpoint into `model`.

  EMA shadows are used where present (and `prefer_ema`); optimizer slots and
  the step are ignored. With `skip_head`, the classifier keeps its values.
  Raises UserError listing missing, unexpected and wrong-shape variables.
  """
  path = checkpoints.find_checkpoint(path)
  reader = checkpoints.open_checkpoint(path)
  shapes = reader.get_variable_to_shape_map()
  found = _checkpoint_model_name(path, list(shapes))
  if found != model_name:
    raise UserError(f'checkpoint {path!r} holds {found!r} weights; this model '
                    f'is {model_name!r}. Build {found!r} or pass a checkpoint '
                    f'of {model_name!r}')
  classifier = _classifier_scope(shapes, model_name)
  head = f'{model_name}/{classifier}/'
  expected = {name: var for name, var in official_variable_map(
      model, model_name, classifier).items()
              if not (skip_head and name.startswith(head))}
  sources = _ema_sources(list(expected), shapes, prefer_ema)
  missing = [n for n, src in sources.items() if src not in shapes]
  wrong_shape = [
      f'{src} {tuple(shapes[src])} vs {tuple(expected[n].shape)}'
      for n, src in sources.items()
      if src in shapes and tuple(shapes[src]) != tuple(expected[n].shape)]
  # A weight held only as its EMA shadow is as unexpected as a raw one.
  unexpected = sorted({
      n for n in map(_weight_name, shapes) if n.startswith(model_name + '/')
      and not _IGNORED.search(n) and n not in expected and
      not (n.startswith(head) and (skip_head or not model.include_top))})
  if missing or wrong_shape or unexpected:
    problems = [_listing(title, items) for title, items in (
        ('missing', missing), ('unexpected', unexpected),
        ('of the wrong shape (checkpoint vs model)', wrong_shape)) if items]
    raise UserError(f'checkpoint {path!r} does not fit {model_name} as built: '
                    + '; '.join(problems))
  for name, variable in expected.items():
    variable.assign(reader.get_tensor(sources[name]))
  from_ema = sum(src != name for name, src in sources.items())
  logging.info('Loaded %d variables (%d from EMA) from %s', len(expected),
               from_ema, path)
  return LoadReport(path, len(expected), from_ema, skip_head)
