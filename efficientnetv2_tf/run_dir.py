"""A run's model_dir: what it holds, and where, in one place.

    model_dir/
      config.yaml     the config that ran, epochs as planned
      plan.json       the plan derived from it: steps, batch, stages
      labels.txt      the class names, in label order
      checkpoints/    ckpt-<step>.*, the `checkpoint` state file and
                      model_info.json (see `checkpoints`)
      metrics.csv     one row per epoch and evaluation  } written by
      tensorboard/    the same, and per-step scalars     } `reporting`
      curves.png      loss and top-1 per epoch           }
      results.json    the final metrics                  }
      workers/<task>/ the own copies of a cluster's other workers

`save` writes the first three together; `load_specs` reads config.yaml
back through the strict config chain, so a run saved before a key existed
gets that key's default:

    >>> import tempfile
    >>> import hparams
    >>> from efficientnetv2_tf import progressive
    >>> specs = hparams.get_specs('efficientnetv2-b0', 'digits')
    >>> plan = progressive.make_plan(specs, train_size=1437, num_replicas=1)
    >>> run = RunDir(tempfile.mkdtemp())
    >>> run.save(specs, plan, [str(i) for i in range(10)])
    >>> run.load_specs() == plan.applied_to(specs), run.labels()[:3]
    (True, ['0', '1', '2'])
"""
import dataclasses
import json
import os
from typing import List, Optional

import ml_collections
import tensorflow as tf

import hparams
from efficientnetv2_tf import cluster
from efficientnetv2_tf.progressive import RunPlan
from hparams.errors import UserError
from hparams.specs import Specs


def _write_atomically(path: str, text: str) -> None:
  with open(path + '.tmp', 'w') as f:
    f.write(text)
  os.replace(path + '.tmp', path)


@dataclasses.dataclass(frozen=True)
class RunDir:
  """The files of the run in `path`."""
  path: str

  def _file(self, name: str) -> str:
    return os.path.join(self.path, name)

  @property
  def config(self) -> str:
    return self._file('config.yaml')

  @property
  def plan(self) -> str:
    return self._file('plan.json')

  @property
  def labels_file(self) -> str:
    return self._file('labels.txt')

  @property
  def checkpoints(self) -> str:
    return self._file('checkpoints')

  @property
  def metrics(self) -> str:
    return self._file('metrics.csv')

  @property
  def tensorboard(self) -> str:
    return self._file('tensorboard')

  @property
  def curves(self) -> str:
    return self._file('curves.png')

  @property
  def results(self) -> str:
    return self._file('results.json')

  def for_worker(self, strategy: tf.distribute.Strategy) -> 'RunDir':
    """Where this worker writes: this directory for the chief, one of its
    own for any other worker of a cluster, whose copies are never read."""
    if cluster.is_chief(strategy):
      return self
    resolver = strategy.cluster_resolver
    return RunDir(os.path.join(self.path, 'workers',
                               f'{resolver.task_type}_{resolver.task_id}'))

  def exists(self) -> bool:
    """Whether a run has saved its config here."""
    return os.path.isfile(self.config)

  def save(self, specs: Specs, plan: RunPlan, class_names: List[str]) -> None:
    """Writes config.yaml (the specs with `plan`'s epochs), plan.json and
    labels.txt, each atomically."""
    os.makedirs(self.path, exist_ok=True)
    _write_atomically(self.config, hparams.to_yaml(
        hparams.config_from_specs(plan.applied_to(specs))))
    _write_atomically(self.plan, json.dumps(plan.to_dict(), indent=2))
    _write_atomically(self.labels_file, '\n'.join(class_names) + '\n')

  def load_config(self, *overrides: hparams.Overrides
                  ) -> ml_collections.ConfigDict:
    """The saved config, then `overrides`, through the strict config
    chain; checked as `hparams.get_config` checks."""
    if not self.exists():
      raise UserError(f'{self.path!r} is not a run directory: it has no '
                      'config.yaml; pass the model_dir of a training run')
    cfg = hparams.resolve(None, None, hparams.load_yaml(self.config),
                          *overrides)
    hparams.build_specs(cfg)
    return cfg

  def load_specs(self) -> Specs:
    """The specs of the saved config."""
    return hparams.build_specs(self.load_config())

  def labels(self) -> Optional[List[str]]:
    """The saved class names, or None when the run saved none."""
    if not os.path.isfile(self.labels_file):
      return None
    with open(self.labels_file) as f:
      return f.read().splitlines()

  @classmethod
  def of_checkpoint(cls, prefix: str) -> Optional['RunDir']:
    """The training run whose checkpoints/ holds checkpoint `prefix`, or
    None when it is not one of a run's."""
    folder = os.path.dirname(os.path.abspath(prefix))
    run = cls(os.path.dirname(folder))
    if os.path.abspath(run.checkpoints) == folder and os.path.isfile(
        run.config):
      return run
    return None

  def latest_checkpoint(self) -> Optional[str]:
    """The newest checkpoint's prefix, or None."""
    return tf.train.latest_checkpoint(self.checkpoints)

  def checkpoint(self, name: Optional[str] = None) -> str:
    """The prefix of checkpoint `name` (a prefix, or a name such as
    'ckpt-120' in checkpoints/), or of the newest when None."""
    if name is None:
      latest = self.latest_checkpoint()
      if latest is None:
        raise UserError(f'no checkpoint in {self.checkpoints}; train first '
                        'or pass a checkpoint')
      return latest
    if tf.io.gfile.exists(name + '.index'):
      return name
    named = os.path.join(self.checkpoints, name)
    if not tf.io.gfile.exists(named + '.index'):
      raise UserError(f'checkpoint {name!r} is neither a checkpoint prefix '
                      f'nor a name in {self.checkpoints}')
    return named

  def describe(self) -> str:
    """The path and what a finished run leaves there, for the console."""
    files = [os.path.basename(f) for f in (self.config, self.plan)]
    files.append(os.path.basename(self.checkpoints) + '/')
    files += [os.path.basename(f) for f in (self.metrics, self.curves)]
    files.append(os.path.basename(self.tensorboard) + '/')
    files.append(os.path.basename(self.results))
    return f'{self.path} ({", ".join(files)})'
