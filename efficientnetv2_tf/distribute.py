"""Where training runs: a `tf.distribute` strategy, and the precision for it.

`get_strategy(name)` builds one of the `STRATEGIES`:

- 'cpu': one CPU. 'gpu': one GPU (an error if TensorFlow sees none).
- 'gpus': `MirroredStrategy` over every GPU, or over every logical CPU when
  there is no GPU; with `set_logical_cpus(2)` first, that runs data
  parallelism on a laptop, which is how the tests check it.
- 'multi_worker': `MultiWorkerMirroredStrategy`, with the cluster and this
  worker's task read from the `TF_CONFIG` environment variable.
- 'tpu': `TPUStrategy` on the TPU named by `tpu` (a name, 'local' or a
  grpc:// address), `tpu_zone` and `gcp_project`.

With no name it takes 'tpu' if a TPU address is given, else 'gpu' if there
is a GPU, else 'cpu'.

    >>> strategy = get_strategy('cpu')
    >>> strategy.num_replicas_in_sync
    1
    >>> precision_policy('gpu', mixed=True), precision_policy(strategy, True)
    ('mixed_float16', 'mixed_bfloat16')

`distribute_input` turns a per-replica `dataset_fn` into the batches for
`strategy.run`, `release` lets go of the iterators of finished input off
the training's thread, and `resolve_bn_sync` says whether BatchNorm shares
its batch statistics across the replicas (`model.bn_sync`).

Mixed precision computes in float16 on GPUs, which needs loss scaling
(`wrap_optimizer`), and in bfloat16 on TPUs and CPUs, which does not.
`precision_scope` sets the Keras dtype policy for the layers built in its
body. Which worker of a cluster does what is `cluster`'s business.

What was run where: this module was written and tested on a machine with
neither GPU nor TPU. Tested here: 'cpu', 'gpus' on two logical CPUs
(cross-replica BatchNorm included), 'multi_worker' with a one-worker
TF_CONFIG and with two workers on one host, the errors of 'gpu' without a
GPU, of 'multi_worker' without or with a bad TF_CONFIG and of 'tpu' when
the resolver fails, and the precision, batch-size and BatchNorm-sharing
logic on CPU or with fake strategies. Not run: 'gpu' and 'gpus' on real
GPUs, float16 training, a multi-machine cluster, and any TPU. A grpc://
TPU address that nothing answers at makes TensorFlow's connect wait rather
than fail, so a wrong address can hang instead of raising.
"""
import contextlib
import dataclasses
import threading
from typing import (Any, Callable, Iterator, List, Optional, Sequence,
                    Union)

import keras
import tensorflow as tf

from efficientnetv2_tf import cluster
from hparams.errors import UserError
from hparams.registry import Registry


@dataclasses.dataclass(frozen=True)
class TPUAddress:
  """Where a TPU is: `tpu` is a name, 'local' or a grpc:// address."""
  tpu: Optional[str] = None
  zone: Optional[str] = None
  project: Optional[str] = None


# Each builds a strategy; only 'tpu' reads the address.
STRATEGIES: Registry[Callable[[TPUAddress], tf.distribute.Strategy]] = (
    Registry('strategy'))


def _has_gpu() -> bool:
  # Physical devices can be listed without initialising TensorFlow's
  # runtime, so this leaves `set_logical_cpus` possible.
  return bool(tf.config.list_physical_devices('GPU'))


@STRATEGIES.register('cpu')
def _cpu(address: TPUAddress) -> tf.distribute.Strategy:
  del address
  return tf.distribute.OneDeviceStrategy('/cpu:0')


@STRATEGIES.register('gpu')
def _gpu(address: TPUAddress) -> tf.distribute.Strategy:
  del address
  if not _has_gpu():
    raise UserError("strategy 'gpu' needs a GPU, but TensorFlow sees none; "
                    "use 'cpu', or check the CUDA installation")
  return tf.distribute.OneDeviceStrategy('/gpu:0')


@STRATEGIES.register('gpus')
def _gpus(address: TPUAddress) -> tf.distribute.Strategy:
  del address
  devices = (tf.config.list_logical_devices('GPU') or
             tf.config.list_logical_devices('CPU'))
  return tf.distribute.MirroredStrategy([device.name for device in devices])


@STRATEGIES.register('multi_worker')
def _multi_worker(address: TPUAddress) -> tf.distribute.Strategy:
  del address
  cluster.read_tf_config()  # TensorFlow reads it again, unchecked
  return tf.distribute.MultiWorkerMirroredStrategy()


