"""main.py in real processes: kill -9 and resume, SIGTERM, MirroredStrategy
over two logical CPUs, and two MultiWorkerMirroredStrategy workers."""
import json
import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_RUN = ('model.width_coefficient=0.25,model.depth_coefficient=0.05,'
            'data.per_class=8,train.batch_size=16,eval.batch_size=120,'
            'train.epochs=4,train.stages=2,runtime.checkpoint_every_steps=2')
TOTAL_STEPS = 20  # 80 images / 16 per batch * 4 epochs

pytestmark = pytest.mark.slow


def main_command(model_dir, *flags):
  return [sys.executable, 'main.py', '--mode=train',
          f'--model_dir={model_dir}', f'--hparam_str={TINY_RUN}', *flags]


def start(model_dir, *flags, env=None):
  return subprocess.Popen(main_command(model_dir, *flags), cwd=ROOT,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env=env)


def latest_step(model_dir):
  path = tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))
  return int(path.rsplit('-', 1)[1]) if path else 0


def wait_for_step(model_dir, step, process, timeout=300):
  deadline = time.time() + timeout
  while latest_step(model_dir) < step:
    assert process.poll() is None, process.communicate()[1][-2000:]
    assert time.time() < deadline, 'no checkpoint in time'
    time.sleep(0.2)


def test_kill_9_then_the_same_command_resumes_to_the_same_end(tmp_path):
  model_dir = str(tmp_path)
  process = start(model_dir)
  wait_for_step(model_dir, 4, process)
  process.send_signal(signal.SIGKILL)
  process.communicate()
  killed_at = latest_step(model_dir)
  assert 4 <= killed_at < TOTAL_STEPS

  resumed = subprocess.run(main_command(model_dir), cwd=ROOT, text=True,
                           capture_output=True, timeout=600)
  assert resumed.returncode == 0, resumed.stderr[-2000:]
  results = json.load(open(os.path.join(model_dir, 'results.json')))
  assert results['step'] == results['total_steps'] == TOTAL_STEPS
  assert results['stages'] == [
      'stage 1/2: steps 0-9, 28 px, magnitude 5.0, mixup 0.0, cutmix 0.0, '
      'dropout 0.2',
      'stage 2/2: steps 10-19, 32 px, magnitude 5.0, mixup 0.0, cutmix 0.0, '
      'dropout 0.2']
  # It picked up in the stage of the step it was killed at.
  first_stage = 'stage 1/2' if killed_at < 10 else 'stage 2/2'
  assert resumed.stdout.split('\n')[1].startswith(first_stage)
  assert latest_step(model_dir) == TOTAL_STEPS


def test_sigterm_saves_and_exits_143(tmp_path):
  model_dir = str(tmp_path)
  process = start(model_dir)
  wait_for_step(model_dir, 2, process)
  process.send_signal(signal.SIGTERM)
  _, stderr = process.communicate(timeout=300)
  assert process.returncode == 143, stderr[-2000:]
  message = stderr.strip().splitlines()[-1]
  step = int(message.split('at step ')[1].split(';')[0])
  assert message.startswith(f'stopped by SIGTERM at step {step}; saved ')
  assert latest_step(model_dir) == step


def test_mirrored_strategy_over_two_logical_cpus(tmp_path):
  script = (
      'import sys\n'
      'from efficientnetv2_tf import distribute\n'
      'distribute.set_logical_cpus(2)\n'
      'import main\n'
      f'sys.argv = {main_command(tmp_path, "--strategy=gpus")[1:]!r}\n'
      'main.app.run(main.main)\n')
  result = subprocess.run([sys.executable, '-c', script], cwd=ROOT, text=True,
                          capture_output=True, timeout=600)
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'on 2 replica(s)' in result.stdout
  assert latest_step(str(tmp_path)) == TOTAL_STEPS


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('localhost', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def test_two_workers_finish_with_identical_weights(tmp_path):
  model_dir = str(tmp_path)
  workers = [f'localhost:{port}' for port in _free_ports(2)]
  processes = []
  for index in range(2):
    env = dict(os.environ, TF_CONFIG=json.dumps({
        'cluster': {'worker': workers},
        'task': {'type': 'worker', 'index': index}}))
    processes.append(start(model_dir, '--strategy=multi_worker', env=env))
  for process in processes:
    _, stderr = process.communicate(timeout=900)
    assert process.returncode == 0, stderr[-3000:]
  chief = tf.train.load_checkpoint(os.path.join(model_dir, 'checkpoints'))
  other = tf.train.load_checkpoint(
      os.path.join(model_dir, 'workers', 'worker_1', 'checkpoints'))
  # The trained weights (saved once, under the optimizer that tracks them)
  # agree exactly. BatchNorm's moving statistics are each replica's own:
  # batch statistics are not synchronised.
  names = [n for n in chief.get_variable_to_shape_map()
           if n.startswith('optimizer/_trainable_variables/')]
  assert names
  for name in names:
    np.testing.assert_array_equal(chief.get_tensor(name),
                                  other.get_tensor(name), err_msg=name)
  assert latest_step(model_dir) == TOTAL_STEPS
