"""What `main.py` runs to train or evaluate: one job or a sweep of jobs in a
model_dir. `app.inference` holds the modes that use a trained model.

    results = runs.run('traineval', cfg, datasets.bind, 'runs/b0', strategy)

`bind(cfg)` turns a config into a dataset object (and fixes
`model.num_classes`); it is passed in because the library does not import
the `datasets` package.

A run plans first (`progressive.make_plan`), then the chief saves, side by
side, `config.yaml`, the config that runs (with the epochs it trains, once
`train.min_steps` has stretched them), and `plan.json`, the plan derived
from it: epochs, steps per epoch, total steps, global batch and each stage's
steps, image size and regularisation.

A sweep, `'train.epochs=20|40,model.dropout_rate=0.2|0.5'`, runs every
combination in its own sub-directory of model_dir, named after its
settings, and writes `sweeps.csv` with each one's final metrics.
"""
import csv
import itertools
import json
import os
import tempfile
from typing import Any, Callable, Dict, List

import tensorflow as tf

import hparams
from efficientnetv2_tf import cluster
from efficientnetv2_tf import distribute
from efficientnetv2_tf import progressive
from efficientnetv2_tf import trainer as trainer_lib
from efficientnetv2_tf.dataset_protocol import DatasetSource
from hparams import specs
from hparams.errors import UserError

MODES = ('train', 'eval', 'traineval', 'export', 'predict', 'benchmark')
# The modes that use a trained model rather than train one.
INFERENCE_MODES = ('export', 'predict', 'benchmark')
SWEEP_COLUMNS = ('step', 'eval_top1', 'eval_top5', 'eval_loss',
                 'wall_seconds', 'train_images_per_second')


def check_mode(mode: str) -> None:
  if mode not in MODES:
    raise UserError(f'unknown --mode {mode!r}; allowed: {", ".join(MODES)}')


def check_model_dir(model_dir: str, cfg: Any) -> None:
  """Refuses an unwritable model_dir or one that holds another model."""
  try:
    os.makedirs(model_dir, exist_ok=True)
    # A probe of its own: the workers of a cluster check the same directory
    # at the same time.
    with tempfile.NamedTemporaryFile(dir=model_dir, prefix='.write_test'):
      pass
  except OSError as e:
    raise UserError(f'model_dir {model_dir!r} is not writable '
                    f'({e.strerror})') from None
  saved = os.path.join(model_dir, 'config.yaml')
  if os.path.exists(saved):
    previous = hparams.load_yaml(saved).get('model', {})
    # A model_dir whose run differs in one of these holds another model.
    for key in specs.ARCHITECTURE_KEYS:
      if key in previous and previous[key] != cfg.model[key] and not (
          isinstance(cfg.model[key], (list, tuple)) and
          list(previous[key]) == list(cfg.model[key])):
        raise UserError(
            f'model_dir {model_dir!r} holds a run of another model '
            f'(model.{key}={previous[key]!r}, now {cfg.model[key]!r}); '
            f'use a new --model_dir')


def save_run_files(model_dir: str, cfg: Any, plan: progressive.RunPlan,
                   class_names: List[str]) -> None:
  """Writes config.yaml (the config that runs, `plan` applied), plan.json
  and labels.txt together."""
  hparams.save_yaml(plan.applied_to(cfg),
                    os.path.join(model_dir, 'config.yaml'))
  with open(os.path.join(model_dir, 'plan.json'), 'w') as f:
    json.dump(plan.to_dict(), f, indent=2)
  with open(os.path.join(model_dir, 'labels.txt'), 'w') as f:
    f.write('\n'.join(class_names) + '\n')


