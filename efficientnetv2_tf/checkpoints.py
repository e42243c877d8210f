"""Weights: the official TF1 checkpoints, their downloads, and our own.

The published checkpoints are TF1 name-based. A variable is named
`<model_name>/<layer>/<sublayer>/<weight>`, for instance
`efficientnetv2-s/blocks_0/tpu_batch_normalization/gamma`, beside its
`.../ExponentialMovingAverage` shadow, `global_step` and sometimes optimizer
slots. `official_variable_map` spells out where each one goes in our model.

Our own checkpoints are TF2 object-based (`tf.train.Checkpoint`): `save`
writes the model alone, a training run the model beside its optimizer and
EMA (`model=`, `optimizer=`, `ema=`). Both load into a model of the same
architecture, with the classifier skipped when its size differs.
"""
import dataclasses
import os
import re
from typing import Dict, List, Optional

from absl import logging
import keras
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from efficientnetv2_tf import optim
from efficientnetv2_tf.blocks import MBConv
from hparams.errors import UserError
from hparams.registry import close_matches
from hparams.registry import unknown_name_message
from hparams.weights import published_weights
from hparams.weights import TAGS

CACHE_ENV = 'EFFICIENTNETV2_TF_CACHE'
EMA_SUFFIX = '/ExponentialMovingAverage'
# Optimizer slots and bookkeeping that a checkpoint may hold beside weights.
_IGNORED = re.compile(r'(/(RMSProp|Momentum|Adam|ExponentialMovingAverage)'
                      r'(_\d+)?$)|(^global_step$)')
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


def _find_checkpoint(path: str) -> str:
  """The checkpoint prefix at `path`: a prefix, or a directory holding one.

  In a directory (searched recursively, as archives unpack into a folder) a
  `checkpoint` state file names the latest; otherwise there must be exactly
  one checkpoint.
  """
  if not tf.io.gfile.isdir(path):
    if tf.io.gfile.exists(path + '.index'):
      return path
    raise UserError(f'weights path {path!r} does not exist; pass one of '
                    f'{", ".join(TAGS)}, a checkpoint prefix, a '
                    'directory holding one, or a .weights.h5 file')
  prefixes = []
  for root, _, files in tf.io.gfile.walk(path):
    latest = tf.train.latest_checkpoint(root) if 'checkpoint' in files else None
    if latest:
      return latest
    prefixes += [os.path.join(root, f[:-len('.index')]) for f in files
                 if f.endswith('.index')]
  if len(prefixes) != 1:
    found = f'{len(prefixes)} checkpoints ({", ".join(sorted(prefixes))})' \
        if prefixes else 'no checkpoint'
    raise UserError(f'directory {path!r} holds {found}; pass one prefix')
  return prefixes[0]


def _reader(path: str):
  """Opens the checkpoint at prefix `path`; an unreadable one is a UserError."""
  try:
    return tf.train.load_checkpoint(path)
  except tf.errors.OpError as e:
    raise UserError(f'checkpoint {path!r} cannot be read: '
                    f'{str(e).strip().splitlines()[0]}') from None


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
  return _find_checkpoint(unpacked)


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


def official_variable_map(model: keras.Model, prefix: str,
                          classifier: str = CLASSIFIER_SCOPES[0]
                          ) -> Dict[str, keras.Variable]:
  """Maps each official TF1 variable name to the variable of `model`;
  `classifier` is the classifier's scope (see `CLASSIFIER_SCOPES`)."""
  stem, head = model.get_layer('stem'), model.get_layer('head')
  layers = {'stem/conv2d': stem.conv, 'stem/tpu_batch_normalization': stem.bn}
  for layer in model.layers:
    if isinstance(layer, MBConv):
      for sub_name, sub_layer in _block_layers(layer).items():
        layers[f'{layer.name}/{sub_name}'] = sub_layer
  layers['head/conv2d'] = head.conv
  layers['head/tpu_batch_normalization'] = head.bn
  if model.include_top:
    layers[classifier] = model.get_layer('predictions')
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


def _listing(title: str, items: List[str], limit: int = 5) -> str:
  shown = ', '.join(items[:limit]) + (', ...' if len(items) > limit else '')
  return f'{len(items)} {title} ({shown})'


