import doctest
import json
import os
import re

import pytest
import tensorflow as tf

from efficientnetv2_tf import cluster
from hparams.errors import UserError
from tests.strategies import fake_strategy
from tests.strategies import fake_tpu_strategy


def worker_config(workers, index, task_type='worker', **jobs):
  return {'cluster': {'worker': workers, **jobs},
          'task': {'type': task_type, 'index': index}}


@pytest.mark.parametrize('tf_config', [
    None, '', 'not json', '{"cluster": {}}',
    '{"cluster": {"worker": ["a:1"]}}'])
def test_read_tf_config_without_a_cluster_raises(monkeypatch, tf_config):
  if tf_config is None:
    monkeypatch.delenv('TF_CONFIG', raising=False)
  else:
    monkeypatch.setenv('TF_CONFIG', tf_config)
  with pytest.raises(UserError, match='multi_worker needs TF_CONFIG'):
    cluster.read_tf_config()


@pytest.mark.parametrize('tf_config, message', [
    (worker_config(['a:1', 'b:1'], 2),
     "TF_CONFIG task index 2 is outside the cluster: job 'worker' has 2 "
     "task(s), indices 0 to 1"),
    (worker_config(['a:1', 'b:1'], -1), 'TF_CONFIG task index -1 is outside'),
    (worker_config(['a:1', 'b:1'], 'one'),
     "TF_CONFIG task index 'one' is outside"),
    (worker_config(['a:1', 'b:1'], None), 'TF_CONFIG task index None is'),
    (worker_config(['a:1', 'b:1'], True), 'TF_CONFIG task index True is'),
    (worker_config(['a:1', 'a:1'], 0),
     "TF_CONFIG lists the address 'a:1' twice (worker 0 and worker 1); "
     "every task needs an address of its own"),
    (worker_config(['a:1', 'b:1'], 0, chief=['b:1']),
     "TF_CONFIG lists the address 'b:1' twice (worker 1 and chief 0)"),
    (worker_config(['a:1'], 0, 'ps'),
     "TF_CONFIG task type 'ps' is not a job of the cluster; allowed: "
     "'worker'"),
    (worker_config([['a:1'], 'b:1'], 0),
     "TF_CONFIG worker 0 has the address ['a:1']; it must be a string "
     '"host:port" with a port in 1-65535'),
    (worker_config(['a:1'], 0, ps=['b:1']),
     "TF_CONFIG has the job(s) 'ps', which multi_worker does not use; "
     'allowed: chief, worker, evaluator'),
    (worker_config(['a:1', 'nohost'], 0),
     "TF_CONFIG worker 1 has the address 'nohost'"),
    (worker_config(['a:1', 'b:99999'], 0),
     "TF_CONFIG worker 1 has the address 'b:99999'"),
    (worker_config('a:1', 0),
     "TF_CONFIG job 'worker' must list its tasks' \"host:port\" addresses;"
     " received: 'a:1'"),
])
def test_read_tf_config_refuses_a_bad_cluster_naming_the_value(
    monkeypatch, tf_config, message):
  monkeypatch.setenv('TF_CONFIG', json.dumps(tf_config))
  with pytest.raises(UserError, match=re.escape(message)):
    cluster.read_tf_config()


def test_read_tf_config_reads_a_task_index_as_tensorflow_does(monkeypatch):
  # TensorFlow takes int('1'); the check does too.
  tf_config = worker_config(['a:1', 'b:1'], '1')
  monkeypatch.setenv('TF_CONFIG', json.dumps(tf_config))
  assert cluster.read_tf_config() == tf_config


@pytest.mark.parametrize('strategy, chief', [
    (fake_strategy(), True),  # one worker
    (fake_strategy('chief', 0, ('chief', 'worker')), True),
    (fake_strategy('worker', 0, ('worker',)), True),  # no chief: worker 0
    (fake_strategy('worker', 0, ('chief', 'worker')), False),
    (fake_strategy('worker', 1, ('worker',)), False),
    (fake_tpu_strategy(), True),
])
def test_is_chief(strategy, chief):
  assert cluster.is_chief(strategy) is chief


def test_is_chief_for_a_single_worker_strategy():
  assert cluster.is_chief(tf.distribute.OneDeviceStrategy('/cpu:0'))


@pytest.mark.parametrize('strategy, workers, name', [
    (fake_strategy(), 1, 'chief'),
    (fake_strategy('worker', 1, ('worker',)), 2, 'worker 1'),
    (fake_strategy('chief', 0, ('chief', 'worker', 'ps')), 4, 'chief 0'),
])
def test_num_workers_counts_the_chief_and_worker_tasks(strategy, workers,
                                                        name):
  assert cluster.num_workers(strategy) == workers
  assert cluster.task_name(strategy) == name


def test_a_tpu_pod_is_one_worker():
  assert cluster.num_workers(fake_tpu_strategy()) == 1


def test_one_worker_reads_its_own_model_dir(tmp_path):
  strategy = tf.distribute.OneDeviceStrategy('/cpu:0')
  cluster.check_shared_dir(str(tmp_path), strategy,
                           cluster.worker_sum(strategy))
  assert not os.listdir(tmp_path)  # the probe is gone


def test_a_worker_that_cannot_read_the_chiefs_file_is_refused(tmp_path):
  # Worker 1 of two, whose model_dir is not the chief's: the chief's token
  # names a file it does not see, and the sum says one worker is blind.
  worker = fake_strategy('worker', 1, ('worker',))
  given = []

  def total(value):
    given.append(value)
    return 12345 if len(given) == 1 else value
  with pytest.raises(UserError, match=re.escape(
      'this worker (worker 1) cannot read what the chief writes to '
      f"model_dir '{tmp_path}'; model_dir must be on a filesystem all "
      'workers share (GCS, NFS)')):
    cluster.check_shared_dir(str(tmp_path), worker, total)
  assert given == [0, 1]


# Abridged from the errors two workers on one host raised when the other
# was killed (a reset connection) or stopped (missed heartbeats).
RESET = ('Collective ops is aborted by: recvmsg:Connection reset by peer\n'
         'Additional GRPC error information from remote target '
         '/job:worker/replica:0/task:1 while calling '
         '/tensorflow.WorkerService/RecvBuf:')
UNHEALTHY = ('Collective ops is aborted by: Error reported from '
             '/job:worker/task:1: The following tasks are unhealthy (stopped '
             'sending heartbeats):\n/job:worker/replica:0/task:1\n')
NO_LEADER = ('Collective ops is aborted by: Deadline Exceeded\n'
             'RPC: /tensorflow.CoordinationService/Heartbeat')


@pytest.mark.parametrize('me, message, lost', [
    (0, RESET, 'worker 1'),
    (0, UNHEALTHY, 'worker 1'),
    (1, NO_LEADER, 'worker 0'),  # the coordination service's host
    (0, NO_LEADER, None),
    (0, 'Collective ops is aborted by: Cancelled', None),
])
def test_lost_worker_is_the_one_the_error_names(me, message, lost):
  error = tf.errors.UnavailableError(None, None, message)
  assert cluster.lost_worker(fake_strategy('worker', me), error) == lost


def test_a_lost_worker_is_a_peer_failure():
  assert issubclass(tf.errors.UnavailableError, cluster.PEER_FAILURES)
  assert not issubclass(tf.errors.InvalidArgumentError,
                        cluster.PEER_FAILURES)


def test_module_docstring_example_runs():
  result = doctest.testmod(cluster, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0
  assert result.failed == 0
