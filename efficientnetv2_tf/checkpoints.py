"""Our own checkpoints: finding them, describing them, writing and reading.

Ours are TF2 object-based (`tf.train.Checkpoint`): `save` writes the model
alone, a training run the model beside its optimizer and EMA (`model=`,
`optimizer=`, `ema=`). Beside them, `model_info.json` (`write_model_info`)
records the classifier they hold, so that a model can be built to fit
before they are read. `load_own` reads one into a model of the same
architecture, with the classifier skipped when its size differs.
`find_checkpoint` and `open_checkpoint` serve official checkpoints too.
"""
import json
import os
from typing import Any, Dict, List, Optional, Sequence

from absl import logging
import tensorflow as tf
from tensorflow.core.protobuf import trackable_object_graph_pb2

from efficientnetv2_tf import ema
from efficientnetv2_tf.model import EfficientNet
from hparams.errors import UserError
from hparams.weights import TAGS

MODEL_INFO = 'model_info.json'
# How an object-based checkpoint names a variable's value: the variable's
# path of attribute names from the root, then this.
_VALUE = '/.ATTRIBUTES/VARIABLE_VALUE'


def find_checkpoint(path: str) -> str:
  """The checkpoint prefix at `path`: a prefix, or a directory holding one.

  In a directory (searched recursively, as archives unpack into a folder) a
  `checkpoint` state file names the latest; otherwise there must be exactly
  one checkpoint.
  """
  if not tf.io.gfile.isdir(path):
    if tf.io.gfile.exists(path + '.index'):
      return path
    if tf.io.gfile.exists(path):
      raise UserError(f'weights path {path!r} is a file but not a '
                      'checkpoint; pass a checkpoint prefix (without its '
                      '.index), a directory holding one, or a .weights.h5 '
                      'file')
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


def open_checkpoint(path: str):
  """Opens the checkpoint at prefix `path`; an unreadable one is a UserError."""
  try:
    return tf.train.load_checkpoint(path)
  except tf.errors.OpError as e:
    raise UserError(f'checkpoint {path!r} cannot be read: '
                    f'{str(e).strip().splitlines()[0]}') from None


def check_shapes(tracked: tf.train.Checkpoint, path: str) -> None:
  """Refuses the checkpoint at prefix `path` when a variable of `tracked`
  has another shape there, as one of another model has: restoring it would
  fail part way, with some variables assigned. Damage is TensorFlow's
  error, as `restore` would raise it."""
  reader = tf.train.load_checkpoint(path)
  graph = trackable_object_graph_pb2.TrackableObjectGraph()
  graph.ParseFromString(reader.get_tensor('_CHECKPOINTABLE_OBJECT_GRAPH'))
  shapes = reader.get_variable_to_shape_map()
  for node, obj in tf.train.CheckpointView(path).match(tracked).items():
    for attribute in graph.nodes[node].attributes:
      saved = shapes.get(attribute.checkpoint_key)
      if (attribute.name == 'VARIABLE_VALUE' and saved is not None and
          saved != list(obj.shape)):
        name = getattr(obj, 'path', None) or obj.name
        raise UserError(f'checkpoint {path!r} does not fit the model of '
                        f'this config: {name} has shape {saved} there and '
                        f'{list(obj.shape)} here')


def write_model_info(directory: str, model: EfficientNet) -> None:
  """Records beside checkpoints in `directory` which model they hold.

  Call it wherever checkpoints of `model` are written; `read_model_info`
  reads it back.
  """
  info = {'model_name': model.name, 'include_top': model.include_top,
          'num_classes': model.num_classes}
  path = os.path.join(directory, MODEL_INFO)
  if directory:
    tf.io.gfile.makedirs(directory)
  # Renamed into place, so that a reader never sees half a file.
  with tf.io.gfile.GFile(path + '.tmp', 'w') as f:
    json.dump(info, f, indent=2)
  tf.io.gfile.rename(path + '.tmp', path, overwrite=True)


def read_model_info(directory: str) -> Optional[Dict[str, Any]]:
  """What `write_model_info` recorded in `directory`; None without it."""
  path = os.path.join(directory, MODEL_INFO)
  if not tf.io.gfile.exists(path):
    return None
  with tf.io.gfile.GFile(path) as f:
    try:
      return json.load(f)
    except ValueError as e:
      raise UserError(f'{path!r} is not valid JSON ({e}); delete it to '
                      'read the checkpoint without it') from None


def _shapes(path: str) -> Dict[str, List[int]]:
  return open_checkpoint(path).get_variable_to_shape_map()


def is_own(path: str) -> bool:
  """Whether the checkpoint at prefix `path` is object-based, as ours are
  (official checkpoints are name-based)."""
  return any(key.endswith(_VALUE) for key in _shapes(path))


def head_classes(path: str) -> Optional[int]:
  """The classifier size of our checkpoint at prefix `path`; None without
  a classifier. Read from `model_info.json` where there is one."""
  info = read_model_info(os.path.dirname(path))
  if info is not None:
    return info['num_classes'] if info['include_top'] else None
  # The classifier's kernel is the only 2-D variable of an EfficientNet;
  # its EMA and optimizer slots, where present, have its shape.
  classes = {shape[1] for shape in _shapes(path).values() if len(shape) == 2}
  return int(classes.pop()) if len(classes) == 1 else None


