"""Images per second of training, from the bare step to the whole loop.

Times, in one run and on the same host, for one model, image size and
batch size:

1. `keras.applications`' EfficientNetV2-B0 in a bare `tf.function` step on
   one in-memory batch (the reference; only for efficientnetv2-b0);
2. our model in the same bare step;
3. our training loop (`Trainer`: EMA, weight decay, label smoothing) fed
   by the real input pipeline of the `digits` dataset, resized, through
   `strategy.distribute_datasets_from_function`;
4. the same loop fed by the dataset itself, as `Trainer` does when there
   is one replica.

Each setting runs in a fresh process of its own, since the runtime keeps
state (thread pools, iterators) that would carry over from one setting to
the next. It prints one line per setting with its images/second and its
ratio to the first:

    python bench/training.py --image_size=128 --batch_size=32

Compare ratios, not absolute numbers, across machines.
"""
import os
import platform
import subprocess
import sys
import tempfile
import time

from absl import app
from absl import flags

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import keras  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import datasets  # pylint: disable=g-import-not-at-top
import hparams  # pylint: disable=g-import-not-at-top
from efficientnetv2_tf import distribute  # pylint: disable=g-import-not-at-top
from efficientnetv2_tf import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
from efficientnetv2_tf.model import EfficientNet  # pylint: disable=g-import-not-at-top

flags.DEFINE_string('model_name', 'efficientnetv2-b0', 'Model to time.')
flags.DEFINE_integer('image_size', 128, 'Training image size.')
flags.DEFINE_integer('batch_size', 32, 'Batch size.')
flags.DEFINE_integer('steps', 10, 'Steps timed per setting.')
flags.DEFINE_integer('warmup', 3, 'Steps run before timing (tracing).')
flags.DEFINE_integer('setting', None, 'Internal: time only this setting, '
                     'by index, and print its rate.')
FLAGS = flags.FLAGS

NUM_CLASSES = 10


def _bare_step(model: keras.Model):
  """A step on a fixed batch: forward, backward, RMSProp, nothing else."""
  optimizer = keras.optimizers.RMSprop(1e-3)
  optimizer.build(model.trainable_variables)
  images = tf.random.uniform((FLAGS.batch_size, FLAGS.image_size,
                              FLAGS.image_size, 3), -1.0, 1.0)
  labels = tf.one_hot(tf.range(FLAGS.batch_size) % NUM_CLASSES, NUM_CLASSES)

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_mean(tf.nn.softmax_cross_entropy_with_logits(
          labels, model(images, training=True)))
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return loss
  return lambda: float(step())


def _timed(run_step) -> float:
  for _ in range(FLAGS.warmup):
    run_step()
  started = time.perf_counter()
  for _ in range(FLAGS.steps):
    run_step()
  return FLAGS.steps * FLAGS.batch_size / (time.perf_counter() - started)


def _loop_steps(trainer, distributed: bool):
  """Steps of the trainer's own loop over its training input."""
  stage = trainer.plan.stages[0]
  loop = trainer._train_fn(stage, frozen=False)  # pylint: disable=protected-access
  dataset_fn = trainer.dataset.distribute_fn(
      trainer.cfg.data.train_split, FLAGS.batch_size, training=True,
      image_size=FLAGS.image_size,
      augmentation=stage.augmentation(trainer.augmentation), seed=0)
  batches = (trainer.strategy.distribute_datasets_from_function(dataset_fn)
             if distributed else
             distribute.distribute_input(trainer.strategy, dataset_fn))
  iterator = iter(batches)
  one = tf.constant(1)
  return lambda: float(loop(iterator, one)[0])


def _settings():
  """(name, make_step) pairs; make_step builds everything it times."""
  settings = []
  if FLAGS.model_name == 'efficientnetv2-b0':
    settings.append(('keras.applications bare step', lambda: _bare_step(
        keras.applications.EfficientNetV2B0(
            weights=None, classes=NUM_CLASSES, include_preprocessing=False,
            input_shape=(FLAGS.image_size, FLAGS.image_size, 3)))))
  cfg = hparams.get_config(FLAGS.model_name, 'digits', {
      'train': {'batch_size': FLAGS.batch_size, 'stages': 1, 'epochs': 1,
                'isize': float(FLAGS.image_size)}})
  settings.append(('our model, bare step', lambda: _bare_step(
      EfficientNet.from_model_config(cfg.model, num_classes=NUM_CLASSES))))

  def trainer():
    return trainer_lib.Trainer(cfg, datasets.bind(cfg), tempfile.mkdtemp(),
                               distribute.get_strategy('cpu'))
  settings += [
      ('Trainer loop, distributed input',
       lambda: _loop_steps(trainer(), distributed=True)),
      ('Trainer loop, input as is',
       lambda: _loop_steps(trainer(), distributed=False)),
  ]
  return settings


def main(_):
  settings = _settings()
  if FLAGS.setting is not None:
    print(f'rate {_timed(settings[FLAGS.setting][1]())}')
    return
  print(f'{FLAGS.model_name}, {FLAGS.image_size} px, batch '
        f'{FLAGS.batch_size}, {FLAGS.steps} steps; {platform.machine()}, '
        f'{os.cpu_count()} CPUs, TF {tf.__version__}')
  reference = None
  for index, (name, _) in enumerate(settings):
    output = subprocess.run(
        [sys.executable, __file__, f'--setting={index}'] +
        [f'--{n}={getattr(FLAGS, n)}' for n in (
            'model_name', 'image_size', 'batch_size', 'steps', 'warmup')],
        capture_output=True, text=True, check=False)
    if output.returncode:
      sys.exit(f'{name} failed: {output.stderr.strip().splitlines()[-1]}')
    rate = float(output.stdout.split('rate ')[-1])
    reference = reference or rate
    print(f'{name:34s} {rate:8.1f} images/s  ratio {rate / reference:.2f}',
          flush=True)


if __name__ == '__main__':
  app.run(main)
