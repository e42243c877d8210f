"""Images per second of the training input pipeline alone.

Writes a folder of JPEGs of mixed sizes (or reads `--folder`), then times
`ImageFolder.pipeline` in training mode, decode and augmentation included,
for several settings in one run, and prints one line per setting with its
throughput and its ratio to the first setting:

    python bench/pipeline.py --images=512 --image_size=224 --batch_size=64

Compare ratios, not absolute numbers, across machines.
"""
import os
import platform
import sys
import tempfile
import time

from absl import app
from absl import flags

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import tensorflow as tf  # pylint: disable=g-import-not-at-top

import datasets  # pylint: disable=g-import-not-at-top
from common import write_jpegs  # pylint: disable=g-import-not-at-top
from efficientnetv2_tf.preprocessing import Augmentation  # pylint: disable=g-import-not-at-top

flags.DEFINE_string('folder', None, 'An image folder to read; default: a '
                    'generated one.')
flags.DEFINE_integer('images', 512, 'How many JPEGs to generate.')
flags.DEFINE_integer('image_size', 224, 'Output image size.')
flags.DEFINE_integer('batch_size', 64, 'Batch size.')
flags.DEFINE_integer('batches', 30, 'Batches timed per setting.')
flags.DEFINE_integer('warmup', 5, 'Batches run before timing.')
FLAGS = flags.FLAGS

SETTINGS = [
    ('crop+flip', dict(augname='none')),
    ('randaug m15', dict(augname='randaug', magnitude=15.0)),
    ('autoaug', dict(augname='autoaug')),
    ('randaug m15 + mixup/cutmix', dict(augname='randaug', magnitude=15.0,
                                        mixup_alpha=0.2, cutmix_alpha=0.2)),
    ('ft (resize, cutout)', dict(augname='ft')),
]


def images_per_second(pipeline: tf.data.Dataset) -> float:
  iterator = iter(pipeline)
  for _ in range(FLAGS.warmup):
    next(iterator)
  start = time.perf_counter()
  for _ in range(FLAGS.batches):
    next(iterator)
  return FLAGS.batches * FLAGS.batch_size / (time.perf_counter() - start)


def main(argv):
  del argv
  with tempfile.TemporaryDirectory() as scratch:
    folder = FLAGS.folder
    if not folder:
      folder = scratch
      write_jpegs(folder, FLAGS.images)
    dataset = datasets.get_dataset('image_folder', folder, cache='none')
    print(f'machine: {platform.machine()}, {os.cpu_count()} cpus; '
          f'tensorflow {tf.__version__}; {dataset.split_size("train")} '
          f'train images from {folder if FLAGS.folder else "generated JPEGs"}'
          f'; size {FLAGS.image_size}, batch {FLAGS.batch_size}')
    first = None
    for name, settings in SETTINGS:
      rate = images_per_second(dataset.pipeline(
          'train', FLAGS.batch_size, training=True,
          image_size=FLAGS.image_size, augmentation=Augmentation(**settings)))
      first = first or rate
      print(f'setting={name!r} images_per_second={rate:.1f} '
            f'ratio={rate / first:.2f}')


if __name__ == '__main__':
  app.run(main)