_STEP_KEY = 'optimizer/_iterations' + _VALUE


def step_of(path: str) -> Optional[int]:
  """The training step of our checkpoint at prefix `path`; None where it
  holds none or cannot be read."""
  try:
    reader = tf.train.load_checkpoint(path)
  except tf.errors.OpError:
    return None
  return int(reader.get_tensor(_STEP_KEY)) if reader.has_tensor(
      _STEP_KEY) else None


def holds_ema(path: str) -> bool:
  """Whether our checkpoint at prefix `path` holds a training run's EMA."""
  return any(key.startswith('ema/') for key in _shapes(path))


def _read(tracked: tf.train.Checkpoint, path: str, name: str) -> None:
  """Reads the tracked objects from `path`; a mismatch is a UserError."""
  try:
    # Training state beside the weights (optimizer, step) is not wanted.
    tracked.read(path).expect_partial().assert_existing_objects_matched()
  except IndexError:  # how TensorFlow reports a data file cut short
    raise UserError(f'checkpoint {path!r} cannot be read: a data file is '
                    'shorter than its index says') from None
  except (AssertionError, ValueError, tf.errors.OpError) as e:
    first_line = str(e).strip().splitlines()[0]
    raise UserError(f'checkpoint {path!r} does not fit {name}: '
                    f'{first_line}') from None


def _classes(model: EfficientNet) -> Optional[int]:
  return model.num_classes if model.include_top else None


def _read_copy(model: EfficientNet, path: str, classes: Optional[int],
               use_ema: bool) -> EfficientNet:
  """A copy of `model` with a classifier of `classes`, read from `path`
  and holding its EMA values if `use_ema`, built without preprocessing as
  checkpoints hold it (see `save`). Reading into a copy leaves `model` as
  it was when the checkpoint does not fit."""
  config = model.get_config()
  config.update(include_top=classes is not None,
                num_classes=classes or model.num_classes, with_endpoints=False,
                include_preprocessing=False)
  source = type(model).from_config(config)
  tracked = {'model': source}
  if use_ema:
    tracked['ema'] = ema.ExponentialMovingAverage(
        ema.ema_variables(source), decay=0.5)
  _read(tf.train.Checkpoint(**tracked), path, model.name)
  if use_ema:
    tracked['ema'].copy_to(ema.ema_variables(source))
  return source


def _copy_weights(source: EfficientNet, model: EfficientNet,
                  skipped: Sequence[tf.Variable] = ()) -> int:
  """Assigns `source`'s weights to `model`'s of the same path, but for
  `skipped`; returns how many."""
  values = {w.path: w for w in source.weights}
  skipped_ids = {id(w) for w in skipped}
  loaded = 0
  for weight in model.weights:
    if weight.path in values and id(weight) not in skipped_ids:
      weight.assign(values[weight.path])
      loaded += 1
  return loaded


def load_own(model: EfficientNet, path: str, prefer_ema: bool = True) -> None:
  """Loads our checkpoint at prefix `path` into `model`.

  `prefer_ema` takes a training run's EMA values over its raw ones. When
  the classifier differs in size, it is skipped and keeps its values.
  """
  classes = head_classes(path)
  use_ema = prefer_ema and holds_ema(path)
  source = _read_copy(model, path, classes, use_ema)
  skipped = []
  if classes != _classes(model):
    logging.warning('Checkpoint head has %s classes, the model %s: the '
                    'classifier is not loaded.', classes,
                    _classes(model) or 'none')
    skipped = model.classifier.weights if model.include_top else []
  loaded = _copy_weights(source, model, skipped)
  logging.info('Loaded %d variables (%s) from %s', loaded,
               'EMA' if use_ema else 'raw', path)


def save(model: EfficientNet, path: str) -> str:
  """Writes the model's weights as a TF2 checkpoint; returns its prefix.

  The write goes to a temporary prefix that is renamed into place, so a
  killed process never leaves a half-written checkpoint under `path`.
  `model_info.json` is written beside it. A model with
  `include_preprocessing` is written as one without, as training writes
  it: its normalisation holds no variable, but would renumber the layers
  that a checkpoint's paths go by.
  """
  write_model_info(os.path.dirname(path), model)
  if model.spec.include_preprocessing:
    plain = type(model).from_config({**model.get_config(),
                                     'include_preprocessing': False})
    _copy_weights(model, plain)
    model = plain
  tmp = tf.train.Checkpoint(model=model).write(path + '.tmp')
  # Data shards first, the index last: a prefix with an index is complete.
  for src in sorted(tf.io.gfile.glob(tmp + '.*')):
    tf.io.gfile.rename(src, path + src[len(tmp):], overwrite=True)
  return path


def restore(model: EfficientNet, path: str) -> str:
  """Restores weights that `save` wrote; raises UserError on a mismatch."""
  path = find_checkpoint(path)
  _copy_weights(_read_copy(model, path, _classes(model), use_ema=False),
                model)
  return path