@STRATEGIES.register('tpu')
def _tpu(address: TPUAddress) -> tf.distribute.Strategy:
  try:
    resolver = tf.distribute.cluster_resolver.TPUClusterResolver(
        tpu=address.tpu, zone=address.zone, project=address.project)
    tf.config.experimental_connect_to_cluster(resolver)
    tf.tpu.experimental.initialize_tpu_system(resolver)
  except Exception as e:  # pylint: disable=broad-except
    # The resolver fails in many ways (no name, unknown name, no metadata
    # server, no TPU kernels); each means the same to the user.
    reason = (str(e).strip() or type(e).__name__).splitlines()[0]
    raise UserError(f'no TPU was found at tpu={address.tpu!r} (zone '
                    f'{address.zone!r}, project {address.project!r}): '
                    f'{reason}') from None
  return tf.distribute.TPUStrategy(resolver)


def get_strategy(name: Optional[str] = None, tpu: Optional[str] = None,
                 tpu_zone: Optional[str] = None,
                 gcp_project: Optional[str] = None) -> tf.distribute.Strategy:
  """The `STRATEGIES` entry `name`; see the module docstring for None."""
  if name is None:
    name = 'tpu' if tpu else 'gpu' if _has_gpu() else 'cpu'
  return STRATEGIES.get(name)(TPUAddress(tpu, tpu_zone, gcp_project))


def set_logical_cpus(count: int) -> None:
  """Splits the CPU into `count` logical devices, e.g. to test 'gpus'.

  Must run before TensorFlow initialises its devices, that is before the
  first op or strategy; later it raises a `RuntimeError`, unless the CPU is
  already split that way.
  """
  if isinstance(count, bool) or not isinstance(count, int) or count < 1:
    raise UserError(f'the number of logical CPUs must be an integer >= 1; '
                    f'received: {count!r}')
  cpu = tf.config.list_physical_devices('CPU')[0]
  try:
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration()] * count)
  except RuntimeError:
    current = len(tf.config.list_logical_devices('CPU'))
    if current != count:
      raise RuntimeError(
          f'set_logical_cpus({count}) came too late: TensorFlow has already '
          f'set up its devices ({current} logical CPUs); call it before any '
          'op or strategy is created') from None


def _device_type(strategy_or_name: Union[str, tf.distribute.Strategy]) -> str:
  """'GPU', 'TPU' or 'CPU': what the replicas of a strategy compute on."""
  if isinstance(strategy_or_name, str):
    STRATEGIES.get(strategy_or_name)  # an unknown name is an error
    fixed = {'cpu': 'CPU', 'gpu': 'GPU', 'tpu': 'TPU'}
    return fixed.get(strategy_or_name.lower(),
                     'GPU' if _has_gpu() else 'CPU')
  if isinstance(strategy_or_name, tf.distribute.TPUStrategy):
    return 'TPU'
  try:
    devices = strategy_or_name.extended.worker_devices
  except RuntimeError:  # the default strategy lists no devices
    return 'GPU' if _has_gpu() else 'CPU'
  types = {tf.DeviceSpec.from_string(d).device_type for d in devices}
  return 'GPU' if 'GPU' in types else 'CPU'


_MIXED_POLICIES = {'GPU': 'mixed_float16', 'TPU': 'mixed_bfloat16',
                   'CPU': 'mixed_bfloat16'}


def precision_policy(strategy_or_name: Union[str, tf.distribute.Strategy],
                     mixed: bool) -> str:
  """The Keras dtype policy: 'float32', or the mixed one the device is fast
  at (float16 on GPUs; bfloat16 on TPUs and on CPUs, which lack float16
  kernels for many ops)."""
  if not mixed:
    return 'float32'
  return _MIXED_POLICIES[_device_type(strategy_or_name)]


@contextlib.contextmanager
def precision_scope(policy: str) -> Iterator[None]:
  """Makes `policy` the dtype policy of the layers built in the body.

  The policy is process-global in Keras; this restores the one before on
  leaving, even on an error, so that one run's precision does not leak into
  whatever is built next.

      >>> before = keras.mixed_precision.global_policy().name
      >>> with precision_scope('mixed_bfloat16'):
      ...   keras.layers.Dense(2).compute_dtype
      'bfloat16'
      >>> keras.mixed_precision.global_policy().name == before
      True
  """
  previous = keras.mixed_precision.global_policy()
  keras.mixed_precision.set_global_policy(policy)
  try:
    yield
  finally:
    keras.mixed_precision.set_global_policy(previous)