def load_official(model: keras.Model, path: str, model_name: str,
                  prefer_ema: bool = True,
                  skip_head: bool = False) -> LoadReport:
  """Loads an official TF1 checkpoint into `model`.

  EMA shadows are used where present (and `prefer_ema`); optimizer slots and
  the step are ignored. With `skip_head`, the classifier keeps its values.
  Raises UserError listing missing, unexpected and wrong-shape variables.
  """
  path = _find_checkpoint(path)
  reader = _reader(path)
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
  sources = {}  # our variable name -> the checkpoint tensor to load
  for name in expected:
    ema = name + EMA_SUFFIX
    use_ema = ema in shapes and (prefer_ema or name not in shapes)
    sources[name] = ema if use_ema else name
  missing = [n for n, src in sources.items() if src not in shapes]
  wrong_shape = [
      f'{src} {tuple(shapes[src])} vs {tuple(expected[n].shape)}'
      for n, src in sources.items()
      if src in shapes and tuple(shapes[src]) != tuple(expected[n].shape)]
  unexpected = sorted(
      n for n in shapes if n.startswith(model_name + '/') and
      not _IGNORED.search(n) and n not in expected and
      not (n.startswith(head) and (skip_head or not model.include_top)))
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


@dataclasses.dataclass(frozen=True)
class Checkpoint:
  """A located checkpoint: its path, its kind and its classifier's size.

  `kind` is 'official' (TF1 name-based), 'tf2' (`tf.train.Checkpoint`, as
  `save` writes) or 'keras' (a `.weights.h5` or `.keras` file).
  """
  path: str
  kind: str
  head_classes: Optional[int] = None


def locate(weights: str, model_name: str) -> Checkpoint:
  """Finds (downloading named weights first) and inspects a checkpoint."""
  if weights in TAGS:
    weights = download(model_name, weights)
  if weights.endswith(('.weights.h5', '.keras')):
    if not tf.io.gfile.exists(weights):
      raise UserError(f'weights file {weights!r} does not exist')
    return Checkpoint(weights, 'keras')
  if not tf.io.gfile.exists(weights) and os.sep not in weights and \
      close_matches(weights, TAGS):
    raise UserError(unknown_name_message('weights', weights, TAGS) +
                    ', or a checkpoint path')
  path = _find_checkpoint(weights)
  reader = _reader(path)
  if reader.has_tensor(_OBJECT_GRAPH):
    return Checkpoint(path, 'tf2', _own_head_classes(reader))
  shapes = reader.get_variable_to_shape_map()
  bias = shapes.get(f'{model_name}/{_classifier_scope(shapes, model_name)}'
                    '/bias')
  return Checkpoint(path, 'official', int(bias[0]) if bias else None)


_OBJECT_GRAPH = '_CHECKPOINTABLE_OBJECT_GRAPH'


def _object_graph(reader) -> trackable_object_graph_pb2.TrackableObjectGraph:
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor(_OBJECT_GRAPH))
  return graph


def _object_node(graph, *names: str):
  """The node at a path of attribute names from the root; None if absent."""
  node = graph.nodes[0]
  for name in names:
    ids = [c.node_id for c in node.children if c.local_name == name]
    if not ids:
      return None
    node = graph.nodes[ids[0]]
  return node


def _own_head_classes(reader) -> Optional[int]:
  """The classifier size of one of our checkpoints; None without one.

  A functional model tracks its layers in order under `_operations`, so the
  classifier, if any, is the last one: the only one with a `bias`.
  """
  graph = _object_graph(reader)
  layers = _object_node(graph, 'model', '_operations')
  if layers is None or not layers.children:
    return None
  last = graph.nodes[layers.children[-1].node_id]
  bias = [graph.nodes[c.node_id] for c in last.children
          if c.local_name == 'bias']
  if not bias or not bias[0].attributes:
    return None
  shape = reader.get_variable_to_shape_map()[
      bias[0].attributes[0].checkpoint_key]
  return int(shape[0]) if len(shape) == 1 else None


def load_weights(model: keras.Model, checkpoint: Checkpoint,
                 model_name: str, prefer_ema: bool = True) -> None:
  """Loads a located checkpoint into `model`.

  When the checkpoint's classifier has another number of classes than the
  model, the classifier is skipped and keeps its initial values.
  `prefer_ema` picks the checkpoint's EMA values over the raw ones.
  """
  if checkpoint.kind == 'keras':
    try:
      model.load_weights(checkpoint.path)
    except ValueError as e:
      raise UserError(f'weights file {checkpoint.path!r} does not fit '
                      f'{model.name}: {str(e).strip().splitlines()[0]}'
                      ) from None
  elif checkpoint.kind == 'tf2':
    _load_own(model, checkpoint, prefer_ema)
  else:
    classes = checkpoint.head_classes
    skip_head = bool(model.include_top and classes and
                     classes != model.num_classes)
    if skip_head:
      logging.warning('Checkpoint head has %d classes, the model %d: the '
                      'classifier is not loaded.', classes, model.num_classes)
    load_official(model, checkpoint.path, model_name, prefer_ema=prefer_ema,
                  skip_head=skip_head)


