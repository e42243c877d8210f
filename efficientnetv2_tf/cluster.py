"""The workers of a run: who they are, where each writes, how they agree.

A multi-worker cluster is described by the `TF_CONFIG` environment
variable; `read_tf_config` refuses one that TensorFlow would misread or
hang on. Every function below also takes a single-worker strategy (one
CPU, GPUs, a TPU), which is then its own chief.

Every worker saves (saving is collective), so each writes to its own
directory (`RunDir.for_worker`); only the chief's copy in `model_dir` is
kept, and it is the one every worker restores: `check_shared_dir` refuses
a model_dir that some worker cannot read. `worker_sum` is the workers'
agreement (on SIGTERM, for one), and `lost_worker` names the worker whose
loss failed a collective.

    >>> import tensorflow as tf
    >>> strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
    >>> is_chief(strategy), num_workers(strategy), task_name(strategy)
    (True, 1, 'chief')
    >>> worker_sum(strategy)(3)
    3

How fast a lost worker is noticed is TensorFlow's doing, with its defaults
kept. A killed process resets its connections, which fails the others'
next collective at once. Every worker sends heartbeats to the coordination
service in the chief, whose timeout is 10 s by default: the service aborts
the collectives of the others when one worker falls silent, and the
others' heartbeats fail when the chief does (on one host, a stopped worker
was noticed after 6 s, a stopped chief after 11 s). Those settings have no
public API, and the public per-collective
`CommunicationOptions(timeout_seconds=...)` is meant for debugging: it
starts a thread per collective, and a timeout short enough to matter would
also end healthy runs whose workers wait on each other (a first trace, a
slow save).

What was run where: two workers on one host (sent SIGTERM, killed, or
given model_dirs they do not share) and one worker alone; the rest with
fake strategies. Not run: a multi-machine cluster.
"""
import json
import os
import re
import secrets
from typing import Any, Callable, Dict, Optional

import tensorflow as tf

from hparams.errors import UserError


def read_tf_config() -> Dict[str, Any]:
  """The `TF_CONFIG` environment variable, parsed; a `UserError` unless it
  names a cluster and a task of it."""
  text = os.environ.get('TF_CONFIG')
  try:
    tf_config = json.loads(text) if text else {}
  except json.JSONDecodeError:
    tf_config = None
  if not isinstance(tf_config, dict) or not all(
      tf_config.get(key) and isinstance(tf_config[key], dict)
      for key in ('cluster', 'task')):
    raise UserError(
        "multi_worker needs TF_CONFIG, a JSON object with 'cluster' and "
        "'task', e.g. {\"cluster\": {\"worker\": [\"host1:2222\", "
        "\"host2:2222\"]}, \"task\": {\"type\": \"worker\", \"index\": 0}}; "
        f'received: TF_CONFIG={text!r}')
  _check_cluster(tf_config['cluster'], tf_config['task'])
  return tf_config


def _check_address(job: str, index: int, address: Any) -> None:
  host, _, port = str(address).rpartition(':')
  if not (isinstance(address, str) and host and port.isdigit() and
          0 < int(port) < 65536):
    raise UserError(f'TF_CONFIG {job} {index} has the address {address!r}; '
                    'it must be a string "host:port" with a port in 1-65535')


def _check_cluster(cluster: dict, task: dict) -> None:
  """Refuses a TF_CONFIG task that is not in its cluster, and an address
  listed twice, before TensorFlow starts a server with them."""
  unused = sorted(set(cluster) - {'chief', 'worker', 'evaluator'})
  if unused:  # a parameter server would wait for work forever
    raise UserError(f'TF_CONFIG has the job(s) {", ".join(map(repr, unused))}'
                    ', which multi_worker does not use; allowed: chief, '
                    'worker, evaluator')
  owners = {}
  for job, addresses in cluster.items():
    if not isinstance(addresses, list):
      raise UserError(f'TF_CONFIG job {job!r} must list its tasks\' '
                      f'"host:port" addresses; received: {addresses!r}')
    for index, address in enumerate(addresses):
      _check_address(job, index, address)
      if address in owners:
        raise UserError(
            f'TF_CONFIG lists the address {address!r} twice ({owners[address]}'
            f' and {job} {index}); every task needs an address of its own')
      owners[address] = f'{job} {index}'
  task_type, index = task.get('type'), task.get('index')
  if task_type not in cluster:
    raise UserError(f'TF_CONFIG task type {task_type!r} is not a job of the '
                    f'cluster; allowed: {", ".join(map(repr, cluster))}')
  count = len(cluster[task_type])
  try:
    position = int(index)  # as TensorFlow reads it: '1' is 1
  except (TypeError, ValueError):
    position = -1
  if isinstance(index, bool) or not 0 <= position < count:
    raise UserError(f'TF_CONFIG task index {index!r} is outside the cluster: '
                    f'job {task_type!r} has {count} task(s), indices 0 to '
                    f'{count - 1}')


