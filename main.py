"""Command-line entry point: flags, then the config, then one library call.

    python main.py                      # the offline quick start on digits
    python main.py --model_name=efficientnetv2-s --dataset_cfg=cifar10ft \
        --weights=imagenet --model_dir=runs/s-cifar10

    python main.py --mode=export --model_dir=runs/s-cifar10 \
        --export_dir=exports/s-cifar10
    python main.py --mode=predict --model_dir=exports/s-cifar10 \
        --image_path='photos/*.jpg'
    python main.py --mode=benchmark --weights=imagenet --batch_sizes=1,8

`--mode` is train, eval or traineval, or, with a trained model, export,
predict or benchmark: these take the run in `--model_dir` (its latest
checkpoint, or `--checkpoint`), or `--weights` when given. A flag that the
mode does not read gets a one-line warning. The run config is the base
config, then the model preset, the dataset preset, and `--hparam_str`; it is
saved as `<model_dir>/config.yaml`. Rerunning a command resumes from its last
checkpoint.

Bad input ends with a one-line `error: ...` on stderr and exit status 2; a
run that cannot go on (a NaN loss, a lost worker) exits 1 with one such
line; SIGTERM saves and exits 143, on every worker of a cluster.
"""
import importlib.util
import math
import os
import re
import sys
import traceback
from typing import Optional

from absl import app
from absl import flags

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import hparams  # pylint: disable=g-import-not-at-top
from hparams.errors import UserError  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
flags.DEFINE_string('mode', 'traineval',
                    'train, eval, traineval, export, predict or benchmark.')
flags.DEFINE_string('model_name', 'efficientnetv2-b0',
                    'One of efficientnetv2_tf.list_models().')
flags.DEFINE_string('dataset_cfg', 'digits',
                    'Dataset preset, matched case-insensitively.')
flags.register_validator('dataset_cfg', bool,
                         message='must name a dataset preset, e.g. digits')
flags.DEFINE_string('hparam_str', '',
                    "Overrides: 'section.key=value' pairs and YAML files, "
                    'comma-separated, later ones winning.')
flags.DEFINE_string('sweeps', None,
                    "Runs every combination, e.g. 'train.epochs=20|40,"
                    "model.dropout_rate=0.2|0.5', each in a sub-directory.")
flags.DEFINE_string('data_dir', None,
                    'Where the dataset is (or tfds puts it); overrides '
                    'data.data_dir.')
flags.DEFINE_string('dataset_module', None,
                    'A Python file to import first, e.g. one that defines a '
                    'Dataset subclass.')
flags.DEFINE_string('model_dir', None,
                    'Where checkpoints, metrics and results go; default '
                    'runs/<model_name>-<dataset_cfg>.')
flags.DEFINE_string('weights', None,
                    "Initial weights (sets train.ft_init_ckpt): 'imagenet', "
                    "'imagenet21k', 'imagenet21k-ft1k', 'jft' or a path.")
flags.DEFINE_string('strategy', None,
                    'cpu, gpu, gpus (MirroredStrategy), multi_worker '
                    '(from TF_CONFIG) or tpu; default: tpu if --tpu is '
                    'given, else gpu if present, else cpu.')
flags.DEFINE_string('tpu', None, 'TPU name or address, for --strategy=tpu.')
flags.DEFINE_string('tpu_zone', None, 'GCP zone of the TPU.')
flags.DEFINE_string('gcp_project', None, 'GCP project of the TPU.')
flags.DEFINE_float('eval_timeout', 0.0,
                   '--mode=eval: seconds to wait for each new checkpoint; '
                   '0 evaluates the latest one and stops.')
flags.register_validator(
    'eval_timeout', lambda v: math.isfinite(v) and v >= 0,
    message='must be a finite number of seconds >= 0')

flags.DEFINE_string('checkpoint', None,
                    'export/predict/benchmark: a checkpoint of the run '
                    "('ckpt-500' or a path); default: the latest.")
flags.DEFINE_string('export_dir', None,
                    'export: where to write; default <model_dir>/export. '
                    'predict: an export to use instead of --model_dir.')
