"""What `main.py` runs to train or evaluate: one job or a sweep of jobs in a
model_dir. `app.inference` holds the modes that use a trained model.

    results = runs.run('traineval', cfg, datasets.bind, 'runs/b0', strategy)

`bind(cfg)` turns a config into a dataset object (and fixes
`model.num_classes`); it is passed in because the library does not import
the `datasets` package.

A run builds its specs (`hparams.build_specs`) and plans
(`progressive.make_plan`); then the chief saves, side by side (`RunDir`),
`config.yaml`, the config that runs (with the epochs it trains, once
`train.min_steps` has stretched them), and `plan.json`, the plan derived
from it: epochs, steps per epoch, total steps, global batch and each stage's
steps, image size and regularisation.

A sweep, `'train.epochs=20|40,model.dropout_rate=0.2|0.5'`, runs every
combination in its own sub-directory of model_dir, named after its
settings, and writes `sweeps.csv` with each one's final metrics.
"""
import csv
import itertools
import os
import tempfile
from typing import Any, Callable, Dict, List

import tensorflow as tf

import hparams
from efficientnetv2_tf import checkpoints
from efficientnetv2_tf import cluster
from efficientnetv2_tf import progressive
from efficientnetv2_tf import trainer as trainer_lib
from efficientnetv2_tf.dataset_protocol import DatasetSource
from efficientnetv2_tf.run_dir import RunDir
from hparams.errors import UserError
from hparams.specs import ModelSpec
from hparams.specs import Specs

MODES = ('train', 'eval', 'traineval', 'export', 'predict', 'benchmark')
# The modes that use a trained model rather than train one.
INFERENCE_MODES = ('export', 'predict', 'benchmark')
SWEEP_COLUMNS = ('step', 'eval_top1', 'eval_top5', 'eval_loss',
                 'wall_seconds', 'train_images_per_second')


def check_mode(mode: str) -> None:
  if mode not in MODES:
    raise UserError(f'unknown --mode {mode!r}; allowed: {", ".join(MODES)}')


def check_model_dir(run: RunDir, spec: ModelSpec) -> None:
  """Refuses an unwritable model_dir or one that holds another model."""
  try:
    os.makedirs(run.path, exist_ok=True)
    # A probe of its own: the workers of a cluster check the same directory
    # at the same time.
    with tempfile.NamedTemporaryFile(dir=run.path, prefix='.write_test'):
      pass
  except OSError as e:
    raise UserError(f'model_dir {run.path!r} is not writable '
                    f'({e.strerror})') from None
  if not run.exists():
    return
  changes = run.load_specs().model.architecture_changes(spec)
  if changes:
    key, before, now = changes[0]
    raise UserError(f'model_dir {run.path!r} holds a run of another model '
                    f'({key}={before!r}, now {now!r}); use a new --model_dir')


def check_resumable(run: RunDir, plan: progressive.RunPlan) -> None:
  """Refuses a model_dir whose run has trained past the last step of
  `plan`: a shorter run cannot resume from there."""
  latest = run.latest_checkpoint()
  step = checkpoints.step_of(latest) if latest else None
  if step is not None and step > plan.total_steps:
    raise UserError(
        f'model_dir {run.path!r} holds a run trained to step '
        f'{step}, past the {plan.total_steps} steps this config '
        f'plans (train.epochs={plan.epochs:g}, batch {plan.global_batch}); '
        'raise train.epochs or use a new --model_dir')


def check_eval_dir(model_dir: str, eval_timeout: float = 0.0) -> None:
  """Refuses a checkpoint, or a run's checkpoints/ folder, as the model_dir
  to evaluate: a run directory would be made there, beside the run's
  checkpoints. Without `eval_timeout`, refuses a model_dir without a
  checkpoint before anything is written there."""
  path = os.path.normpath(model_dir)
  if tf.io.gfile.exists(path + '.index'):
    run = RunDir.of_checkpoint(path)
    where = f' (the run in {run.path!r})' if run else ''
    raise UserError(f'model_dir {model_dir!r} is a checkpoint; --mode=eval '
                    f'takes the directory of a training run{where} and '
                    'evaluates its latest checkpoint')
  run = RunDir.of_checkpoint(os.path.join(path, 'ckpt'))
  if run:
    raise UserError(f'model_dir {model_dir!r} is the checkpoints folder of '
                    f'the run in {run.path!r}; pass the run\'s directory')
  folder = RunDir(model_dir).checkpoints
  if not eval_timeout and not tf.train.latest_checkpoint(folder):
    raise UserError(f'no checkpoint in {folder!r} to evaluate; train first, '
                    'or pass --eval_timeout=SECONDS to wait')