def share_first_replica(variables: Sequence[tf.Variable]) -> None:
  """Gives every replica the first replica's value of each variable, such
  as BatchNorm's moving statistics, which replicas keep each for itself
  unless synchronised. Call it outside `strategy.run`."""
  for variable in variables:
    variable.assign(tf.convert_to_tensor(variable))


def wrap_optimizer(optimizer: keras.optimizers.Optimizer,
                   policy: str) -> keras.optimizers.Optimizer:
  """Adds loss scaling under 'mixed_float16', whose small gradients would
  otherwise underflow; other policies need none."""
  if policy == 'mixed_float16' and not isinstance(
      optimizer, keras.optimizers.LossScaleOptimizer):
    return keras.optimizers.LossScaleOptimizer(optimizer)
  return optimizer


def check_batch_size(global_batch_size: int,
                     strategy: Union[int, tf.distribute.Strategy]) -> int:
  """The per-replica batch size; a `UserError` unless replicas share evenly.

  `strategy` may also be the number of replicas.
  """
  replicas = (strategy if isinstance(strategy, int) else
              strategy.num_replicas_in_sync)
  if global_batch_size < 1 or global_batch_size % replicas:
    raise UserError(f'batch size {global_batch_size} is not divisible by the '
                    f'{replicas} replicas; set train.batch_size to a positive '
                    f'multiple of {replicas}')
  return global_batch_size // replicas


def resolve_bn_sync(requested: Optional[bool],
                    strategy: tf.distribute.Strategy) -> bool:
  """Whether BatchNorm should share batch statistics across replicas.

  `requested` is `model.bn_sync`: None means on under `TPUStrategy`, as the
  original's `tpu_bn`, and off elsewhere; True and False force it. With one
  replica there is nothing to share, so the answer is then False whatever
  was asked: plain BatchNorm computes the same statistics, and with fewer
  ops. Every strategy in `STRATEGIES` can share them.

      >>> resolve_bn_sync(None, get_strategy('cpu'))
      False
  """
  if requested is None:
    requested = isinstance(strategy, tf.distribute.TPUStrategy)
  return bool(requested) and strategy.num_replicas_in_sync > 1


def _without_static_size(images: tf.Tensor, labels: tf.Tensor):
  shape = [images.shape[0], None, None, images.shape[-1]]
  return tf.compat.v1.placeholder_with_default(images, shape), labels


def distribute_input(strategy: tf.distribute.Strategy,
                     dataset_fn: Callable[[tf.distribute.InputContext],
                                          tf.data.Dataset],
                     any_image_size: bool = False, warm_start: bool = False):
  """The batches of `dataset_fn` for `strategy.run`, as a dataset-like.

  With one replica on one worker, and no TPU, this is the dataset itself.
  A distributed dataset there would add nothing but its prefetching
  iterator, which keeps one of TensorFlow's inter-op threads waiting; on a
  two-core host that halves the training step rate (`bench/training.py`).

  `any_image_size` hides the images' height and width from tracing, so
  that one traced step serves the batches of every stage, whatever their
  size; `TPUStrategy`, whose programs have static shapes, keeps them.
  `warm_start` starts the pipeline's background work when its iterator is
  made rather than at its first batch, so that a stage's input is being
  prepared while the previous stage is evaluated or its step traced.
  """
  tpu = isinstance(strategy, tf.distribute.TPUStrategy)

  def adapted(context: tf.distribute.InputContext) -> tf.data.Dataset:
    dataset = dataset_fn(context)
    if any_image_size and not tpu:
      dataset = dataset.map(_without_static_size)
    if warm_start:
      options = tf.data.Options()
      options.experimental_warm_start = True
      dataset = dataset.with_options(options)
    return dataset

  if not tpu and strategy.num_replicas_in_sync == 1:
    return adapted(tf.distribute.InputContext())
  return strategy.distribute_datasets_from_function(adapted)


def release(iterators: List[Any]) -> None:
  """Empties the list `iterators`, whose items the list alone refers to,
  and lets go of them on a thread of their own.

  Deleting a tf.data iterator can wait for its autotuning thread to wake,
  which sleeps up to a minute between rounds: a progressive run stood idle
  13 to 49 s at about one stage change in three. The wait holds no lock
  that Python needs, so on another thread it costs the training nothing.
  Python waits for the thread as it exits: as a daemon thread, left
  deleting while the process ended, it once made a process abort.
  """
  held = iterators[:]
  iterators.clear()
  if held:
    threading.Thread(target=held.clear, name='release_input').start()