flags.DEFINE_bool('overwrite', False,
                  'export: replace a non-empty --export_dir.')
flags.DEFINE_string('tflite_quantization', 'none',
                    'export: none, dynamic (int8 weights), float16, or int8 '
                    "(integer weights and activations, calibrated on the "
                    "run's training split or --calibration_dir).")
flags.DEFINE_string('calibration_dir', None,
                    'export with --tflite_quantization=int8: images (a '
                    'directory or a glob) like those the model will see, '
                    "instead of the run's training split; up to 200 are "
                    'used. Needed with --weights.')
flags.DEFINE_string('onnx_precision', 'fp32',
                    'export: model.onnx in fp32 or fp16 (float32 input and '
                    'output either way); none leaves it out.')
flags.DEFINE_string('runtime', None,
                    'predict: tf, onnxruntime or litert (the last two run an '
                    "export's model.onnx or model.tflite); default: tf, or "
                    'what runs the .onnx or .tflite file given as '
                    "--model_dir. benchmark: one or more, comma-separated, "
                    "e.g. 'tf,onnxruntime,litert'; default: tf.")
flags.DEFINE_string('image_path', None,
                    'predict: an image, a directory or a glob.')
flags.DEFINE_integer('top_k', 5, 'predict: how many classes per image.')
flags.DEFINE_string('predictions_file', 'predictions.json',
                    'predict: where to write the JSON predictions.')
flags.DEFINE_string('batch_sizes', '1,8,32',
                    'benchmark: comma-separated batch sizes.')
flags.DEFINE_integer('image_size', None,
                     'benchmark: image size; default the eval size.')
flags.DEFINE_integer('benchmark_iterations', 20,
                     'benchmark: timed calls per batch size.')
flags.DEFINE_bool('jit_compile', False,
                  "benchmark: compile the 'tf' runtime with XLA.")


# Library errors name their arguments; these are the flags that set them.
FLAG_OF_ARGUMENT = {
    'data_dir': '--data_dir', 'eval_timeout': '--eval_timeout',
    'export_dir': '--export_dir', 'image_path': '--image_path',
    'model_dir': '--model_dir', 'overwrite=True': '--overwrite',
    'top_k': '--top_k', 'runtime': '--runtime',
    'batch_sizes': '--batch_sizes', 'image_size': '--image_size',
    'iterations': '--benchmark_iterations',
    'onnx_precision': '--onnx_precision',
    'calibration_images': '--calibration_dir',
    "quantization='int8'": '--tflite_quantization=int8',
}
_ARGUMENT = re.compile(r'(?<![\w./\-])(' + '|'.join(
    re.escape(name) for name in FLAG_OF_ARGUMENT) + r')(?![\w])')
# A value quoted by repr: an apostrophe inside a word ("run's") is not one,
# nor one after '=' (as in quantization='int8').
_QUOTED = re.compile(r"((?<![\w=])'[^']*'(?!\w))")


def in_flags(message: str) -> str:
  """`message` with the argument names it quotes written as flags.

  >>> in_flags("image_path '/x' matches no image file; see data.data_dir")
  "--image_path '/x' matches no image file; see data.data_dir"
  """
  def named(text):
    return _ARGUMENT.sub(lambda m: FLAG_OF_ARGUMENT[m.group(1)], text)
  # Odd parts are quoted values ('/photos/top_k'): the user's, left as given.
  parts = _QUOTED.split(message)
  return ''.join(part if i % 2 else named(part)
                 for i, part in enumerate(parts))


def import_file(path: str) -> None:
  """Runs the Python file `path`; its faults are one line naming it."""
  if not os.path.isfile(path) or not path.endswith('.py'):
    raise UserError(f'--dataset_module {path!r} is not a Python file (.py)')
  spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  try:
    spec.loader.exec_module(importlib.util.module_from_spec(spec))
  except (Exception, SystemExit) as e:  # pylint: disable=broad-except
    # The file's last line that ran (a SyntaxError names its own).
    lines = [frame.lineno for frame in traceback.extract_tb(e.__traceback__)
             if os.path.abspath(frame.filename) == os.path.abspath(path)]
    where = f' at line {lines[-1]}' if lines else ''
    raise UserError(f'--dataset_module {path!r} failed{where}: '
                    f'{type(e).__name__}: {e}') from None


