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
import json
import os
from typing import Any, Callable, Dict, List, Optional, Union

import tensorflow as tf

import hparams
from efficientnetv2_tf import benchmark as benchmark_lib
from efficientnetv2_tf import distribute
from efficientnetv2_tf import export as export_lib
from efficientnetv2_tf import predict as predict_lib
from efficientnetv2_tf import progressive
from efficientnetv2_tf import trainer as trainer_lib
from hparams.errors import UserError

MODES = ('train', 'eval', 'traineval', 'export', 'predict', 'benchmark')
# The modes that use a trained model rather than train one.
INFERENCE_MODES = ('export', 'predict', 'benchmark')
SWEEP_COLUMNS = ('step', 'eval_top1', 'eval_top5', 'eval_loss',
                 'wall_seconds', 'train_images_per_second')


def check_mode(mode: str) -> None:
  if mode not in MODES:
    raise UserError(f'unknown --mode {mode!r}; allowed: {", ".join(MODES)}')


def run(mode: str, cfg: Any, bind: Callable[[Any], Any], model_dir: str,
        strategy: tf.distribute.Strategy,
        eval_timeout: float = 0.0) -> Dict[str, Any]:
  """Trains, evaluates, or both, in `model_dir`; returns the results."""
  check_mode(mode)
  dataset = bind(cfg)
  trainer_lib.check_model_dir(model_dir, cfg)
  if distribute.is_chief(strategy) and mode != 'eval':
    hparams.save_yaml(cfg, os.path.join(model_dir, 'config.yaml'))
    with open(os.path.join(model_dir, 'labels.txt'), 'w') as f:
      f.write('\n'.join(dataset.class_names) + '\n')
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


def load_source(model_dir: str, model_name: str,
                weights: Optional[str] = None,
                checkpoint: Optional[str] = None,
                model_config: Optional[Dict[str, Any]] = None
                ) -> export_lib.Source:
  """Published or given `weights` (a model built with `model_config`) when
  set, else the run in `model_dir`."""
  if weights:
    return export_lib.load_pretrained(model_name, weights, model_config)
  return export_lib.load_run(model_dir, checkpoint)


def run_export(source: export_lib.Source, export_dir: str, overwrite: bool,
               quantization: str) -> Dict[str, Any]:
  info = export_lib.export(source, export_dir, overwrite=overwrite,
                           quantization=quantization)
  print(f'exported {source.model_name} (step {source.step}) to {export_dir}:')
  for name, size in info['files'].items():
    print(f'  {name:20s} {size / 2**20:8.2f} MiB')
  return info


def run_predict(source: Union[str, export_lib.Source], image_path: str,
                top_k: int,
                output: str) -> List[Dict[str, Any]]:
  rows = predict_lib.predict(source, image_path, top_k)
  for row in rows:
    print(predict_lib.describe(row))
  with open(output, 'w') as f:
    json.dump(rows, f, indent=2)
  failed = sum('error' in row for row in rows)
  print(f'{len(rows) - failed} images classified, {failed} unreadable; '
        f'predictions: {output}')
  return rows


def run_benchmark(source: export_lib.Source, image_size: Optional[int],
                  batch_sizes: str, iterations: int,
                  jit_compile: bool) -> List[benchmark_lib.Result]:
  results = benchmark_lib.benchmark(
      source.model, image_size or source.image_size,
      benchmark_lib.parse_batch_sizes(batch_sizes), iterations=iterations,
      jit_compile=jit_compile)
  for result in results:
    print(benchmark_lib.format_result(result))
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
                    combination: Dict[str, Any]) -> Any:
  """A sweep combination's config, refused with its name unless its
  progressive stages can be planned."""
  try:
    cfg = make_config(combination)
    # The stages' settings do not depend on the dataset's size: planning
    # with any number of steps an epoch finds the bad ones.
    progressive.plan(cfg, steps_per_epoch=1)
  except UserError as e:
    raise UserError(f'--sweeps combination {sweep_name(combination)}: '
                    f'{e}') from None
  return cfg


def run_sweep(mode: str, make_config: Callable[[Dict[str, Any]], Any],
              bind: Callable[[Any], Any], model_dir: str,
              strategy: tf.distribute.Strategy, sweeps: str,
              eval_timeout: float = 0.0) -> List[Dict[str, Any]]:
  """Runs every combination of `sweeps`; writes and prints a summary.

  Every combination's config and stage plan are checked before the first
  run starts, so that a bad one does not fail after others have trained.
  """
  combinations = sweep_combinations(sweeps)
  configs = [_checked_config(make_config, c) for c in combinations]
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
