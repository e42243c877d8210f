"""Numbers from the original google/automl code, and official-format
checkpoints made from them.

`tests/fixtures/*.npz` were written by `tools/oracle/` scripts running the
original code (see tools/oracle/README.md); nothing here imports it.

- `preprocessing.npz`: JPEG bytes and the original's eval preprocessing of
  them, per recipe and size (`jpegs`, `preprocessed`, `kept_pixels`).
- `finetune.npz`: the uint8 image the original's fine-tuning recipe hands
  RandAugment, per output size (`load('finetune')`).
- `PARAM_COUNTS`: each model's variables, as the original counts them.
- `presets.json`: the original's config for each model preset with each
  dataset preset, as its `main.py` resolves it (`load_presets()`).
- `official_checkpoints.npz`: tiny models' checkpoints as the original's
  training saved them, the logits the original computes from their EMA
  weights, and log-probabilities of the JPEGs (`official_tensors`,
  `model_config`, `logits`, `end_to_end`).

`write_checkpoint` and `pack_archive` turn those tensors back into a TF1
checkpoint and into an archive laid out like the published ones.
"""
import functools
import hashlib
import json
import os
import tarfile
from typing import Any, Dict, List, Mapping

import numpy as np
import tensorflow as tf

FIXTURES_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                            'fixtures')
# All variables at 1000 classes, as the original implementation counts them,
# except efficientnet-b3: the V1 checkpoints were trained with V1's channel
# rounding, which the V2 code (12,314,268) dropped. b8 and l2 round as V1
# did too; their trainable counts, 87,413,142 and 480,309,308, are timm's
# 87.4M and 480.3M for the same checkpoints.
PARAM_COUNTS = {
    'efficientnetv2-b0': 7_200_312, 'efficientnetv2-b1': 8_212_124,
    'efficientnetv2-b2': 10_178_374, 'efficientnetv2-b3': 14_467_622,
    'efficientnetv2-s': 21_612_360, 'efficientnetv2-m': 54_431_388,
    'efficientnetv2-l': 119_027_848, 'efficientnetv2-xl': 208_896_832,
    'efficientnet-b0': 5_330_564, 'efficientnet-b1': 7_856_232,
    'efficientnet-b2': 9_177_562, 'efficientnet-b3': 12_320_528,
    'efficientnet-b4': 19_466_816, 'efficientnet-b5': 30_562_520,
    'efficientnet-b6': 43_265_136, 'efficientnet-b7': 66_658_680,
    'efficientnet-b8': 87_793_174, 'efficientnet-l2': 481_399_996,
}
# Each recipe of the fixtures, and the augmentation name that selects it
# here.
RECIPE_AUGNAMES = {'v2': 'none', 'v1': 'effnetv1', 'ft': 'ft'}
# The fixtures' sizes for each recipe.
RECIPE_SIZES = {'v2': (32, 64, 224, 384), 'v1': (32, 224, 240),
                'ft': (32, 224, 384)}
CLASSIFIER_SCOPES = ('head', 'head_1')


@functools.lru_cache(maxsize=1)
def load_presets() -> Dict[str, Any]:
  """`tests/fixtures/presets.json`; see tools/oracle/preset_fixtures.py."""
  with open(os.path.join(FIXTURES_DIR, 'presets.json')) as f:
    return json.load(f)


@functools.lru_cache(maxsize=None)
def load(name: str) -> Dict[str, np.ndarray]:
  """All arrays of `tests/fixtures/<name>.npz`."""
  with np.load(os.path.join(FIXTURES_DIR, name + '.npz')) as stored:
    return {key: stored[key] for key in stored.files}


def jpegs() -> List[bytes]:
  """The JPEG files, byte for byte as the original read them."""
  stored = load('preprocessing')
  return [stored[f'jpeg/{i}'].tobytes()
          for i in range(sum(k.startswith('jpeg/') for k in stored))]


def kept_pixels(size: int) -> np.ndarray:
  """The rows and columns of a `size` px output that the fixture holds
  (all of them up to 64 px, a regular grid above)."""
  return load('preprocessing')[f'pixels/{size}']


def preprocessed(recipe: str, size: int, index: int) -> np.ndarray:
  """The original's eval output for JPEG `index`: [rows, columns, 3] at
  `kept_pixels(size)`; compare with `output[np.ix_(kept, kept)]`."""
  return load('preprocessing')[f'{recipe}/{size}/{index}']


def model_config(model_name: str) -> Dict[str, Any]:
  """The overrides of the fixture's tiny model, for `get_model`."""
  return json.loads(str(load('official_checkpoints')[
      f'{model_name}/model_config']))