def data_error(error: BaseException) -> Optional[str]:
  """The line of a failed label check of the input pipeline, if `error` is
  one (TensorFlow raises it from inside the traced step)."""
  from datasets.subsets import BAD_LABEL  # pylint: disable=g-import-not-at-top
  from efficientnetv2_tf import predict  # pylint: disable=g-import-not-at-top
  found = re.search(r'assertion failed: (.*' + BAD_LABEL + r'.*)',
                    predict.reason(error))
  return re.sub(r'[\[\]]', '', found.group(1)) if found else None


def parse_flags(argv):
  """absl's flag parsing, whose errors end the run in one line, status 2."""
  try:
    args = FLAGS(argv)
  except flags.Error as e:
    print(f'error: {" ".join(str(e).split())}', file=sys.stderr)
    sys.exit(2)
  if len(args) > 1:
    print(f'error: unexpected arguments {" ".join(args[1:])!r}; every '
          'option is a --flag (see --helpshort)', file=sys.stderr)
    sys.exit(2)
  return args


def warn_ignored(name: str, by: str, why: str) -> None:
  """One warning line when flag `name`, which `by` does not read, was
  given."""
  if FLAGS[name].present:
    print(f'warning: --{name} is ignored by {by} ({why})', file=sys.stderr)


def make_config(extra=None, model_dir: Optional[str] = None):
  """The run config from the flags, then `extra`. `--mode=eval` of a run
  already in `model_dir` starts from the config.yaml it trained with, so
  that it evaluates as the run did; `--hparam_str` still applies on top."""
  from efficientnetv2_tf.run_dir import RunDir  # pylint: disable=g-import-not-at-top
  saved = RunDir(model_dir) if FLAGS.mode == 'eval' and model_dir else None
  if saved and saved.exists():
    # The run's own train.ft_init_ckpt may set its normalisation.
    named = ('weights',) + (('model_name', 'dataset_cfg')
                            if FLAGS.model_dir else ())
    for name in named:
      warn_ignored(name, f'--mode=eval of the run in {model_dir!r}',
                   "it evaluates with the run's config.yaml")
    return saved.load_config(FLAGS.hparam_str, extra)
  cfg = hparams.get_config(FLAGS.model_name, FLAGS.dataset_cfg,
                           FLAGS.hparam_str, extra)
  if FLAGS.weights:
    cfg.train.ft_init_ckpt = FLAGS.weights
  return cfg


def _model_keys() -> dict:
  """The model keys of --hparam_str, for building published weights' model
  (a run's own config.yaml says how its model was built)."""
  return {key.split('.', 1)[1]: value for key, value in
          hparams.as_mapping(FLAGS.hparam_str).items()
          if key.startswith('model.')}