def _load_own(model: keras.Model, checkpoint: Checkpoint,
              prefer_ema: bool) -> None:
  """Loads one of our checkpoints, through a copy of the model when the
  classifier differs or the EMA is wanted."""
  classes = checkpoint.head_classes
  same_head = classes == (model.num_classes if model.include_top else None)
  use_ema = prefer_ema and _object_node(
      _object_graph(_reader(checkpoint.path)), 'ema') is not None
  if same_head and not use_ema:
    restore(model, checkpoint.path)
    return
  config = model.get_config()
  config.update(include_top=classes is not None,
                num_classes=classes or model.num_classes, with_endpoints=False)
  source = type(model).from_config(config)
  tracked = {'model': source}
  if use_ema:
    tracked['ema'] = optim.ExponentialMovingAverage(
        optim.ema_variables(source), decay=0.5)
  _read(tf.train.Checkpoint(**tracked), checkpoint.path, model.name)
  if use_ema:
    tracked['ema'].copy_to(optim.ema_variables(source))
  if not same_head:
    logging.warning('Checkpoint head has %s classes, the model %s: the '
                    'classifier is not loaded.', classes,
                    model.num_classes if model.include_top else 'none')
  values = {v.path: v for v in source.variables}
  loaded = 0
  for variable in model.variables:
    skipped = variable.path.startswith('predictions/') and not same_head
    # Dropout's random state is not a weight.
    if (variable.path in values and not skipped and
        'seed_generator' not in variable.path):
      variable.assign(values[variable.path])
      loaded += 1
  logging.info('Loaded %d variables (%s) from %s', loaded,
               'EMA' if use_ema else 'raw', checkpoint.path)


def _shape_mismatches(root: tf.train.Checkpoint, reader) -> List[str]:
  """Variables of `root` whose shape differs from the checkpoint's.

  Walks the checkpoint's object graph beside the objects, as a read would,
  so that a mismatch is reported before anything is assigned.
  """
  graph = _object_graph(reader)
  shapes = reader.get_variable_to_shape_map()
  mismatches, seen = [], set()

  def walk(obj, node_id: int) -> None:
    if node_id in seen:
      return
    seen.add(node_id)
    node = graph.nodes[node_id]
    for attribute in node.attributes:
      if attribute.name == 'VARIABLE_VALUE' and hasattr(obj, 'shape'):
        stored = tuple(shapes[attribute.checkpoint_key])
        if stored != tuple(obj.shape):
          mismatches.append(f'{getattr(obj, "path", obj.name)} '
                            f'{stored} vs {tuple(obj.shape)}')
    children = tf.train.TrackableView(obj).children(obj)
    for child in node.children:
      if child.local_name in children:
        walk(children[child.local_name], child.node_id)

  walk(root, 0)
  return mismatches


def _read(tracked: tf.train.Checkpoint, path: str, name: str) -> None:
  """Reads the tracked objects from `path`; a mismatch is a UserError."""
  wrong_shape = _shape_mismatches(tracked, _reader(path))
  if wrong_shape:
    raise UserError(f'checkpoint {path!r} does not fit {name}: ' + _listing(
        'variables of the wrong shape (checkpoint vs model)', wrong_shape))
  try:
    # Training state beside the weights (optimizer, step) is not wanted.
    tracked.read(path).expect_partial().assert_existing_objects_matched()
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    first_line = str(e).strip().splitlines()[0]
    raise UserError(f'checkpoint {path!r} does not fit {name}: '
                    f'{first_line}') from None


def save(model: keras.Model, path: str) -> str:
  """Writes the model's weights as a TF2 checkpoint; returns its prefix.

  The write goes to a temporary prefix that is renamed into place, so a
  killed process never leaves a half-written checkpoint under `path`.
  """
  tmp = tf.train.Checkpoint(model=model).write(path + '.tmp')
  # Data shards first, the index last: a prefix with an index is complete.
  for src in sorted(tf.io.gfile.glob(tmp + '.*')):
    tf.io.gfile.rename(src, path + src[len(tmp):], overwrite=True)
  return path


def restore(model: keras.Model, path: str) -> str:
  """Restores weights that `save` wrote; raises UserError on a mismatch."""
  path = _find_checkpoint(path)
  _read(tf.train.Checkpoint(model=model), path, model.name)
  return path
