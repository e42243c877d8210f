"""main.py in real processes: kill -9 and resume, SIGTERM, a truncated
checkpoint, MirroredStrategy over two logical CPUs, and two
MultiWorkerMirroredStrategy workers: sent SIGTERM, killed, or not sharing
their model_dir.

Each start of main.py spends seconds importing TensorFlow, so the runs are
few and run side by side: the `scenarios` fixture runs them in threads,
two at a time, each scenario drives its processes and records what they did,
and the tests check the records. One single-host run serves three tests:
it is stopped by SIGTERM, resumed and killed, and resumed to its end from
the checkpoint before its newest, which is cut short first.
"""
import concurrent.futures
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import types

import numpy as np
import pytest
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_RUN = ('model.width_coefficient=0.25,model.depth_coefficient=0.05,'
            'data.per_class=8,train.batch_size=16,eval.batch_size=120,'
            'train.epochs=4,train.stages=2,runtime.checkpoint_every_steps=2')
TOTAL_STEPS = 20  # 80 images / 16 per batch * 4 epochs
# The mirrored run needs no room to stop in: two epochs, one per stage.
MIRRORED_RUN = f'{TINY_RUN},train.epochs=2'
MIRRORED_STEPS = 10

pytestmark = pytest.mark.slow


# Each process runs main.py's `main` as `python main.py` would, after two
# settings that do not change what it does: graph optimisation is off (it
# takes longer than these tiny runs it would speed up), and each process
# computes an op on one thread, since several share the machine's cores.
LAUNCHER = """
import sys
import tensorflow as tf
from efficientnetv2_tf import distribute
tf.config.optimizer.set_experimental_options({'disable_meta_optimizer': True})
tf.config.threading.set_intra_op_parallelism_threads(1)
if %d > 1:
  distribute.set_logical_cpus(%d)
import main
main.app.run(main.main)
"""


def main_command(model_dir, *flags, hparams=TINY_RUN, logical_cpus=1):
  return [sys.executable, '-c', LAUNCHER % (logical_cpus, logical_cpus),
          '--mode=train', f'--model_dir={model_dir}',
          f'--hparam_str={hparams}', *flags]


def start(processes, command, env=None):
  """Starts `command` in the repository, adding it to `processes`."""
  process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, env=env)
  processes.append(process)
  return process


def completed(process, timeout=900):
  stdout, stderr = process.communicate(timeout=timeout)
  return subprocess.CompletedProcess(process.args, process.returncode,
                                     stdout, stderr)


def latest_step(model_dir):
  path = tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))
  return int(path.rsplit('-', 1)[1]) if path else 0


def wait_for_step(model_dir, step, process, timeout=600):
  deadline = time.time() + timeout
  while latest_step(model_dir) < step:
    assert process.poll() is None, process.communicate()[1][-2000:]
    assert time.time() < deadline, 'no checkpoint in time'
    time.sleep(0.2)


def sigterm_step(message):
  return int(message.split('at step ')[1].split(';')[0])