def is_chief(strategy: tf.distribute.Strategy) -> bool:
  """Whether this worker is the one whose files are kept: the 'chief' task,
  or worker 0 when the cluster has no chief; always for one worker."""
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return True  # one client drives every TPU host
  resolver = strategy.cluster_resolver
  task_type = resolver.task_type if resolver else None
  if task_type is None or task_type == 'chief':
    return True
  return (task_type == 'worker' and resolver.task_id == 0 and
          'chief' not in resolver.cluster_spec().jobs)


def num_workers(strategy: tf.distribute.Strategy) -> int:
  """How many processes train together: the chief and worker tasks of a
  multi-worker cluster, else 1 (a TPU pod has one client)."""
  if isinstance(strategy, tf.distribute.TPUStrategy):
    return 1
  resolver = strategy.cluster_resolver
  if resolver is None or resolver.task_type is None:
    return 1
  spec = resolver.cluster_spec()
  return sum(spec.num_tasks(job) for job in ('chief', 'worker')
             if job in spec.jobs)


def task_name(strategy: tf.distribute.Strategy) -> str:
  """This process's task as a message names it, e.g. 'worker 1'."""
  resolver = strategy.cluster_resolver
  if resolver is None or resolver.task_type is None:
    return 'chief'
  return f'{resolver.task_type} {resolver.task_id}'


def worker_sum(strategy: tf.distribute.Strategy) -> Callable[[int], int]:
  """A function that sums an integer over the workers, each giving its own.

  It is a collective: every worker must call it at the same point of its
  run, and it fails like any collective when a worker is gone. With one
  worker it returns its argument.
  """
  workers = num_workers(strategy)
  if workers == 1:
    return int
  replicas_per_worker = strategy.num_replicas_in_sync // workers

  @tf.function
  def total(value):
    return strategy.reduce('SUM', strategy.run(tf.identity, args=(value,)),
                           axis=None)

  def call(value: int) -> int:
    # Each of a worker's replicas gives the worker's value.
    return int(total(tf.constant(value, tf.int64))) // replicas_per_worker
  return call


def _probe_path(model_dir: str, token: int) -> str:
  # A name never used before: an NFS client may remember that an old name
  # was missing.
  return os.path.join(model_dir, f'.shared_dir_probe-{token}')


def check_shared_dir(model_dir: str, strategy: tf.distribute.Strategy,
                     total: Callable[[int], int]) -> None:
  """Raises a `UserError` on every worker unless every worker reads what the
  chief writes to `model_dir`: all of them resume from the chief's
  checkpoints. `total` is `worker_sum(strategy)`."""
  chief = is_chief(strategy)
  token = 1 + secrets.randbelow(2**31 - 1) if chief else 0
  if chief:
    with tf.io.gfile.GFile(_probe_path(model_dir, token), 'w') as f:
      f.write(str(token))
  token = total(token)  # the chief's, sent once its file is written
  try:
    with tf.io.gfile.GFile(_probe_path(model_dir, token)) as f:
      seen = f.read() == str(token)
  except (OSError, tf.errors.OpError):
    seen = False
  blind = total(0 if seen else 1)
  if chief:
    tf.io.gfile.remove(_probe_path(model_dir, token))
  if blind:
    who = (f'{blind} of the {num_workers(strategy)} workers' if seen else
           f'this worker ({task_name(strategy)})')
    raise UserError(f'{who} cannot read what the chief writes to model_dir '
                    f'{model_dir!r}; model_dir must be on a filesystem all '
                    f'workers share (GCS, NFS)')


# The errors a collective raises when a worker is gone: its connection was
# refused or reset, it stopped sending heartbeats to the coordination
# service, or the collectives were aborted because of one of these.
PEER_FAILURES = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError,
                 tf.errors.AbortedError, tf.errors.CancelledError)
_TASK = re.compile(r'/job:(\w+)/(?:replica:\d+/)?task:(\d+)')


def lost_worker(strategy: tf.distribute.Strategy,
                error: tf.errors.OpError) -> Optional[str]:
  """The worker that a failed collective's error names as gone, e.g.
  'worker 1'; None when the error does not say."""
  me = task_name(strategy)
  message = error.message
  # The coordination service lists the tasks whose heartbeats stopped; a
  # failed call names its remote target.
  for marker in ('unhealthy', 'remote target'):
    if marker in message:
      tasks = _TASK.findall(message.split(marker, 1)[1])
      names = [f'{job} {index}' for job, index in tasks]
      names = [name for name in names if name != me]
      if names:
        return names[0]
  if 'CoordinationService' in message:
    # The coordination service runs in the chief, or worker 0 without one.
    jobs = strategy.cluster_resolver.cluster_spec().jobs
    leader = 'chief 0' if 'chief' in jobs else 'worker 0'
    return leader if leader != me else None
  return None
