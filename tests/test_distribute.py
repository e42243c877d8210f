import doctest
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading
import types
import weakref

import keras
import pytest
import tensorflow as tf

from efficientnetv2_tf import distribute
from hparams.errors import UserError
from tests.strategies import fake_tpu_strategy

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def no_gpu(monkeypatch):
  monkeypatch.setattr(distribute, '_has_gpu', lambda: False)


@pytest.fixture
def global_policy_restored():
  previous = keras.mixed_precision.global_policy()
  yield
  keras.mixed_precision.set_global_policy(previous)


def start_python(script, tf_config=None):
  """Starts `script` in a fresh interpreter, where TF devices are not set up
  yet; CUDA is hidden so that 'gpus' falls back to CPUs on any machine."""
  environ = {**os.environ, 'TF_CPP_MIN_LOG_LEVEL': '3',
             'CUDA_VISIBLE_DEVICES': ''}
  environ.pop('TF_CONFIG', None)
  if tf_config:
    environ['TF_CONFIG'] = json.dumps(tf_config)
  return subprocess.Popen([sys.executable, '-c', textwrap.dedent(script)],
                          cwd=REPO, env=environ, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


ONE_WORKER = """
    import tensorflow as tf
    from efficientnetv2_tf import cluster
    from efficientnetv2_tf import distribute
    from efficientnetv2_tf.run_dir import RunDir
    strategy = distribute.get_strategy('multi_worker')
    print('one_worker',
          isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy),
          strategy.num_replicas_in_sync, cluster.is_chief(strategy),
          RunDir('/runs/s').for_worker(strategy).path)
    """


# 'gpus' and cross-replica BatchNorm share one interpreter: each spends
# seconds importing TensorFlow. Every line printed starts with its check.
ON_TWO_CPUS = """
    import numpy as np
    import keras
    import tensorflow as tf
    from efficientnetv2_tf import distribute
    from efficientnetv2_tf.model import EfficientNet
    from hparams.models import V2_BASE_BLOCKS
    distribute.set_logical_cpus(2)
    strategy = distribute.get_strategy('gpus')
    print('gpus', type(strategy).__name__, strategy.num_replicas_in_sync)
    print('gpus', distribute.precision_policy(strategy, mixed=True))
    distribute.set_logical_cpus(2)  # as it is: no error
    try:
      distribute.set_logical_cpus(3)
    except RuntimeError as e:
      print('gpus', 'too-late' if 'came too late' in str(e) else e)

    def tiny(bn_sync):  # no random drops: the oracle must see the same
      return EfficientNet(V2_BASE_BLOCKS, num_classes=10,
                          width_coefficient=0.25, depth_coefficient=0.2,
                          survival_prob=None, bn_sync=bn_sync,
                          input_shape=(32, 32, 3))

    def images_fn(context):  # another batch, of another mean, per replica
      replica = context.replica_id_in_sync_group
      return tf.random.stateless_normal((4, 32, 32, 3), [replica, 0]) + replica

    images = strategy.experimental_distribute_values_from_function(images_fn)
    both_batches = tf.concat(strategy.experimental_local_results(images), 0)
    for bn_sync in (True, False):
      with strategy.scope():
        model = tiny(bn_sync)
        optimizer = keras.optimizers.SGD(0.1)
        optimizer.build(model.trainable_variables)
      # The oracle: plain BatchNorm on one device, over both batches at once.
      reference = tiny(False)
      reference.set_weights(model.get_weights())
      reference(both_batches, training=True)

      def replica_step(x):
        with tf.GradientTape() as tape:
          loss = tf.reduce_mean(model(x, training=True) ** 2)
        grads = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(grads, model.trainable_variables))

      tf.function(lambda: strategy.run(replica_step, args=(images,)))()
      means = [v for v in model.weights if v.path.endswith('moving_mean')]
      expected = [v for v in reference.weights
                  if v.path.endswith('moving_mean')]
      first, second = zip(*[strategy.experimental_local_results(v.value)
                            for v in means])
      print('bn_sync', bn_sync, len(means) > 10,
            all(np.array_equal(a, b) for a, b in zip(first, second)),
            all(np.allclose(a, b, atol=1e-5) for a, b in zip(first, expected)))

    # Evaluated without an EMA, the last model (each replica with its own
    # moving statistics) scores what one device scores with the first
    # replica's, which checkpoints and exports keep.
    from efficientnetv2_tf.evaluator import Evaluator
    from tests.conftest import tiny_run
    specs, dataset = tiny_run()
    reference.set_weights(model.get_weights())
    scores = [Evaluator(specs, dataset, net, None, where).evaluate(0)
              for net, where in ((model, strategy),
                                 (reference, distribute.get_strategy('cpu')))]
    print('eval_bn', scores[0]['eval_images'] == scores[1]['eval_images'],
          np.isclose(scores[0]['eval_loss'], scores[1]['eval_loss'],
                     rtol=1e-6))

    # Each replica draws its own dropout and stochastic-depth masks.
    from efficientnetv2_tf import blocks
    with strategy.scope():
      drops = [blocks.StochasticDepth(0.5), blocks.TopDropout(0.5)]
    ones = tf.ones((64, 1, 1, 1))
    for drop in drops:
      masks = strategy.experimental_local_results(tf.function(
          lambda: strategy.run(lambda: drop(ones, training=True)))())
      print('masks', type(drop).__name__,
            not np.array_equal(masks[0].numpy(), masks[1].numpy()))

    # Loss scaling: an overflow on the second replica only skips the step
    # on both and halves the scale.
    from efficientnetv2_tf import train_step
    with strategy.scope():
      dense = keras.Sequential([keras.Input((4,)), keras.layers.Dense(10)])
      scaled = distribute.wrap_optimizer(keras.optimizers.SGD(0.1),
                                         'mixed_float16')
      scaled.build(dense.trainable_variables)
    inputs = np.ones((4, 4), 'float32')
    inputs[2:] = 1e36  # finite, but not once the loss scale multiplies it
    data = tf.data.Dataset.from_tensor_slices(
        (inputs, tf.one_hot(range(4), 10))).batch(4)
    before = dense.get_weights()[0]
    loop = train_step.build_train_loop(
        dense, scaled, None, strategy, train_step.StepSettings(
            global_batch=4, total_steps=10, grad_accum_steps=1,
            loss_type='softmax', label_smoothing=0.0, l2_weight_decay=0.0,
            weight_decay_inc=0.0, weight_decay_exclude='', gclip=0.0,
            jit_compile=False))
    loop(iter(strategy.experimental_distribute_dataset(data)), tf.constant(1))
    kernels = strategy.experimental_local_results(
        dense.trainable_variables[0].value)
    print('overflow', int(scaled.iterations.numpy()),
          float(scaled.dynamic_scale.numpy()),
          all(np.array_equal(k.numpy(), before) for k in kernels))
    """


@pytest.fixture(scope='module')
def printed():
  """`printed(name, check)`: the words of the lines that the subprocess
  script `name` printed for `check`. The scripts start together, each
  spending seconds importing TensorFlow, and each runs once."""
  with socket.socket() as sock:
    sock.bind(('localhost', 0))
    port = sock.getsockname()[1]
  one_worker = {'cluster': {'worker': [f'localhost:{port}']},
                'task': {'type': 'worker', 'index': 0}}
  processes = {'two_cpus': start_python(ON_TWO_CPUS),
               'one_worker': start_python(ONE_WORKER, one_worker)}
  outputs = {}

  def words(name, check):
    if name not in outputs:
      outputs[name] = processes[name].communicate(timeout=600)
    stdout, stderr = outputs[name]
    assert processes[name].returncode == 0, stderr[-2000:]
    lines = [line.split() for line in stdout.splitlines()]
    return [word for line in lines if line[:1] == [check]
            for word in line[1:]]
  yield words
  for process in processes.values():
    if process.poll() is None:
      process.kill()
      process.communicate()


def test_cpu_strategy_has_one_replica_on_the_cpu():
  strategy = distribute.get_strategy('cpu')
  assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
  assert strategy.extended.worker_devices[0].endswith('CPU:0')


def test_default_is_cpu_without_a_gpu(no_gpu):
  strategy = distribute.get_strategy()
  assert isinstance(strategy, tf.distribute.OneDeviceStrategy)
  assert strategy.extended.worker_devices[0].endswith('CPU:0')


def test_unknown_strategy_names_the_value_and_lists_known_ones():
  with pytest.raises(UserError, match="unknown strategy 'tpus'; did you mean "
                     "'tpu'.* Known: cpu, gpu, gpus, multi_worker, tpu"):
    distribute.get_strategy('tpus')


def test_gpu_without_a_gpu_raises(no_gpu):
  with pytest.raises(UserError, match="'gpu' needs a GPU"):
    distribute.get_strategy('gpu')


def test_multi_worker_refuses_a_bad_tf_config(monkeypatch):
  monkeypatch.setenv('TF_CONFIG', '{"cluster": {"worker": ["a:1"]}}')
  with pytest.raises(UserError, match='multi_worker needs TF_CONFIG'):
    distribute.get_strategy('multi_worker')


def test_multi_worker_builds_the_strategy_from_a_good_tf_config(monkeypatch):
  # A real one would start a server; the check is that it gets that far.
  monkeypatch.setenv('TF_CONFIG', json.dumps({
      'cluster': {'worker': ['a:1', 'b:1']},
      'task': {'type': 'worker', 'index': 1}}))
  monkeypatch.setattr(tf.distribute, 'MultiWorkerMirroredStrategy',
                      lambda: 'built')
  assert distribute.get_strategy('multi_worker') == 'built'


def failing_resolver(*args, **kwargs):
  raise ValueError('Could not lookup TPU metadata\nfrom the resolver')


def test_tpu_that_cannot_be_resolved_raises(monkeypatch):
  # A real resolver may try the network or wait on a grpc address, so the
  # failure is simulated.
  monkeypatch.setattr(tf.distribute.cluster_resolver, 'TPUClusterResolver',
                      failing_resolver)
  with pytest.raises(UserError) as err:
    distribute.get_strategy('tpu', tpu='grpc://10.0.0.1:8470',
                            tpu_zone='us-central1-b')
  assert str(err.value) == (
      "no TPU was found at tpu='grpc://10.0.0.1:8470' (zone 'us-central1-b', "
      "project None): Could not lookup TPU metadata")


def test_a_tpu_address_without_a_name_means_tpu(monkeypatch):
  monkeypatch.setattr(tf.distribute.cluster_resolver, 'TPUClusterResolver',
                      failing_resolver)
  with pytest.raises(UserError, match="no TPU was found at tpu='my-tpu'"):
    distribute.get_strategy(tpu='my-tpu')


@pytest.mark.parametrize('name, has_gpu, policy', [
    ('cpu', False, 'mixed_bfloat16'),
    ('gpu', False, 'mixed_float16'),
    ('tpu', False, 'mixed_bfloat16'),
    ('gpus', False, 'mixed_bfloat16'),  # mirrored over CPUs
    ('gpus', True, 'mixed_float16'),
    ('multi_worker', False, 'mixed_bfloat16'),
    ('multi_worker', True, 'mixed_float16'),
])
def test_mixed_precision_policy_suits_the_device(monkeypatch, name, has_gpu,
                                                 policy):
  monkeypatch.setattr(distribute, '_has_gpu', lambda: has_gpu)
  assert distribute.precision_policy(name, mixed=True) == policy
  assert distribute.precision_policy(name, mixed=False) == 'float32'


def test_precision_policy_reads_a_strategys_devices():
  gpus = types.SimpleNamespace(extended=types.SimpleNamespace(
      worker_devices=('/job:worker/replica:0/task:0/device:GPU:0',)))
  assert distribute.precision_policy(gpus, True) == 'mixed_float16'
  assert distribute.precision_policy(fake_tpu_strategy(),
                                     True) == 'mixed_bfloat16'
  assert distribute.precision_policy(distribute.get_strategy('cpu'),
                                     True) == 'mixed_bfloat16'


def test_precision_policy_rejects_an_unknown_name():
  with pytest.raises(UserError, match="unknown strategy 'gpu0'"):
    distribute.precision_policy('gpu0', mixed=True)


def test_precision_scope_sets_the_policy_for_its_body_only(
    global_policy_restored):
  keras.mixed_precision.set_global_policy('float32')
  with distribute.precision_scope('mixed_bfloat16'):
    inside = keras.layers.Dense(2)
  outside = keras.layers.Dense(2)
  assert (inside.compute_dtype, inside.variable_dtype) == ('bfloat16',
                                                           'float32')
  assert outside.compute_dtype == 'float32'
  assert keras.mixed_precision.global_policy().name == 'float32'


def test_precision_scope_restores_the_policy_after_an_error(
    global_policy_restored):
  keras.mixed_precision.set_global_policy('mixed_float16')
  with pytest.raises(ValueError, match='in the body'):
    with distribute.precision_scope('float32'):
      raise ValueError('in the body')
  assert keras.mixed_precision.global_policy().name == 'mixed_float16'


def test_wrap_optimizer_adds_loss_scaling_only_for_float16():
  sgd = keras.optimizers.SGD()
  wrapped = distribute.wrap_optimizer(sgd, 'mixed_float16')
  assert isinstance(wrapped, keras.optimizers.LossScaleOptimizer)
  assert wrapped.inner_optimizer is sgd
  assert distribute.wrap_optimizer(wrapped, 'mixed_float16') is wrapped
  for policy in ('float32', 'mixed_bfloat16'):
    assert distribute.wrap_optimizer(sgd, policy) is sgd


def test_check_batch_size_gives_the_per_replica_size():
  four = types.SimpleNamespace(num_replicas_in_sync=4)
  assert distribute.check_batch_size(32, four) == 8


@pytest.mark.parametrize('batch_size', [30, 0])
def test_check_batch_size_rejects_an_uneven_split(batch_size):
  four = types.SimpleNamespace(num_replicas_in_sync=4)
  with pytest.raises(UserError, match=f'batch size {batch_size} is not '
                     'divisible by the 4 replicas'):
    distribute.check_batch_size(batch_size, four)


def test_set_logical_cpus_rejects_a_bad_count():
  with pytest.raises(UserError, match='received: 0'):
    distribute.set_logical_cpus(0)


def test_gpus_mirrors_over_two_logical_cpus(printed):
  assert printed('two_cpus', 'gpus') == [
      'MirroredStrategy', '2', 'mixed_bfloat16', 'too-late']


def test_multi_worker_with_one_worker_is_its_chief(printed):
  assert printed('one_worker', 'one_worker') == [
      'True', '1', 'True', '/runs/s']


def test_bn_sync_shares_batch_statistics_across_replicas(printed):
  # After one training step on another batch per replica, synchronised
  # BatchNorm leaves the same moving means on both replicas, those of the
  # two batches together; plain BatchNorm leaves each replica its own.
  assert printed('two_cpus', 'bn_sync') == [
      'True', 'True', 'True', 'True', 'False', 'True', 'False', 'False']


def test_evaluation_without_an_ema_uses_the_first_replicas_statistics(
    printed):
  assert printed('two_cpus', 'eval_bn') == ['True', 'True']


def test_each_replica_draws_its_own_masks(printed):
  assert printed('two_cpus', 'masks') == [
      'StochasticDepth', 'True', 'TopDropout', 'True']


def test_an_overflow_on_one_replica_skips_the_step_on_all(printed):
  assert printed('two_cpus', 'overflow') == ['0', '16384.0', 'True']


def fake_tpu_with(replicas):
  class FakeTPUStrategy(tf.distribute.TPUStrategy):
    num_replicas_in_sync = replicas

    def __init__(self):  # pylint: disable=super-init-not-called
      pass
  return FakeTPUStrategy()


def strategy_with(replicas):
  return types.SimpleNamespace(num_replicas_in_sync=replicas)


@pytest.mark.parametrize('requested, strategy, expected', [
    (None, fake_tpu_with(8), True),  # the original's tpu_bn
    (None, strategy_with(2), False),
    (True, strategy_with(2), True),
    (False, fake_tpu_with(8), False),
    (True, fake_tpu_with(1), False),  # one replica: nothing to share
    (None, fake_tpu_with(1), False),
])
def test_resolve_bn_sync(requested, strategy, expected):
  assert distribute.resolve_bn_sync(requested, strategy) is expected


def test_bn_sync_on_one_cpu_is_plain_batch_norm():
  cpu = distribute.get_strategy('cpu')
  assert distribute.resolve_bn_sync(True, cpu) is False


def test_module_docstring_example_runs():
  result = doctest.testmod(distribute, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0
  assert result.failed == 0


def _batches(context):
  del context
  images = tf.zeros([4, 24, 24, 3])
  labels = tf.one_hot([0, 1, 2, 3], 4)
  return tf.data.Dataset.from_tensors((images, labels)).repeat(2)


def test_distribute_input_can_hide_the_image_size_from_tracing():
  strategy = distribute.get_strategy('cpu')
  plain = distribute.distribute_input(strategy, _batches)
  relaxed = distribute.distribute_input(strategy, _batches,
                                        any_image_size=True)
  assert plain.element_spec[0].shape.as_list() == [4, 24, 24, 3]
  assert relaxed.element_spec[0].shape.as_list() == [4, None, None, 3]
  images, labels = next(iter(relaxed))
  assert images.shape == (4, 24, 24, 3) and labels.shape == (4, 4)


def test_distribute_input_warm_starts_only_when_asked():
  strategy = distribute.get_strategy('cpu')
  assert distribute.distribute_input(
      strategy, _batches, warm_start=True).options().experimental_warm_start
  assert not distribute.distribute_input(
      strategy, _batches).options().experimental_warm_start


def test_a_tpu_keeps_static_image_sizes(monkeypatch):
  tpu = fake_tpu_strategy()
  made = []
  monkeypatch.setattr(tpu, 'distribute_datasets_from_function',
                      lambda fn: made.append(fn(None)) or made[-1],
                      raising=False)
  dataset = distribute.distribute_input(tpu, _batches, any_image_size=True)
  assert dataset.element_spec[0].shape.as_list() == [4, 24, 24, 3]


def test_release_lets_go_of_iterators_without_waiting_for_them():
  """What `release` drops is deleted on another thread: the caller goes on
  while a slow deletion (a tf.data iterator's, up to a minute) waits."""
  caller_went_on, deleted = threading.Event(), threading.Event()
  deleted_on = []

  class SlowToDelete:
    def __del__(self):
      deleted_on.append(threading.current_thread().name)
      caller_went_on.wait(30)
      deleted.set()

  held = [SlowToDelete(), SlowToDelete()]
  distribute.release(held)
  assert held == []
  caller_went_on.set()  # too late, 30 s on, if release waited for __del__
  assert deleted.wait(30)
  assert threading.current_thread().name not in deleted_on
  assert len(deleted_on) in (1, 2)  # the second may still be under way


def test_release_deletes_a_tf_data_iterator():
  dataset = tf.data.Dataset.range(100).map(
      lambda x: x * 2, num_parallel_calls=tf.data.AUTOTUNE)
  held = [iter(dataset)]
  assert int(next(held[0])) == 0
  gone = weakref.ref(held[0])
  distribute.release(held)
  for _ in range(300):
    if gone() is None:
      break
    threading.Event().wait(0.1)
  assert gone() is None
