"""Writes `tests/fixtures/preprocessing.npz`: the original's eval preprocessing
of a few JPEG files, to test `efficientnetv2_tf.preprocessing` against.

    python tools/oracle/preprocessing_fixtures.py \
        --automl_dir=/tmp/automl/efficientnetv2

takes about 10 s on two CPU cores and writes about 0.75 MB.

The JPEGs are drawn here with Pillow (gradients, shapes and a little
texture; quality 90) and stored byte for byte, so that the tests decode
exactly what the original decoded. Each is run through the original's
`preprocessing.preprocess_image(bytes, size, is_training=False, augname=...)`
for the three eval recipes:

- 'v2' (augname None): centre crop below 320 px, bilinear resize, [-1, 1];
- 'v1' ('effnetv1_autoaug', which goes to `preprocess_legacy`): centre crop,
  TF1 bicubic resize, ImageNet mean/std;
- 'ft' ('ft'): bilinear resize of the whole image, (x / 255 - 0.5) / 0.5.

Keys: `jpeg/<i>` (uint8 bytes), `shape/<i>` ([height, width]),
`<recipe>/<size>/<i>` (float32 output) and `pixels/<size>` (the rows and
columns kept). To stay small, outputs above 64 px keep every 7th row and
column and the last ones (`output[np.ix_(pixels, pixels)]`); smaller ones
are whole (`pixels/<size>` is then `arange(size)`).
"""
import io
import os
import sys

import numpy as np
from PIL import Image
from PIL import ImageDraw

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import original  # pylint: disable=g-import-not-at-top,wrong-import-position

# (height, width): odd and even, portrait and landscape, and one smaller
# than the 32 px outputs.
IMAGE_SHAPES = [(97, 131), (120, 160), (333, 250), (30, 40)]
JPEG_QUALITY = 90
# Recipe: (the original's augname, output sizes).
RECIPES = {
    'v2': (None, [32, 64, 224, 384]),
    'v1': ('effnetv1_autoaug', [32, 224, 240]),
    'ft': ('ft', [32, 224, 384]),
}
WHOLE_UP_TO = 64
GRID_STEP = 7


def draw_jpeg(height: int, width: int, seed: int) -> bytes:
  """A deterministic picture: a colour gradient, a few filled shapes and
  mild noise, encoded as JPEG."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:height, 0:width] / max(height, width)
  slopes = rng.uniform(-200, 200, (2, 3))
  base = rng.uniform(40, 215, 3)
  pixels = base + y[..., None] * slopes[0] + x[..., None] * slopes[1]
  picture = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
  draw = ImageDraw.Draw(picture)
  for _ in range(5):
    x0, x1 = sorted(rng.integers(0, width, 2))
    y0, y1 = sorted(rng.integers(0, height, 2))
    colour = tuple(int(c) for c in rng.integers(0, 256, 3))
    shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
    shape([x0, y0, x1 + 1, y1 + 1], fill=colour)
  noisy = np.asarray(picture, np.float32) + rng.normal(0, 6, (height, width,
                                                              3))
  picture = Image.fromarray(np.clip(noisy, 0, 255).round().astype(np.uint8))
  buffer = io.BytesIO()
  picture.save(buffer, format='JPEG', quality=JPEG_QUALITY)
  return buffer.getvalue()


def kept_pixels(size: int) -> np.ndarray:
  """The rows (and columns) of a `size` px output that the fixture keeps."""
  if size <= WHOLE_UP_TO:
    return np.arange(size)
  return np.unique(np.r_[np.arange(0, size, GRID_STEP), size - 1])


def run_original(jpegs, tf, preprocessing):
  """{key: output} of every recipe, size and image, in one TF1 session."""
  data = tf.compat.v1.placeholder(tf.string, [])
  outputs = {}
  for recipe, (augname, sizes) in RECIPES.items():
    for size in sizes:
      outputs[f'{recipe}/{size}'] = preprocessing.preprocess_image(
          data, size, is_training=False, augname=augname)
  fixtures = {}
  with tf.compat.v1.Session() as sess:
    for index, jpeg in enumerate(jpegs):
      values = sess.run(outputs, {data: jpeg})
      for key, value in values.items():
        rows = kept_pixels(value.shape[0])
        fixtures[f'{key}/{index}'] = value[np.ix_(rows, rows)].astype(
            np.float32)
  return fixtures


def main() -> None:
  args = original.start(__doc__, 'preprocessing.npz')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import preprocessing  # pylint: disable=g-import-not-at-top

  jpegs = [draw_jpeg(h, w, seed) for seed, (h, w) in enumerate(IMAGE_SHAPES)]
  fixtures = run_original(jpegs, tf, preprocessing)
  for index, (jpeg, shape) in enumerate(zip(jpegs, IMAGE_SHAPES)):
    fixtures[f'jpeg/{index}'] = np.frombuffer(jpeg, np.uint8)
    fixtures[f'shape/{index}'] = np.array(shape, np.int32)
  for size in sorted({s for _, sizes in RECIPES.values() for s in sizes}):
    fixtures[f'pixels/{size}'] = kept_pixels(size)
  original.save(args, fixtures)


if __name__ == '__main__':
  main()