def check_recipe(mode: str, specs: Specs) -> None:
  """Refuses settings that a training `mode` could not honour."""
  if mode not in ('train', 'traineval'):
    return
  optim = specs.optim
  if optim.optimizer == 'adamw' and optim.weight_decay_inc:
    raise UserError(
        f'train.weight_decay_inc={optim.weight_decay_inc} grows the L2 decay '
        'of the other optimizers; adamw decays at the fixed rate '
        'train.weight_decay: set train.weight_decay_inc=0 or choose another '
        'train.optimizer')
  if mode == 'train' and (optim.lr_schedule == 'plateau' or
                          optim.early_stop_patience):
    raise UserError(
        'train.lr_sched=plateau and train.early_stop_patience follow the '
        'evaluations after each epoch, which --mode=train does not run; use '
        '--mode=traineval')


def run(mode: str, cfg: Any, bind: Callable[[Any], DatasetSource],
        model_dir: str, strategy: tf.distribute.Strategy,
        eval_timeout: float = 0.0) -> Dict[str, Any]:
  """Trains, evaluates, or both, in `model_dir`; returns the results.

  The config ends here: `bind` fixes its class count from the dataset, and
  from then on the run reads only its specs and plan.
  """
  check_mode(mode)
  if mode == 'eval':
    check_eval_dir(model_dir, eval_timeout)
  dataset = bind(cfg)
  specs = hparams.build_specs(cfg)
  check_recipe(mode, specs)
  run_dir = RunDir(model_dir)
  check_model_dir(run_dir, specs.model)
  train_size = dataset.split_size(specs.data.train_split)
  plan = progressive.make_plan(specs, train_size,
                               strategy.num_replicas_in_sync)
  if mode != 'eval':
    check_resumable(run_dir, plan)
  chief = cluster.is_chief(strategy)
  if chief and mode != 'eval':
    run_dir.save(specs, plan, dataset.class_names)
  trainer = trainer_lib.Trainer(specs, dataset, model_dir, strategy, plan)
  if chief:
    print(f'{dataset.name}: {dataset.num_classes} classes, '
          f'{train_size:,} training images; '
          f'{plan.total_steps} steps of batch {plan.global_batch} in '
          f'{len(plan.stages)} stage(s) on '
          f'{strategy.num_replicas_in_sync} replica(s), '
          f'{trainer.policy}', flush=True)
  if mode == 'eval':
    return trainer.evaluate_checkpoints(eval_timeout)
  results = trainer.train(evaluate=mode == 'traineval')
  if chief:
    print(f'model_dir: {run_dir.describe()}')
  return results


def sweep_combinations(text: str) -> List[Dict[str, Any]]:
  """`'a=1|2,b=x'` -> [{'a': 1, 'b': 'x'}, {'a': 2, 'b': 'x'}]."""
  options = hparams.parse_overrides(text, alternatives=True)
  if not options:
    raise UserError(f'--sweeps {text!r} has no key=value|value pairs')
  return [dict(zip(options, combo))
          for combo in itertools.product(*options.values())]


def sweep_name(combination: Dict[str, Any]) -> str:
  text = ','.join(f'{k}={v}' for k, v in combination.items())
  return ''.join(c if c.isalnum() or c in '=,.-_' else '_' for c in text)


def _checked_config(mode: str,
                    make_config: Callable[[Dict[str, Any]], Any],
                    combination: Dict[str, Any], num_replicas: int) -> Any:
  """A sweep combination's config, refused with its name unless the run
  can be planned."""
  try:
    cfg = make_config(combination)
    specs = hparams.build_specs(cfg)
    check_recipe(mode, specs)
    # Planned as `run` plans it, but before any dataset is read: the checks
    # do not depend on the dataset's size, so one batch stands for it.
    progressive.make_plan(specs, specs.optim.batch_size, num_replicas)
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
  configs = [_checked_config(mode, make_config, c,
                             strategy.num_replicas_in_sync)
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
