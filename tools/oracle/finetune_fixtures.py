"""Writes `tests/fixtures/finetune.npz`: what the original's fine-tuning
recipe hands RandAugment, to test `efficientnetv2_tf.preprocessing` against.

    python tools/oracle/finetune_fixtures.py \
        --automl_dir=/tmp/automl/efficientnetv2

takes about 5 s on two CPU cores and writes about 10 kB.

The original's `preprocess_for_finetune` normalises the pixels to [-1, 1],
resizes and flips them, and, for a policy ('ft_randaug', 'ft_autoaug'),
brings them back to 0-255 and casts them to uint8 for it. Here its
`autoaugment.distort_image` is replaced by one that records that uint8
image and returns it unchanged. Its flip is random: a test takes the
recorded image or its mirror, whichever the package's is.

Keys: `image` (uint8 [24, 24, 3]: every value from 0 to 63 and two
gradients), and `input/<size>` (uint8 [size, size, 3], what RandAugment got
for output size `size`: 24 keeps the size, 20 and 32 resize).
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import original  # pylint: disable=g-import-not-at-top,wrong-import-position

SIZES = (24, 20, 32)


def fixture_image() -> np.ndarray:
  """Dark values, where the round trip loses a level, and a gradient."""
  rows, cols = np.mgrid[0:24, 0:24]
  image = np.stack([(rows * 24 + cols) % 64, rows * 11, cols * 11], -1)
  return image.astype(np.uint8)


def main() -> None:
  args = original.start(__doc__, 'finetune.npz')
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  import autoaugment  # pylint: disable=g-import-not-at-top
  import preprocessing  # pylint: disable=g-import-not-at-top

  recorded = []

  def recording_distort(image, *unused_args):
    recorded.append(image)
    return image

  autoaugment.distort_image = recording_distort
  image = fixture_image()
  for size in SIZES:
    preprocessing.preprocess_image(
        tf.constant(image), size, is_training=True, augname='ft_randaug')
  with tf.compat.v1.Session() as session:
    inputs = session.run(recorded)
  arrays = {f'input/{size}': array for size, array in zip(SIZES, inputs)}
  arrays['image'] = image
  original.save(args, arrays)


if __name__ == '__main__':
  sys.exit(main())
