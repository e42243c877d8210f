"""Stand-ins for strategies that this machine cannot create: as much of
one as `cluster` and `distribute` look at."""
import types

import tensorflow as tf


def fake_tpu_strategy():
  # A real one needs a TPU; isinstance checks need only the class.
  return tf.distribute.TPUStrategy.__new__(tf.distribute.TPUStrategy)


def fake_strategy(task_type=None, task_id=0, jobs=('worker',)):
  """A strategy with just a cluster resolver, as a worker of `jobs` sees it;
  each job has two tasks."""
  if task_type is None:
    return types.SimpleNamespace(cluster_resolver=None)
  spec = tf.train.ClusterSpec({job: [f'{job}{i}:2222' for i in range(2)]
                               for job in jobs})
  resolver = tf.distribute.cluster_resolver.SimpleClusterResolver(
      spec, task_type=task_type, task_id=task_id)
  return types.SimpleNamespace(cluster_resolver=resolver)