def run_inference(model_dir: str) -> None:
  from app import inference  # pylint: disable=g-import-not-at-top
  if FLAGS.mode == 'predict':
    if not FLAGS.image_path:
      raise UserError('--mode=predict needs --image_path (an image, a '
                      'directory or a glob)')
    source = FLAGS.export_dir or model_dir
    if FLAGS.weights or FLAGS.checkpoint:
      source = inference.load_source(
          model_dir, FLAGS.model_name, FLAGS.weights, FLAGS.checkpoint,
          model_config=_model_keys())
    inference.run_predict(source, FLAGS.image_path, FLAGS.top_k,
                          FLAGS.predictions_file, FLAGS.runtime)
    return
  onnx_precision = (None if FLAGS.onnx_precision == 'none'
                    else FLAGS.onnx_precision)
  # Bad options are refused before the model is loaded, which takes a while.
  if FLAGS.mode == 'export':
    from efficientnetv2_tf import export  # pylint: disable=g-import-not-at-top
    export_dir = FLAGS.export_dir or os.path.join(model_dir, 'export')
    # pylint: disable-next=g-import-not-at-top
    from efficientnetv2_tf import onnx_export
    if FLAGS.onnx_precision not in (*onnx_export.PRECISIONS, 'none'):
      raise UserError(f'--onnx_precision must be one of '
                      f'{", ".join(onnx_export.PRECISIONS)} or none; '
                      f'received: {FLAGS.onnx_precision!r}')
    export.check_options(export_dir, FLAGS.overwrite,
                         FLAGS.tflite_quantization, onnx_precision or 'fp32')
    run = export.weights_run(FLAGS.weights) if FLAGS.weights else None
    if run:  # a training run's weights calibrate on its training split
      model_dir = run[0]
    elif (FLAGS.tflite_quantization == 'int8' and FLAGS.weights and
          not FLAGS.calibration_dir):
      raise UserError('--tflite_quantization=int8 with --weights needs '
                      '--calibration_dir: images like those the model will '
                      'see, to calibrate it (a run calibrates on its own '
                      'training split)')
  else:
    from efficientnetv2_tf import benchmark  # pylint: disable=g-import-not-at-top
    benchmark.parse_batch_sizes(FLAGS.batch_sizes)
    inference.parse_runtimes(FLAGS.runtime or 'tf')
  source = inference.load_source(model_dir, FLAGS.model_name, FLAGS.weights,
                                 FLAGS.checkpoint, _model_keys())
  if FLAGS.mode == 'export':
    export_mode(inference, source, model_dir, export_dir, onnx_precision)
  else:
    inference.run_benchmark(source, FLAGS.image_size, FLAGS.batch_sizes,
                            FLAGS.benchmark_iterations, FLAGS.jit_compile,
                            FLAGS.runtime or 'tf')


def export_mode(inference, source, model_dir: str, export_dir: str,
                onnx_precision: Optional[str]) -> None:
  """--mode=export. An int8 model.tflite of a run is calibrated on its
  training split and reported on its eval split, unless --calibration_dir
  is given."""
  calibration, labelled = None, None
  if FLAGS.tflite_quantization == 'int8':
    if FLAGS.calibration_dir:
      calibration = inference.calibration_images(FLAGS.calibration_dir,
                                                 source.contract)
    else:
      calibration, labelled = inference.run_images(
          model_dir, FLAGS.data_dir, source.contract)
  inference.run_export(source, export_dir, FLAGS.overwrite,
                       FLAGS.tflite_quantization, onnx_precision, calibration)
  if labelled:
    report = inference.int8_report(export_dir, source, *labelled)
    print(f'int8 model.tflite: top-1 {report.accuracy:.4f} against '
          f'{report.reference_accuracy:.4f} in float on the '
          f'{report.images} eval images (top-1 agreement '
          f'{report.top1_agreement:.4f})')


# The flags only some modes read, and those modes.
_TRAINING = ('train', 'eval', 'traineval')
MODES_OF_FLAG = {
    'eval_timeout': ('eval',), 'sweeps': _TRAINING,
    **dict.fromkeys(('strategy', 'tpu', 'tpu_zone', 'gcp_project'),
                    _TRAINING),
    'data_dir': (*_TRAINING, 'export'),
    'checkpoint': ('export', 'predict', 'benchmark'),
    'export_dir': ('export', 'predict'),
    **dict.fromkeys(('overwrite', 'tflite_quantization', 'calibration_dir',
                     'onnx_precision'), ('export',)),
    'runtime': ('predict', 'benchmark'),
    **dict.fromkeys(('image_path', 'top_k', 'predictions_file'),
                    ('predict',)),
    **dict.fromkeys(('batch_sizes', 'image_size', 'benchmark_iterations',
                     'jit_compile'), ('benchmark',)),
}