def single_host(processes, model_dir):
  """SIGTERM, then kill -9; the newest checkpoint is then cut short, as if
  the kill had come while it was written, and the same command runs to
  the end from the one before."""
  run = types.SimpleNamespace(model_dir=model_dir)
  process = start(processes, main_command(model_dir))
  wait_for_step(model_dir, 2, process)
  process.send_signal(signal.SIGTERM)
  _, run.sigterm_stderr = process.communicate(timeout=300)
  run.sigterm_code = process.returncode
  run.sigterm_saved = latest_step(model_dir)

  process = start(processes, main_command(model_dir))
  wait_for_step(model_dir, max(4, run.sigterm_saved + 2), process)
  process.send_signal(signal.SIGKILL)
  process.communicate()
  run.killed_at = latest_step(model_dir)

  *_, run.before, run.truncated = tf.train.get_checkpoint_state(
      os.path.join(model_dir, 'checkpoints')).all_model_checkpoint_paths
  data, = tf.io.gfile.glob(run.truncated + '.data-*')
  with open(data, 'r+b') as f:
    f.truncate(os.path.getsize(data) // 2)
  run.resumed = completed(start(processes, main_command(model_dir)))
  with open(os.path.join(model_dir, 'results.json')) as f:
    run.results = json.load(f)
  run.resumed_end = latest_step(model_dir)
  return run


def mirrored(processes, model_dir):
  """main.py under 'gpus', with the CPU split in two first."""
  result = completed(start(processes, main_command(
      model_dir, '--strategy=gpus', hparams=MIRRORED_RUN, logical_cpus=2)))
  return result, latest_step(model_dir)


def _free_ports(count):
  sockets = [socket.socket() for _ in range(count)]
  for s in sockets:
    s.bind(('localhost', 0))
  ports = [s.getsockname()[1] for s in sockets]
  for s in sockets:
    s.close()
  return ports


def start_workers(processes, model_dirs, *flags):
  """One worker per model_dir, started together as a cluster on localhost;
  worker 0 is the chief."""
  addresses = [f'localhost:{port}' for port in _free_ports(len(model_dirs))]
  workers = []
  for index, model_dir in enumerate(model_dirs):
    env = dict(os.environ, TF_CONFIG=json.dumps({
        'cluster': {'worker': addresses},
        'task': {'type': 'worker', 'index': index}}))
    workers.append(start(processes, main_command(
        model_dir, '--strategy=multi_worker', *flags), env=env))
  return workers


def error_lines(stderr):
  return [line for line in stderr.splitlines() if line.startswith('error:')]


def finish(workers, timeout=900):
  """The stderr of each worker, once each has exited."""
  return [worker.communicate(timeout=timeout)[1] for worker in workers]


def worker_1_dir(model_dir):
  return os.path.join(model_dir, 'workers', 'worker_1')


def own_copies(model_dir):
  return os.path.join(worker_1_dir(model_dir), 'checkpoints')


def assert_same_weights(model_dir):
  """The chief's and worker 1's latest checkpoints hold the same trained
  weights (saved once, under the optimizer that tracks them). BatchNorm's
  moving statistics are each replica's own: batch statistics are not
  synchronised."""
  chief = tf.train.load_checkpoint(os.path.join(model_dir, 'checkpoints'))
  other = tf.train.load_checkpoint(own_copies(model_dir))
  names = [n for n in chief.get_variable_to_shape_map()
           if n.startswith('optimizer/_trainable_variables/')]
  assert names
  for name in names:
    np.testing.assert_array_equal(chief.get_tensor(name),
                                  other.get_tensor(name), err_msg=name)


def stop_by_sigterm(workers, model_dir):
  """SIGTERM to worker 1 once it saved: both workers save the same step and
  exit 143 with one line. Returns that step."""
  wait_for_step(worker_1_dir(model_dir), latest_step(model_dir) + 2,
                workers[1])
  workers[1].send_signal(signal.SIGTERM)
  steps = []
  for worker, stderr in zip(workers, finish(workers, timeout=300)):
    assert worker.returncode == 143, stderr[-3000:]
    assert 'Traceback' not in stderr
    message, = [line for line in stderr.splitlines()
                if line.startswith('stopped by SIGTERM')]
    steps.append(sigterm_step(message))
    assert message == (
        f'stopped by SIGTERM at step {steps[-1]}; saved {model_dir}/'
        f'checkpoints/ckpt-{steps[-1]}; rerun the same command on every '
        f'worker to resume')
  assert steps[0] == steps[1] == latest_step(model_dir) == latest_step(
      worker_1_dir(model_dir))
  assert_same_weights(model_dir)
  return steps[0]


def kill_worker_1(workers, model_dir):
  """kill -9 to worker 1 once it saved: worker 0 exits 1 in bounded time
  with one line. Returns the step of the last checkpoint, and the stderr of
  both workers."""
  wait_for_step(worker_1_dir(model_dir), latest_step(model_dir) + 2,
                workers[1])
  workers[1].send_signal(signal.SIGKILL)
  killed = time.time()
  _, stderr = workers[0].communicate(timeout=120)
  assert time.time() - killed < 120
  assert workers[0].returncode == 1, stderr[-3000:]
  assert 'Traceback' not in stderr
  step = latest_step(model_dir)
  error, = error_lines(stderr)
  assert re.fullmatch(
      r'error: lost worker 1: a collective failed \(\w+Error\); ' + re.escape(
          f'the last checkpoint is step {step} ({model_dir}/checkpoints/'
          f'ckpt-{step}); rerun the same command on every worker to resume'),
      error), error
  return step, [stderr, workers[1].communicate()[1]]


def remove_newest_copy(model_dir):
  """Worker 1's checkpoints as if it had died before writing its newest."""
  newest = tf.train.latest_checkpoint(own_copies(model_dir))
  for path in tf.io.gfile.glob(newest + '.*'):
    os.remove(path)
  kept = [path for path in tf.train.get_checkpoint_state(
      own_copies(model_dir)).all_model_checkpoint_paths if path != newest]
  tf.compat.v1.train.update_checkpoint_state(own_copies(model_dir),
                                            kept[-1], kept)


def two_workers(processes, model_dir):
  """SIGTERM to one worker, then kill -9 to it: after each, the same
  commands resume both workers from the chief's checkpoint. It checks as it
  goes, since each start of the cluster changes the checkpoints."""
  stopped_at = stop_by_sigterm(start_workers(processes, [model_dir] * 2),
                               model_dir)

  killed_at, stderrs = kill_worker_1(
      start_workers(processes, [model_dir] * 2), model_dir)
  assert stopped_at <= killed_at < TOTAL_STEPS
  for stderr in stderrs:
    assert f'resumed from {model_dir}/checkpoints/ckpt-{stopped_at} ' in stderr
  remove_newest_copy(model_dir)

  workers = start_workers(processes, [model_dir] * 2)
  for worker, stderr in zip(workers, finish(workers)):
    assert worker.returncode == 0, stderr[-3000:]
    assert f'resumed from {model_dir}/checkpoints/ckpt-{killed_at} ' in stderr
  assert_same_weights(model_dir)
  assert latest_step(model_dir) == TOTAL_STEPS
  assert latest_step(worker_1_dir(model_dir)) == TOTAL_STEPS


def unshared(processes, model_dirs):
  """Two workers, each given a model_dir of its own: their exit codes and
  stderr."""
  workers = start_workers(processes, model_dirs)
  stderrs = finish(workers, timeout=300)
  return model_dirs, [worker.returncode for worker in workers], stderrs


@pytest.fixture(scope='module')
def scenarios(tmp_path_factory):
  """Each scenario's result, a function waiting for it; two run at a time.
  Scenarios still running at the end (a test failed, or was not selected)
  are stopped by killing their processes, which they may still start."""
  processes = []
  dirs = {name: str(tmp_path_factory.mktemp(name)) for name in (
      'single_host', 'mirrored', 'two_workers', 'chief', 'other')}
  # Two at a time: more would only crowd the cores the other tests use.
  pool = concurrent.futures.ThreadPoolExecutor(max_workers=2)
  futures = {
      'single_host': pool.submit(single_host, processes,
                                 dirs['single_host']),
      'mirrored': pool.submit(mirrored, processes, dirs['mirrored']),
      'two_workers': pool.submit(two_workers, processes,
                                 dirs['two_workers']),
      'unshared': pool.submit(unshared, processes,
                              [dirs['chief'], dirs['other']])}
  yield {name: future.result for name, future in futures.items()}
  while not all(future.done() for future in futures.values()):
    for process in processes:
      if process.poll() is None:
        process.kill()
    concurrent.futures.wait(futures.values(), timeout=1)
  pool.shutdown()


def test_sigterm_saves_and_exits_143(scenarios):
  run = scenarios['single_host']()
  assert run.sigterm_code == 143, run.sigterm_stderr[-2000:]
  message = run.sigterm_stderr.strip().splitlines()[-1]
  step = sigterm_step(message)
  assert message.startswith(f'stopped by SIGTERM at step {step}; saved ')
  assert run.sigterm_saved == step


def test_kill_9_then_the_same_command_resumes_to_the_same_end(scenarios):
  run = scenarios['single_host']()
  assert run.sigterm_saved < run.killed_at < TOTAL_STEPS
  assert run.killed_at >= 4
  assert run.truncated.endswith(f'ckpt-{run.killed_at}')
  assert run.resumed.returncode == 0, run.resumed.stderr[-2000:]
  assert run.results['step'] == run.results['total_steps'] == TOTAL_STEPS
  assert run.results['stages'] == [
      'stage 1/2: steps 0-9, 28 px, magnitude 5.0, mixup 0.0, cutmix 0.0, '
      'dropout 0.2',
      'stage 2/2: steps 10-19, 32 px, magnitude 5.0, mixup 0.0, cutmix 0.0, '
      'dropout 0.2']
  # It picked up in the stage of the step it resumed from.
  resumed_at = int(run.before.rsplit('-', 1)[1])
  first_stage = 'stage 1/2' if resumed_at < 10 else 'stage 2/2'
  assert run.resumed.stdout.split('\n')[1].startswith(first_stage)
  assert run.resumed_end == TOTAL_STEPS


def test_a_truncated_checkpoint_falls_back_to_the_one_before(scenarios):
  run = scenarios['single_host']()
  stderr = run.resumed.stderr
  assert f'checkpoint {run.truncated} cannot be read' in stderr
  assert f'resumed from {run.before} ' in stderr


def test_mirrored_strategy_over_two_logical_cpus(scenarios):
  result, end = scenarios['mirrored']()
  assert result.returncode == 0, result.stderr[-2000:]
  assert 'on 2 replica(s)' in result.stdout
  assert end == MIRRORED_STEPS


def test_two_workers_stop_together_and_resume_as_one_run(scenarios):
  scenarios['two_workers']()


def test_workers_that_do_not_share_model_dir_are_refused(scenarios):
  (chief_dir, other_dir), codes, stderrs = scenarios['unshared']()
  for code, stderr in zip(codes, stderrs):
    assert code == 2, stderr[-3000:]
    assert 'Traceback' not in stderr
  shared = 'must be on a filesystem all workers share (GCS, NFS)'
  assert error_lines(stderrs[0]) == [
      f"error: 1 of the 2 workers cannot read what the chief writes to "
      f"--model_dir '{chief_dir}'; --model_dir {shared}"]
  assert error_lines(stderrs[1]) == [
      f"error: this worker (worker 1) cannot read what the chief writes to "
      f"--model_dir '{other_dir}'; --model_dir {shared}"]
