"""tools/check_gpu.py: its checks tell a right result from a wrong one.

There is no GPU here: the training runs are faked, and the BatchNorm check
runs on two logical CPUs, over which its 'gpus' strategy falls back.
"""
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'tools'))

import check_gpu  # pylint: disable=g-import-not-at-top,wrong-import-position


@pytest.mark.parametrize('mixed, reported, passes', [
    (True, 'mixed_float16', True), (False, 'float32', True),
    (True, 'float32', False), (False, 'mixed_float16', False)])
def test_a_training_run_passes_only_in_the_precision_it_asked_for(
    monkeypatch, mixed, reported, passes):
  stdout = (f'digits: 10 classes, 1,438 training images; 22 steps of batch '
            f'64 in 1 stage(s) on 1 replica(s), {reported}\n'
            'eval at step 22: top-1 0.1, top-5 0.5, loss 2.3 (359 images)\n')
  monkeypatch.setattr(check_gpu.subprocess, 'run', lambda *a, **k: (
      subprocess.CompletedProcess(a, 0, stdout, '')))
  assert check_gpu.train_on_one_gpu(mixed) is passes


def test_the_batchnorm_check_tells_synced_replicas_from_unsynced_ones():
  script = (
      'import sys; sys.path[:0] = [%r, %r]\n'
      'from efficientnetv2_tf import distribute\n'
      'distribute.set_logical_cpus(2)\n'
      'import check_gpu\n'
      'print(check_gpu.replicas_share_moving_means(True),\n'
      '      check_gpu.replicas_share_moving_means(False))\n'
      % (ROOT, os.path.join(ROOT, 'tools')))
  result = subprocess.run([sys.executable, '-c', script], capture_output=True,
                          text=True, check=False)
  assert result.stdout.split() == ['True', 'False'], result.stderr[-2000:]
