"""What `main.py` runs: one job or a sweep of jobs in a model_dir.

    results = runs.run('traineval', cfg, datasets.bind, 'runs/b0', strategy)

`bind(cfg)` turns a config into a dataset object (and fixes
`model.num_classes`); it is passed in because the library does not import
the `datasets` package.

A sweep, `'train.epochs=20|40,model.dropout_rate=0.2|0.5'`, runs every
combination in its own sub-directory of model_dir, named after its
settings, and writes `sweeps.csv` with each one's final metrics.
"""
import csv
import itertools
import os
from typing import Any, Callable, Dict, List

import tensorflow as tf

import hparams
from efficientnetv2_tf import distribute
from efficientnetv2_tf import trainer as trainer_lib
from hparams.errors import UserError

MODES = ('train', 'eval', 'traineval', 'export', 'predict', 'benchmark')
# Modes whose code is not part of this version yet.
NOT_YET = ('export', 'predict', 'benchmark')
SWEEP_COLUMNS = ('step', 'eval_top1', 'eval_top5', 'eval_loss',
                 'wall_seconds', 'train_images_per_second')


def check_mode(mode: str) -> None:
  if mode not in MODES:
    raise UserError(f'unknown --mode {mode!r}; allowed: {", ".join(MODES)}')
  if mode in NOT_YET:
    raise UserError(f'--mode={mode} is not available in this version; '
                    f'available: train, eval, traineval')


def run(mode: str, cfg: Any, bind: Callable[[Any], Any], model_dir: str,
        strategy: tf.distribute.Strategy,
        eval_timeout: float = 0.0) -> Dict[str, Any]:
  """Trains, evaluates, or both, in `model_dir`; returns the results."""
  check_mode(mode)
  dataset = bind(cfg)
  trainer_lib.check_model_dir(model_dir, cfg)
  if distribute.is_chief(strategy) and mode != 'eval':
    hparams.save_yaml(cfg, os.path.join(model_dir, 'config.yaml'))
  trainer = trainer_lib.Trainer(cfg, dataset, model_dir, strategy)
  if distribute.is_chief(strategy):
    print(f'{dataset.name}: {dataset.num_classes} classes, '
          f'{dataset.split_size(cfg.data.train_split):,} training images; '
          f'{trainer.plan.total_steps} steps of batch '
          f'{trainer.plan.global_batch} in {len(trainer.plan.stages)} '
          f'stage(s) on {strategy.num_replicas_in_sync} replica(s), '
          f'{trainer.policy}', flush=True)
  if mode == 'eval':
    return trainer.evaluate_checkpoints(eval_timeout)
  results = trainer.train(evaluate=mode == 'traineval')
  if distribute.is_chief(strategy):
    print(f'model_dir: {model_dir} (config.yaml, checkpoints/, metrics.csv, '
          f'curves.png, tensorboard/, results.json)')
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


def run_sweep(mode: str, make_config: Callable[[Dict[str, Any]], Any],
              bind: Callable[[Any], Any], model_dir: str,
              strategy: tf.distribute.Strategy, sweeps: str,
              eval_timeout: float = 0.0) -> List[Dict[str, Any]]:
  """Runs every combination of `sweeps`; writes and prints a summary."""
  combinations = sweep_combinations(sweeps)
  configs = [make_config(c) for c in combinations]  # check all up front
  rows = []
  for combination, cfg in zip(combinations, configs):
    directory = os.path.join(model_dir, sweep_name(combination))
    results = run(mode, cfg, bind, directory, strategy, eval_timeout)
    rows.append({'run': sweep_name(combination), **{
        k: results.get(k) for k in SWEEP_COLUMNS}})
  if distribute.is_chief(strategy):
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