def check_flag_use(mode: str) -> None:
  """Refuses flags that contradict each other; warns, in one line each,
  of flags that `mode` does not read."""
  if FLAGS.checkpoint and FLAGS.weights:
    raise UserError(f'--checkpoint {FLAGS.checkpoint!r} picks a checkpoint '
                    'of the run in --model_dir; --weights loads published '
                    'or given weights instead: pass one of them')
  for name in ('checkpoint', 'weights'):
    if FLAGS[name].value and FLAGS.export_dir and mode == 'predict':
      raise UserError(f'--{name} {FLAGS[name].value!r} picks the weights to '
                      'predict with; --mode=predict with --export_dir reads '
                      'the export instead: pass one of them')
  warn = lambda name, why: warn_ignored(name, f'--mode={mode}', why)
  for name, modes in MODES_OF_FLAG.items():
    if mode not in modes:
      warn(name, f'it is read by --mode={" and --mode=".join(modes)}')
  if mode in _TRAINING:
    return
  # Without --model_dir, --model_name and --dataset_cfg name its default.
  if FLAGS.weights:
    from efficientnetv2_tf import export  # pylint: disable=g-import-not-at-top
    if FLAGS.model_dir or mode != 'export':
      warn('dataset_cfg', 'the weights carry their classes')
    if export.weights_run(FLAGS.weights):
      for name in ('model_name', 'hparam_str'):
        warn(name, 'the run the weights come from has its own config')
    elif any(not key.startswith('model.') for key in
           hparams.as_mapping(FLAGS.hparam_str)):
      warn('hparam_str', 'with --weights, only its model.* keys are read')
  elif FLAGS.model_dir or (mode == 'predict' and FLAGS.export_dir):
    for name in ('model_name', 'dataset_cfg', 'hparam_str'):
      warn(name, 'the model it reads comes with its own config')
  else:
    warn('hparam_str', 'the model it reads comes with its own config')


def run() -> None:
  from efficientnetv2_tf import distribute  # pylint: disable=g-import-not-at-top
  from app import runs  # pylint: disable=g-import-not-at-top
  runs.check_mode(FLAGS.mode)
  check_flag_use(FLAGS.mode)
  model_dir = FLAGS.model_dir or os.path.join(
      'runs', f'{FLAGS.model_name}-{FLAGS.dataset_cfg}')
  # Datasets register their default recipes, which --dataset_cfg may name;
  # an int8 export calibrates on its run's dataset.
  import datasets  # pylint: disable=g-import-not-at-top
  if FLAGS.dataset_module:
    import_file(FLAGS.dataset_module)
  if FLAGS.mode in runs.INFERENCE_MODES:
    run_inference(model_dir)
    return
  cfg = make_config(None, model_dir)  # bad flags fail before any TF op
  # The strategy comes first: multi-worker collectives must be set up
  # before any other TensorFlow op runs.
  strategy = distribute.get_strategy(FLAGS.strategy, FLAGS.tpu,
                                     FLAGS.tpu_zone, FLAGS.gcp_project)
  bind = lambda config: datasets.bind(config, FLAGS.data_dir)
  if FLAGS.sweeps:
    def sweep_config(combination):
      return make_config(combination, os.path.join(
          model_dir, runs.sweep_name(combination)))
    runs.run_sweep(FLAGS.mode, sweep_config, bind, model_dir, strategy,
                   FLAGS.sweeps, FLAGS.eval_timeout)
  else:
    runs.run(FLAGS.mode, cfg, bind, model_dir, strategy, FLAGS.eval_timeout)


def main(argv) -> None:
  del argv  # parse_flags refuses positional arguments
  from efficientnetv2_tf import train_state  # pylint: disable=g-import-not-at-top
  try:
    run()
  except UserError as e:
    print(f'error: {in_flags(str(e))}', file=sys.stderr)
    sys.exit(2)
  except OSError as e:
    detail = f'{e.strerror}: {e.filename}' if e.strerror else str(e)
    print(f'error: {detail}', file=sys.stderr)
    sys.exit(2)
  except train_state.TrainingError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(1)
  except train_state.Preempted as e:
    print(str(e), file=sys.stderr)
    sys.exit(143)
  except Exception as e:  # pylint: disable=broad-except
    line = data_error(e)
    if line is None:
      raise
    print(f'error: {line}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main, flags_parser=parse_flags)