def official_tensors(model_name: str,
                     classifier_scope: str = 'head') -> Dict[str, np.ndarray]:
  """Every tensor of the checkpoint the original saved for `model_name`
  (weights, their `/ExponentialMovingAverage` shadows and `global_step`),
  with the classifier under `<model_name>/<classifier_scope>/dense/`.

  The published archives say 'head'; the original run in graph mode today
  says 'head_1'.
  """
  if classifier_scope not in CLASSIFIER_SCOPES:
    raise ValueError(f'classifier_scope must be one of {CLASSIFIER_SCOPES}; '
                     f'received: {classifier_scope!r}')
  stored = load('official_checkpoints')
  found = f'{model_name}/{stored[model_name + "/classifier_scope"]}/dense/'
  wanted = f'{model_name}/{classifier_scope}/dense/'
  prefix = model_name + ':'
  tensors = {}
  for key, value in stored.items():
    if key.startswith(prefix):
      name = key[len(prefix):]
      if name.startswith(found):
        name = wanted + name[len(found):]
      # Weights were drawn on the float16 grid and are stored as float16.
      tensors[name] = value.astype(np.float32) if value.dtype == np.float16 \
          else value
  return tensors


def logits(model_name: str, ema: bool = True) -> np.ndarray:
  """The original's logits of `load('official_checkpoints')['images']` with
  the EMA weights (or, with `ema=False`, the raw ones)."""
  return load('official_checkpoints')[
      f'{model_name}/logits' + ('' if ema else '_raw')]


def end_to_end(model_name: str, weights: str) -> Dict[str, Any]:
  """The original's log-probabilities of `jpegs()` after its eval
  preprocessing: {'log_probs': [images, classes], 'augname': the recipe's
  augmentation name here, 'image_size': int}. The model's weights are
  `official_tensors(model_name)`, whatever `weights` it stands for."""
  stored = load('official_checkpoints')
  sha1 = [hashlib.sha1(jpeg).hexdigest() for jpeg in jpegs()]
  if sha1 != list(stored['end_to_end/jpeg_sha1']):
    raise ValueError('official_checkpoints.npz scored other JPEGs than '
                     'those of preprocessing.npz; write both again')
  key = f'end_to_end/{model_name}/{weights}'
  return {'log_probs': stored[key + '/log_probs'],
          'augname': RECIPE_AUGNAMES[str(stored[key + '/recipe'])],
          'image_size': int(stored[key + '/image_size'])}


def write_checkpoint(prefix: str, tensors: Mapping[str, np.ndarray],
                     global_step: int = 0) -> str:
  """Writes `tensors` ({name: array}) as a TF1 name-based checkpoint with a
  `tf.compat.v1.train.Saver`; returns its prefix, `<prefix>-<global_step>`.

  Beside `<prefix>-<global_step>.index` and `.data-00000-of-00001` the
  Saver writes a `checkpoint` state file naming it, as TF1 training did.
  """
  with tf.Graph().as_default():
    variables = {name: tf.compat.v1.Variable(value, name=f'v{i}')
                 for i, (name, value) in enumerate(sorted(tensors.items()))}
    saver = tf.compat.v1.train.Saver(variables, save_relative_paths=True)
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      return saver.save(sess, prefix, global_step=global_step,
                        write_meta_graph=False)


def write_official_checkpoint(directory: str, model_name: str,
                              classifier_scope: str = 'head') -> str:
  """The fixture checkpoint of `model_name`, written to
  `<directory>/model.ckpt-<step>`; returns that prefix."""
  tensors = official_tensors(model_name, classifier_scope)
  os.makedirs(directory, exist_ok=True)
  return write_checkpoint(os.path.join(directory, 'model.ckpt'), tensors,
                          int(tensors['global_step']))


def pack_archive(directory: str, path: str) -> str:
  """Packs a checkpoint directory into the `.tgz` (or `.tar.gz`) archive
  `path`, as the published ones are packed: one folder named like the
  archive (`efficientnetv2-b0.tgz` holds `efficientnetv2-b0/`) holding
  `model.ckpt-NNN.*` and `checkpoint`. Returns `path`.

  To serve it as named weights through the real download path, with no
  network, set `$EFFICIENTNETV2_TF_CACHE` to a temporary directory and pack
  the archive at `official.archive_path(model_name, tag)`, i.e.
  `$EFFICIENTNETV2_TF_CACHE/efficientnetv2_tf/<the URL's basename>`:
  `keras.utils.get_file` finds it there, skips the download and unpacks it.

      monkeypatch.setenv(official.CACHE_ENV, str(tmp_path / 'cache'))
      directory = str(tmp_path / 'ckpt')
      write_official_checkpoint(directory, 'efficientnetv2-b0')
      archive = official.archive_path('efficientnetv2-b0', 'imagenet')
      os.makedirs(os.path.dirname(archive), exist_ok=True)
      pack_archive(directory, archive)
      get_model('efficientnetv2-b0', model_config('efficientnetv2-b0'),
                weights='imagenet')
  """
  folder = os.path.basename(str(path)).split('.')[0]
  with tarfile.open(path, 'w:gz') as tar:
    for name in sorted(os.listdir(directory)):
      tar.add(os.path.join(directory, name), arcname=f'{folder}/{name}')
  return str(path)
