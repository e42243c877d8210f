"""Imports google/automl's `efficientnetv2/` code so it can serve as an oracle.

The fixture scripts beside this module run the original code and save what
it computes as small `.npz` files under `tests/fixtures/`. The package and
the tests never import the original; only these scripts do.

How the original runs on today's TensorFlow:
- with `tf_keras` (`TF_USE_LEGACY_KERAS=1`, set before TensorFlow loads),
- in TF1 graph mode (`tf.compat.v1.disable_eager_execution()`),
- with a stand-in for the retired `tensorflow_addons` package: its
  `layers.GroupNormalization` is `tf_keras`'s, and its `image.rotate`,
  `translate` and `transform` are built here on
  `tf.raw_ops.ImageProjectiveTransformV3` (what `tensorflow_addons` called),
  with the same defaults: nearest interpolation, constant 0 fill.

Get the original once (the scripts fetch nothing themselves):

    git clone https://github.com/google/automl /tmp/automl
    git -C /tmp/automl checkout 6a54c87   # the commit the fixtures came from

and pass `--automl_dir=/tmp/automl/efficientnetv2` to a fixture script.
"""
import argparse
import json
import os
import sys
import time
import types
from typing import Callable, Optional

os.environ['TF_USE_LEGACY_KERAS'] = '1'

import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
import tf_keras  # pylint: disable=g-import-not-at-top

ORIGINAL_COMMIT = '6a54c87'
FIXTURES_DIR = os.path.normpath(os.path.join(
    os.path.dirname(os.path.abspath(__file__)), '..', '..', 'tests',
    'fixtures'))


def _flat_transforms(transforms):
  transforms = tf.convert_to_tensor(transforms, tf.float32)
  return transforms[None] if transforms.shape.rank == 1 else transforms


def _transform(images, transforms, interpolation='nearest', fill_value=0.0,
               output_shape=None, **unused):
  """`tfa.image.transform` for one [h, w, c] or a batch of images."""
  images = tf.convert_to_tensor(images)
  single = images.shape.rank == 3
  batch = images[None] if single else images
  shape = tf.shape(batch)[1:3] if output_shape is None else output_shape
  out = tf.raw_ops.ImageProjectiveTransformV3(
      images=batch, transforms=_flat_transforms(transforms),
      output_shape=tf.cast(shape, tf.int32),
      fill_value=tf.cast(fill_value, tf.float32),
      interpolation=interpolation.upper(), fill_mode='CONSTANT')
  return out[0] if single else out


def _rotation_transform(angles, height, width):
  """The projective transform that rotates by `angles` radians about the
  image centre, as `tfa.image.angles_to_projective_transforms` gives it."""
  angles = tf.convert_to_tensor(angles, tf.float32)
  height, width = tf.cast(height, tf.float32), tf.cast(width, tf.float32)
  cos, sin = tf.math.cos(angles), tf.math.sin(angles)
  x_offset = ((width - 1) - (cos * (width - 1) - sin * (height - 1))) / 2.0
  y_offset = ((height - 1) - (sin * (width - 1) + cos * (height - 1))) / 2.0
  return tf.stack([cos, -sin, x_offset, sin, cos, y_offset, 0.0, 0.0])


def _rotate(images, angles, interpolation='nearest', fill_value=0.0, **unused):
  images = tf.convert_to_tensor(images)
  shape = tf.shape(images)
  height, width = (shape[0], shape[1]) if images.shape.rank == 3 else (
      shape[1], shape[2])
  return _transform(images, _rotation_transform(angles, height, width),
                    interpolation, fill_value)


def _translate(images, translations, interpolation='nearest', fill_value=0.0,
               **unused):
  dx, dy = tf.unstack(tf.cast(translations, tf.float32))
  return _transform(images, [1.0, 0.0, -dx, 0.0, 1.0, -dy, 0.0, 0.0],
                    interpolation, fill_value)


def install_addons_stub() -> None:
  """Puts a minimal `tensorflow_addons` into `sys.modules`."""
  addons = types.ModuleType('tensorflow_addons')
  addons.layers = types.ModuleType('tensorflow_addons.layers')
  addons.layers.GroupNormalization = tf_keras.layers.GroupNormalization
  addons.image = types.ModuleType('tensorflow_addons.image')
  addons.image.transform = _transform
  addons.image.rotate = _rotate
  addons.image.translate = _translate
  sys.modules.update({'tensorflow_addons': addons,
                      'tensorflow_addons.layers': addons.layers,
                      'tensorflow_addons.image': addons.image})


def start(doc: str, fixture: str,
          configure: Optional[Callable[[argparse.ArgumentParser], None]]
          = None) -> argparse.Namespace:
  """A fixture script's flags, parsed, with the original loaded.

  Every script takes `--automl_dir` and `--output`, which defaults to
  `tests/fixtures/<fixture>`; `configure` adds its own. The namespace's
  `started` is when the script began, for `save` to report.
  """
  started = time.time()
  parser = argparse.ArgumentParser(description=doc.split('\n')[0])
  parser.add_argument('--automl_dir', required=True,
                      help='the efficientnetv2/ folder of google/automl at '
                      f'commit {ORIGINAL_COMMIT}')
  parser.add_argument('--output', default=os.path.join(FIXTURES_DIR, fixture))
  if configure:
    configure(parser)
  args = parser.parse_args()
  args.started = started
  load(args.automl_dir)
  return args


def save(args: argparse.Namespace, arrays) -> None:
  """Writes a fixture file to `args.output` and says how large it is and
  how long the script took."""
  path = args.output
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  if path.endswith('.json'):
    with open(path, 'w') as f:
      json.dump(arrays, f, separators=(',', ':'), sort_keys=True)
  else:
    np.savez_compressed(path, **arrays)
  print(f'wrote {len(arrays)} entries to {path} '
        f'({os.path.getsize(path) / 1e3:.0f} kB) in '
        f'{time.time() - args.started:.0f} s')


def load(automl_dir: str) -> None:
  """Makes the original's modules importable, in TF1 graph mode."""
  if not os.path.isfile(os.path.join(automl_dir, 'effnetv2_model.py')):
    raise SystemExit(f'{automl_dir!r} is not the efficientnetv2 folder of a '
                     'google/automl checkout (no effnetv2_model.py)')
  install_addons_stub()
  tf.compat.v1.disable_eager_execution()
  sys.path.insert(0, automl_dir)


