"""main.py as a user runs it: a subprocess, its output and its exit code."""
import os
import subprocess
import sys

import pytest
import yaml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_main(*args):
  return subprocess.run([sys.executable, 'main.py', *args], cwd=ROOT,
                        capture_output=True, text=True, timeout=300)


def test_main_builds_the_model_and_saves_the_resolved_config(tmp_path):
  result = run_main('--model_name=efficientnetv2-b0',
                    '--hparam_str=model.num_classes=10,train.epochs=3',
                    f'--model_dir={tmp_path}')
  assert result.returncode == 0, result.stderr
  assert 'efficientnetv2-b0: 5,932,122 parameters, 21 blocks, 10 classes' in (
      result.stdout)
  saved = yaml.safe_load((tmp_path / 'config.yaml').read_text())
  assert saved['model']['num_classes'] == 10 and saved['train']['epochs'] == 3


@pytest.mark.parametrize('args, message', [
    (['--hparam_str=model.dropout_rat=0.3'],
     "error: unknown config key 'model.dropout_rat'; closest valid: "
     'model.dropout_rate'),
    (['--hparam_str=train.epochs=ten'],
     "error: train.epochs='ten' has the wrong type: expected an int"),
    (['--model_name=efficientnetv2-q'],
     "error: unknown model name 'efficientnetv2-q'"),
    (['--dataset_cfg=imagenett'],
     "error: unknown dataset config 'imagenett'; did you mean 'imagenet'?"),
    (['--hparam_str=model.num_classes=0'],
     'error: num_classes must be a positive int, received num_classes=0'),
    (['--weights=/no/such/ckpt'],
     "error: weights path '/no/such/ckpt' does not exist"),
])
def test_bad_input_exits_2_with_one_line(args, message):
  result = run_main(*args)
  assert result.returncode == 2
  assert result.stderr.strip().splitlines()[-1].startswith(message)
  assert 'Traceback' not in result.stderr