def run(mode: str, cfg: Any, bind: Callable[[Any], DatasetSource],
        model_dir: str, strategy: tf.distribute.Strategy,
        eval_timeout: float = 0.0) -> Dict[str, Any]:
  """Trains, evaluates, or both, in `model_dir`; returns the results."""
  check_mode(mode)
  dataset = bind(cfg)
  check_model_dir(model_dir, cfg)
  plan = progressive.make_plan(cfg, dataset.split_size(cfg.data.train_split),
                               strategy.num_replicas_in_sync)
  if cluster.is_chief(strategy) and mode != 'eval':
    save_run_files(model_dir, cfg, plan, dataset.class_names)
  trainer = trainer_lib.Trainer(cfg, dataset, model_dir, strategy, plan)
  if cluster.is_chief(strategy):
    print(f'{dataset.name}: {dataset.num_classes} classes, '
          f'{dataset.split_size(cfg.data.train_split):,} training images; '
          f'{plan.total_steps} steps of batch {plan.global_batch} in '
          f'{len(plan.stages)} stage(s) on '
          f'{strategy.num_replicas_in_sync} replica(s), '
          f'{trainer.policy}', flush=True)
  if mode == 'eval':
    return trainer.evaluate_checkpoints(eval_timeout)
  results = trainer.train(evaluate=mode == 'traineval')
  if cluster.is_chief(strategy):
    print(f'model_dir: {model_dir} (config.yaml, plan.json, checkpoints/, '
          f'metrics.csv, curves.png, tensorboard/, results.json)')
  return results


def sweep_combinations(text: str) -> List[Dict[str, Any]]:
  """`'a=1|2,b=x'` -> [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]."""
  options = hparams.parse_overrides(text)
  if not options:
    raise UserError(f'--sweeps {text!r} has no key=value|value pairs')
  keys = list(options)
  values = [v if isinstance(v, list) else [v] for v in options.values()]
  return [dict(zip(keys, combo)) for combo in itertools.product(*values)]


def sweep_name(combination: Dict[str, Any]) -> str:
  text = ','.join(f'{k}={v}' for k, v in combination.items())
  return ''.join(c if c.isalnum() or c in '=,.-_' else '_' for c in text)


def _checked_config(make_config: Callable[[Dict[str, Any]], Any],
                    combination: Dict[str, Any], num_replicas: int) -> Any:
  """A sweep combination's config, refused with its name unless the run
  can be planned."""
  try:
    cfg = make_config(combination)
    # Planned as `run` plans it, but before any dataset is read: the checks
    # do not depend on the dataset's size, so one batch stands for it.
    progressive.make_plan(cfg, cfg.train.batch_size, num_replicas)
  except UserError as e:
    raise UserError(f'--sweeps combination {sweep_name(combination)}: '
                    f'{e}') from None
  return cfg


def run_sweep(mode: str, make_config: Callable[[Dict[str, Any]], Any],
              bind: Callable[[Any], DatasetSource], model_dir: str,
              strategy: tf.distribute.Strategy, sweeps: str,
              eval_timeout: float = 0.0) -> List[Dict[str, Any]]:
  """Runs every combination of `sweeps`; writes and prints a summary.

  Every combination's config and plan are checked before the first
  run starts, so that a bad one does not fail after others have trained.
  """
  combinations = sweep_combinations(sweeps)
  configs = [_checked_config(make_config, c, strategy.num_replicas_in_sync)
             for c in combinations]
  rows = []
  for combination, cfg in zip(combinations, configs):
    directory = os.path.join(model_dir, sweep_name(combination))
    results = run(mode, cfg, bind, directory, strategy, eval_timeout)
    rows.append({'run': sweep_name(combination), **{
        k: results.get(k) for k in SWEEP_COLUMNS}})
  if cluster.is_chief(strategy):
    path = os.path.join(model_dir, 'sweeps.csv')
    with open(path, 'w', newline='') as f:
      writer = csv.DictWriter(f, ('run',) + SWEEP_COLUMNS)
      writer.writeheader()
      writer.writerows(rows)
    width = max(len(r['run']) for r in rows)
    print(f'{"run":<{width}}  top-1   step')
    for r in rows:
      top1 = '-' if r['eval_top1'] is None else f'{r["eval_top1"]:.4f}'
      print(f'{r["run"]:<{width}}  {top1:>6}  {r["step"]}')
    print(f'sweep summary: {path}')
  return rows
