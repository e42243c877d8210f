"""Writes `tests/fixtures/augment_ops.npz`: the original's image ops and
cutmix, run on small deterministic inputs.

    python tools/oracle/augment_fixtures.py \
        --automl_dir=/tmp/automl/efficientnetv2

takes about 30 s on two CPU cores and writes 0.4 MB. The original's
`datasets.py`, which holds cutmix, imports `tensorflow_datasets`.

Each op gets its arguments from the original's own level-to-argument table
with RandAugment's constants (translate 100 pixels, cutout 40 at level 10)
and the grey fill 128, at every integer magnitude 0..25. The geometric ops
negate their argument at random; here each runs with both signs.

Arrays in the file:
- `image`: the [24, 40, 3] uint8 input (see `fixture_image`).
- one per photometric op, e.g. `Solarize`: [26, 24, 40, 3], the output at
  magnitude m in row m.
- one per geometric op, e.g. `Rotate`: [2, 26, 24, 40, 3]; row 0 with the
  argument as the table gives it, row 1 negated.
- `cutmix_images` [6, 12, 12, 3] and `cutmix_labels` [6, 6] (one-hot), the
  masks of the original's `cutmix_mask` (alpha 1) as `cutmix_masks`
  [6, 12, 12], and what the original's `cutmix` made of them:
  `cutmix_mixed_images`, `cutmix_mixed_labels`.
"""
import sys

import numpy as np

import original

PHOTOMETRIC_OPS = ('AutoContrast', 'Equalize', 'Invert', 'Posterize',
                   'Solarize', 'SolarizeAdd', 'Color', 'Contrast',
                   'Brightness', 'Sharpness')
GEOMETRIC_OPS = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')
MAGNITUDES = range(26)
REPLACE = [128, 128, 128]
CUTMIX_BATCH, CUTMIX_SIZE = 6, 12


def fixture_image() -> np.ndarray:
  """A [24, 40, 3] uint8 image that exercises every op.

  Red holds every grey level 0..255 (each 3 or 4 times) in random places;
  green is a smooth ramp over 40..200, so AutoContrast stretches it; blue
  is noise skewed towards dark values, so Equalize spreads it.
  """
  height, width = 24, 40
  rng = np.random.default_rng(2021)
  red = rng.permutation(np.arange(height * width) % 256)
  green = 40 + np.arange(height * width) * 160 // (height * width - 1)
  blue = rng.random(height * width) ** 2 * 255
  channels = [c.reshape(height, width) for c in (red, green, blue)]
  return np.stack(channels, -1).astype(np.uint8)


def cutmix_inputs():
  """Image i is filled with 10 * (i + 1); label i is class i."""
  fill = 10.0 * np.arange(1, CUTMIX_BATCH + 1, dtype=np.float32)
  images = np.broadcast_to(fill[:, None, None, None],
                           (CUTMIX_BATCH, CUTMIX_SIZE, CUTMIX_SIZE, 3))
  return images.copy(), np.eye(CUTMIX_BATCH, dtype=np.float32)


def op_graphs(tf, autoaugment, hparams, image):
  """The original's op outputs, as graph tensors keyed by op name."""
  # pylint: disable=protected-access
  consts = hparams.Config(cutout_const=40, translate_const=100)

  def output(name, magnitude):
    func, _, args = autoaugment._parse_policy_info(
        name, 1.0, float(magnitude), REPLACE, consts)
    return func(image, *args)

  outputs = {name: tf.stack([output(name, m) for m in MAGNITUDES])
             for name in PHOTOMETRIC_OPS}
  by_sign = {name: [] for name in GEOMETRIC_OPS}
  for negate in (False, True):
    # The table negates each geometric argument with probability 1/2
    # through this helper; fixing its choice gives each sign in turn.
    autoaugment._randomly_negate_tensor = (
        lambda arg, negate=negate: -tf.convert_to_tensor(arg) if negate
        else tf.convert_to_tensor(arg))
    for name in GEOMETRIC_OPS:
      by_sign[name].append(tf.stack([output(name, m) for m in MAGNITUDES]))
  outputs.update({name: tf.stack(signs) for name, signs in by_sign.items()})
  return outputs


def cutmix_graphs(tf, datasets):
  """The original's cutmix on `cutmix_inputs`, with its own masks."""
  images, labels = cutmix_inputs()
  masks = tf.stack([
      datasets.ImageNetInput.cutmix_mask(None, 1.0, CUTMIX_SIZE, CUTMIX_SIZE)
      for _ in range(CUTMIX_BATCH)])
  mixed_images, mixed_labels = datasets.ImageNetInput.cutmix(
      None, tf.constant(images), tf.constant(labels), masks)
  return {'cutmix_images': tf.constant(images),
          'cutmix_labels': tf.constant(labels),
          'cutmix_masks': tf.cast(masks[..., 0], tf.bool),
          'cutmix_mixed_images': mixed_images,
          'cutmix_mixed_labels': mixed_labels}


def main() -> None:
  args = original.start(__doc__, 'augment_ops.npz')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import autoaugment  # pylint: disable=g-import-not-at-top
  import datasets  # pylint: disable=g-import-not-at-top
  import hparams  # pylint: disable=g-import-not-at-top

  tf.compat.v1.set_random_seed(2021)
  image = fixture_image()
  graphs = op_graphs(tf, autoaugment, hparams, tf.constant(image))
  graphs.update(cutmix_graphs(tf, datasets))
  with tf.compat.v1.Session() as session:
    arrays = session.run(graphs)
  arrays['image'] = image
  original.save(args, arrays)


if __name__ == '__main__':
  sys.exit(main())
