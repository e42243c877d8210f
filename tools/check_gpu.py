"""Checks the GPU paths on a machine that has GPUs; prints one line a check.

    python tools/check_gpu.py            # about two minutes on one GPU

1. `--strategy=gpu` trains the quick start, reduced, in float32 and with
   `runtime.mixed_precision=true` (float16 with loss scaling), each run
   reports that precision, and the loss is finite.
2. With two GPUs or more, `--strategy=gpus` with `model.bn_sync=true`: after
   a step on a different batch per replica, every BatchNorm's moving mean
   is the same on all replicas; without it, they differ.

Exits 0 when every check passes, 1 otherwise (2 without a GPU).
"""
import os
import subprocess
import sys
import tempfile

import numpy as np
import tensorflow as tf

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
TINY = ('model.width_coefficient=0.25,model.depth_coefficient=0.2,'
        'train.epochs=1,train.stages=1,train.image_size=32')


def train_on_one_gpu(mixed_precision: bool) -> bool:
  with tempfile.TemporaryDirectory() as model_dir:
    result = subprocess.run(
        [sys.executable, os.path.join(ROOT, 'main.py'), '--strategy=gpu',
         f'--model_dir={model_dir}', f'--hparam_str={TINY},'
         f'runtime.mixed_precision={str(mixed_precision).lower()}'],
        capture_output=True, text=True, check=False)
    # The run's first line ends with the dtype policy it trained with.
    policy = 'mixed_float16' if mixed_precision else 'float32'
    ok = (result.returncode == 0 and 'nan' not in result.stdout.lower()
          and f'replica(s), {policy}\n' in result.stdout)
    if not ok:
      print(result.stdout[-2000:], result.stderr[-2000:], sep='\n')
    return ok


def replicas_share_moving_means(bn_sync: bool) -> bool:
  from efficientnetv2_tf import distribute  # pylint: disable=g-import-not-at-top
  from efficientnetv2_tf.model import EfficientNet  # pylint: disable=g-import-not-at-top
  from hparams.models import V2_BASE_BLOCKS  # pylint: disable=g-import-not-at-top
  strategy = distribute.get_strategy('gpus')
  with strategy.scope():
    model = EfficientNet(V2_BASE_BLOCKS, num_classes=10,
                         width_coefficient=0.25, depth_coefficient=0.2,
                         bn_sync=bn_sync, input_shape=(32, 32, 3))

  def images_fn(context):  # another batch, of another mean, per replica
    replica = context.replica_id_in_sync_group
    return tf.random.stateless_normal((4, 32, 32, 3), [replica, 0]) + replica

  images = strategy.experimental_distribute_values_from_function(images_fn)
  tf.function(lambda: strategy.run(
      lambda x: model(x, training=True), args=(images,)))()
  means = [v for v in model.weights if v.path.endswith('moving_mean')]
  per_replica = [strategy.experimental_local_results(v.value) for v in means]
  return all(np.allclose(values[0], other, atol=1e-6)
             for values in per_replica for other in values[1:])


def main() -> int:
  gpus = tf.config.list_physical_devices('GPU')
  print(f'{len(gpus)} GPU(s): {[gpu.name for gpu in gpus]}')
  if not gpus:
    return 2
  checks = {'one GPU, float32': lambda: train_on_one_gpu(False),
            'one GPU, mixed float16': lambda: train_on_one_gpu(True)}
  if len(gpus) > 1:
    checks['gpus, bn_sync=true shares statistics'] = (
        lambda: replicas_share_moving_means(True))
    checks['gpus, bn_sync=false does not'] = (
        lambda: not replicas_share_moving_means(False))
  failed = 0
  for name, check in checks.items():
    passed = check()
    failed += not passed
    print(f'{"PASS" if passed else "FAIL"}  {name}', flush=True)
  return 1 if failed else 0


if __name__ == '__main__':
  sys.exit(main())
