"""main.py as a user runs it: a subprocess, its output and its exit code."""
import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
import tensorflow as tf
import yaml

from app import inference
from efficientnetv2_tf import progressive
from efficientnetv2_tf import quantize
from efficientnetv2_tf.model import EfficientNet
from efficientnetv2_tf.run_dir import RunDir
import main
from tests import conftest
from tests import image_files

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args):
  return subprocess.run([sys.executable, 'main.py', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


TINY_RUN = ('model.width_coefficient=0.25,model.depth_coefficient=0.2,'
            'train.epochs=2,data.per_class=8,train.batch_size=16,'
            'eval.batch_size=120')


@pytest.fixture(scope='module')
def quick_start(tmp_path_factory):
  """The quick start at a tiny size: its output and its run directory. Its
  90 images make epochs of 5.625 steps: 2 take 11 steps, the last one in
  an epoch of its own, and its 3 stages start inside epochs."""
  run_dir = tmp_path_factory.mktemp('quick_start')
  result = run_main(f'--hparam_str={TINY_RUN},data.per_class=9,'
                    'train.stages=3', f'--model_dir={run_dir}')
  return result, run_dir


def test_quick_start_trains_evaluates_and_says_where_everything_went(
    quick_start):
  result, tmp_path = quick_start
  assert result.returncode == 0, result.stderr
  assert ('digits: 10 classes, 90 training images; 11 steps of batch 16 in '
          '3 stage(s)') in result.stdout
  # Each stage and evaluation on a line of its own, not after the part of
  # an epoch's progress bar that came before it.
  assert re.findall(r'^stage (\d/3: steps \d+-\d+)', result.stdout,
                    re.M) == ['1/3: steps 0-2', '2/3: steps 3-6',
                              '3/3: steps 7-10']
  assert re.findall(r'^eval at step (\d+): top-1', result.stdout,
                    re.M) == ['5', '10', '11']
  assert f'model_dir: {tmp_path}' in result.stdout
  saved = yaml.safe_load((tmp_path / 'config.yaml').read_text())
  assert saved['model']['num_classes'] == 10 and saved['train']['epochs'] == 2
  results = json.loads((tmp_path / 'results.json').read_text())
  assert results['step'] == 11 and results['eval_images'] == 359


@pytest.mark.parametrize('args, message', [
    (['--hparam_str=model.dropout_rat=0.3'],
     "error: unknown config key 'model.dropout_rat'; closest valid: "
     'model.dropout_rate'),
    (['--hparam_str=train.epochs=ten'],
     "error: train.epochs='ten' has the wrong type: expected an int"),
    (['--model_name=efficientnetv2-q'],
     "error: unknown model name 'efficientnetv2-q'"),
    (['--dataset_cfg=cifar10f'],
     "error: unknown dataset config 'cifar10f'; did you mean 'cifar10ft'?"),
    (['--hparam_str=model.num_classes=0'],
     'error: model.num_classes must be a positive int; received: '
     'num_classes=0'),
    (['--dataset_cfg=imagenet'],
     "error: dataset 'imagenet' reads TFRecord files and is not downloaded; "
     'pass --data_dir'),
    (['--hparam_str=data.dataset=cifar11'],
     "error: unknown dataset 'cifar11'; did you mean 'cifar10'?"),
    (['--hparam_str=data.per_class=0'],
     'error: data.per_class must be a positive integer'),
    (['--hparam_str=data.fraction=1.5'],
     r'error: data.fraction must be in (0, 1]; received: 1.5'),
    (['--hparam_str=data.augname=randaugment'],
     "error: unknown augmentation 'randaugment'"),
    (['--hparam_str=data.ram=45'],
     'error: data.ram: augmentation magnitude must be a number in [0, 30]; '
     'received magnitude=45'),
    (['--hparam_str=data.dataset=image_folder', '--data_dir=/no/such/dir'],
     "error: --data_dir '/no/such/dir' of dataset 'image_folder' does not "
     'exist'),
    (['--mode=predcit'],
     "error: unknown --mode 'predcit'; allowed: train, eval, traineval"),
    (['--mode=export', '--tflite_quantization=int4'],
     "error: unknown TFLite quantization 'int4'; allowed: none, dynamic, "
     'float16, int8'),
    (['--mode=export', '--tflite_quantization=int8', '--weights=imagenet'],
     'error: --tflite_quantization=int8 with --weights needs '
     '--calibration_dir'),
    (['--mode=export', '--onnx_precision=int8'],
     'error: --onnx_precision must be one of fp32, fp16 or none; received: '
     "'int8'"),
    (['--mode=benchmark', '--runtime=tf,tensorrt'],
     "error: --runtime must be one of tf, onnxruntime, litert; received: "
     "'tensorrt'"),
    (['--mode=predict', '--image_path=.', '--runtime=onnx'],
     "error: --runtime must be one of tf, onnxruntime, litert; received: "
     "'onnx'"),
    (['--mode=predict'], 'error: --mode=predict needs --image_path'),
    (['--mode=predict', '--image_path=/no/such/*.jpg'],
     "error: --image_path '/no/such/*.jpg' matches no image file"),
    (['--mode=benchmark', '--batch_sizes=0,8'],
     'error: --batch_sizes must be comma-separated positive integers'),
    (['--strategy=gpus2'], "error: unknown strategy 'gpus2'; did you mean "
                           "'gpus'?"),
    (['--strategy=gpu'], "error: strategy 'gpu' needs a GPU"),
    (['--strategy=multi_worker'], 'error: multi_worker needs TF_CONFIG'),
    (['--hparam_str=train.optimizer=adamx'],
     "error: unknown optimizer 'adamx'; did you mean 'adam'?"),
    (['--hparam_str=train.batch_size=0'],
     'error: train.batch_size must be an integer >= 1; received: '
     'train.batch_size=0'),
    (['--mode=eval'], 'error: no checkpoint in '),
    (['--dataset_module=/no/such.py'],
     "error: --dataset_module '/no/such.py' is not a Python file (.py)"),
    (['--hparam_str=data.seed=-1'],
     'error: data.seed must be an integer in [0, 2**32) or None; received: '
     'data.seed=-1'),
    (['--hparam_str=model.width_coefficient=1e999'],
     'error: model.width_coefficient must be a finite number; received: '
     'width_coefficient=inf'),
    (['--hparam_str=train.weight_decay_exclude=(a'],
     'error: train.weight_decay_exclude must be a regular expression; '
     "received: train.weight_decay_exclude='(a'"),
    (['--weights=/no/such/ckpt'],
     "error: weights path '/no/such/ckpt' does not exist"),
    (['--hparam_str=train.optimizer=adamw,train.weight_decay_inc=1'],
     'error: train.weight_decay_inc=1.0 grows the L2 decay of the other '
     'optimizers; adamw decays at the fixed rate train.weight_decay'),
    (['--mode=train', '--hparam_str=train.lr_sched=plateau'],
     'error: train.lr_sched=plateau and train.early_stop_patience follow '
     'the evaluations after each epoch, which --mode=train does not run'),
    (['--mode=train', '--sweeps=train.early_stop_patience=0|2'],
     'error: --sweeps combination train.early_stop_patience=2: '
     'train.lr_sched=plateau and train.early_stop_patience follow'),
    (['--mode=export', '--weights=imagenet', '--checkpoint=ckpt-5'],
     "error: --checkpoint 'ckpt-5' picks a checkpoint of the run in "
     '--model_dir; --weights loads published or given weights instead'),
    (['--mode=predict', '--image_path=.', '--export_dir=/x',
      '--checkpoint=ckpt-5'],
     "error: --checkpoint 'ckpt-5' picks the weights to predict with; "
     '--mode=predict with --export_dir reads the export instead'),
    (['--mode=predict', '--image_path=.', '--export_dir=/x',
      '--weights=imagenet'],
     "error: --weights 'imagenet' picks the weights to predict with; "
     '--mode=predict with --export_dir reads the export instead'),
])
def test_bad_input_exits_2_with_one_line(args, message, capsys, tmp_path,
                                        monkeypatch):
  monkeypatch.delenv('TF_CONFIG', raising=False)
  main.FLAGS.unparse_flags()
  main.FLAGS(['main.py', f'--model_dir={tmp_path}', *args])
  with pytest.raises(SystemExit) as exit_info:
    main.main(['main.py'])
  assert exit_info.value.code == 2
  stderr = capsys.readouterr().err
  assert stderr.strip().splitlines()[-1].startswith(message), stderr
  assert 'Traceback' not in stderr


@pytest.mark.parametrize('argv, message', [
    (['--foo=1'], "error: Unknown command line flag 'foo'"),
    (['--top_k=abc'], 'error: flag --top_k=abc: invalid literal for int()'),
    (['--eval_timeout=nan'],
     'error: flag --eval_timeout=nan: must be a finite number of seconds'),
    (['--eval_timeout=-1'], 'error: flag --eval_timeout=-1.0: must be a '),
    (['extra'], "error: unexpected arguments 'extra'; every option is a"),
    (['--dataset_cfg='],
     "error: flag --dataset_cfg=: must name a dataset preset, e.g. digits"),
])
def test_bad_flags_exit_2_with_one_line(argv, message, capsys):
  main.FLAGS.unparse_flags()
  with pytest.raises(SystemExit) as exit_info:
    main.parse_flags(['main.py', *argv])
  assert exit_info.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(message), lines


@pytest.mark.parametrize('source, message', [
    ('x = 1\nraise RuntimeError("no data here")\n',
     'failed at line 2: RuntimeError: no data here'),
    ('def f(:\n', 'failed: SyntaxError: invalid syntax'),
    ('import sys\nsys.exit(3)\n', 'failed at line 2: SystemExit: 3'),
])
def test_a_dataset_module_that_fails_is_one_line_naming_it(
    source, message, capsys, tmp_path):
  module = tmp_path / 'broken.py'
  module.write_text(source)
  main.FLAGS.unparse_flags()
  main.FLAGS(['main.py', f'--dataset_module={module}',
              f'--model_dir={tmp_path}'])
  with pytest.raises(SystemExit) as exit_info:
    main.main(['main.py'])
  assert exit_info.value.code == 2
  lines = capsys.readouterr().err.strip().splitlines()
  assert lines[-1].startswith(f"error: --dataset_module '{module}' "
                              f'{message}'), lines


def _main(*argv):
  main.FLAGS.unparse_flags()
  main.FLAGS(['main.py', *argv])
  main.main(['main.py'])


def _refused_with_warnings(capsys, *argv):
  """The warning lines and the last line of a command that exits."""
  with pytest.raises(SystemExit):
    _main(*argv)
  lines = capsys.readouterr().err.strip().splitlines()
  return [line for line in lines if line.startswith('warning:')], lines[-1]


def test_flags_the_mode_does_not_read_are_named_in_a_warning(capsys,
                                                           tmp_path):
  warnings, last = _refused_with_warnings(
      capsys, f'--model_dir={tmp_path}', '--mode=eval', '--top_k=3',
      '--image_size=64', '--eval_timeout=0')
  assert warnings == [
      'warning: --top_k is ignored by --mode=eval (it is read by '
      '--mode=predict)',
      'warning: --image_size is ignored by --mode=eval (it is read by '
      '--mode=benchmark)']
  assert last.startswith('error: no checkpoint in '), last
  warnings, _ = _refused_with_warnings(
      capsys, f'--model_dir={tmp_path}', '--mode=benchmark',
      '--hparam_str=eval.isize=64', '--strategy=cpu', '--batch_sizes=0')
  assert warnings == [
      'warning: --strategy is ignored by --mode=benchmark (it is read by '
      '--mode=train and --mode=eval and --mode=traineval)',
      'warning: --hparam_str is ignored by --mode=benchmark (the model it '
      'reads comes with its own config)']


def test_eval_of_a_run_evaluates_with_the_recipe_it_trained_with(capsys,
                                                                tmp_path):
  recipe = 'eval.isize=40,data.normalization=imagenet'
  _main('--mode=traineval', f'--model_dir={tmp_path}',
        f'--hparam_str={TINY_RUN},train.epochs=1,{recipe},'
        'runtime.log_every_steps=4')
  trained = json.loads((tmp_path / 'results.json').read_text())
  assert [line.split(':')[0] for line in capsys.readouterr().out.splitlines()
          if line.startswith('step ')] == ['step 4']
  # Without the recipe's keys, and with flags that would pick another one.
  _main('--mode=eval', f'--model_dir={tmp_path}',
        '--hparam_str=eval.batch_size=50', '--dataset_cfg=cifar10ft',
        f'--weights={tmp_path}')
  evaluated = json.loads((tmp_path / 'results.json').read_text())
  assert evaluated['eval_image_size'] == trained['eval_image_size'] == 40
  assert (evaluated['eval_top1'], evaluated['eval_loss']) == pytest.approx(
      (trained['eval_top1'], trained['eval_loss']), abs=1e-5)
  # The training's own figures stay in results.json.
  kept = ('train_loss', 'wall_seconds', 'train_images_per_second')
  assert [evaluated[k] for k in kept] == [trained[k] for k in kept]
  assert trained['wall_seconds'] > 0
  err = capsys.readouterr().err
  for name in ('dataset_cfg', 'weights'):
    assert (f'warning: --{name} is ignored by --mode=eval of the run in '
            f"'{tmp_path}'") in err
  # --weights naming this run: its config decides, even over model.* keys.
  warnings, _ = _refused_with_warnings(
      capsys, f'--weights={tmp_path}/checkpoints', '--mode=benchmark',
      '--model_name=efficientnetv2-s', '--batch_sizes=0',
      '--hparam_str=model.dropout_rate=0.1')
  assert warnings == [
      f'warning: --{name} is ignored by --mode=benchmark (the run the '
      'weights come from has its own config)'
      for name in ('model_name', 'hparam_str')]


def _predict(capsys, tmp_path, run_dir, *flags_):
  output = tmp_path / 'predictions.json'
  _main('--mode=predict', f'--model_dir={run_dir}',
        f'--image_path={tmp_path / "digits"}',
        f'--predictions_file={output}', *flags_)
  capsys.readouterr()
  return json.loads(output.read_text())


def test_predict_uses_the_checkpoint_it_is_given(quick_start, capsys,
                                                 tmp_path):
  from efficientnetv2_tf import export  # pylint: disable=g-import-not-at-top
  from efficientnetv2_tf import predict  # pylint: disable=g-import-not-at-top
  _, run_dir = quick_start
  files = [image_files.write(str(tmp_path / 'digits' / f'{i}.png'),
                             image_files.pixels(32, 32, seed=i), 'png')
           for i in range(3)]
  first = predict.predict(export.load_run(str(run_dir), 'ckpt-5'), files)
  latest = predict.predict(export.load_run(str(run_dir)), files)
  assert first != latest  # else the test could not tell them apart
  assert _predict(capsys, tmp_path, run_dir, '--checkpoint=ckpt-5') == first
  assert _predict(capsys, tmp_path, run_dir) == latest


def test_in_flags_names_flags_but_leaves_quoted_values_as_given():
  assert main.in_flags(
      "image_path '/photos/old top_k' matches no image file; a run's "
      "top_k must be >= 1; quantization='int8' needs data_dir") == (
          "--image_path '/photos/old top_k' matches no image file; a run's "
          '--top_k must be >= 1; --tflite_quantization=int8 needs --data_dir')


def test_bad_input_exits_2_from_the_command_line_too():
  result = run_main('--hparam_str=train.epochs=ten')
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(
      "error: train.epochs='ten' has the wrong type")
  assert 'Traceback' not in result.stderr


def test_a_dataset_defined_in_a_user_file_is_usable(tmp_path):
  module = tmp_path / 'my_data.py'
  module.write_text(
      'import numpy as np\n'
      'import tensorflow as tf\n'
      'import datasets\n'
      'class Blobs(datasets.Dataset):\n'
      "  name = 'blobs'\n"
      '  def load_class_names(self):\n'
      "    return ['small', 'large', 'none']\n"
      '  def source(self, split):\n'
      '    images = np.zeros([6, 8, 8, 3], np.uint8)\n'
      '    return tf.data.Dataset.from_tensor_slices((images, np.arange(6) % 3))\n')
  result = run_main(f'--dataset_module={module}', '--mode=train',
                    f'--model_dir={tmp_path / "run"}',
                    f'--hparam_str={TINY_RUN},data.dataset=blobs,'
                    'data.per_class=2,train.batch_size=3')
  assert result.returncode == 0, result.stderr
  assert 'blobs: 3 classes, 6 training images; 4 steps' in result.stdout


def test_a_dataset_name_is_a_dataset_config(tmp_path):
  """`--dataset_cfg=image_folder` fine-tunes on a folder, as a user runs it:
  the dataset's name is known before the config is resolved."""
  for split, count in (('train', 3), ('val', 1)):
    for label in ('cat', 'dog'):
      for i in range(count):
        image_files.write(str(tmp_path / 'photos' / split / label /
                              f'{i}.jpg'),
                          image_files.pixels(24, 24, seed=i))
  result = run_main('--dataset_cfg=image_folder', '--mode=train',
                    f'--data_dir={tmp_path / "photos"}',
                    f'--model_dir={tmp_path / "run"}',
                    f'--hparam_str={TINY_RUN},train.batch_size=2,'
                    'eval.isize=32')
  assert result.returncode == 0, result.stderr
  assert 'image_folder: 2 classes, 6 training images; 6 steps' in (
      result.stdout)
  saved = yaml.safe_load((tmp_path / 'run' / 'config.yaml').read_text())
  assert saved['data']['augname'] == 'ft'
  assert saved['train']['lr_sched'] == 'constant'


def test_int8_export_of_weights_naming_a_run_calibrates_on_its_split(
    tmp_path, monkeypatch, capsys):
  # --weights=<run> reads the run as --model_dir=<run> does, int8
  # calibration on its training split included. The export itself is
  # left out: what it is handed is what is compared.
  specs, _ = conftest.tiny_run('data.per_class=2', 'train.batch_size=10')
  run = RunDir(str(tmp_path / 'run'))
  run.save(specs, progressive.make_plan(specs, 20, 1), list('0123456789'))
  tf.train.Checkpoint(model=EfficientNet.from_spec(specs.model)).save(
      os.path.join(run.checkpoints, 'ckpt'))  # with a state file, as runs
  handed = []
  monkeypatch.setattr(inference, 'run_export',
                      lambda *args: handed.append(args[-1]))
  monkeypatch.setattr(inference, 'REPORT_IMAGES', 10)  # not compared
  monkeypatch.setattr(inference, 'int8_report',
                      lambda *args: quantize.Agreement(1, 1.0, 1.0, 1.0))
  for flag in (f'--model_dir={run.path}', f'--weights={run.path}'):
    _main('--mode=export', flag, '--tflite_quantization=int8',
          f'--export_dir={tmp_path / "export"}')
  capsys.readouterr()
  by_model_dir, by_weights = handed
  assert by_model_dir.shape == (20, 32, 32, 3)
  np.testing.assert_array_equal(by_weights, by_model_dir)
