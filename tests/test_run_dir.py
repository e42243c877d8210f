"""RunDir: the layout of a run's directory, saving and loading a run."""
import doctest
import json

import pytest
import yaml

import hparams
from efficientnetv2_tf import progressive
from efficientnetv2_tf import run_dir
from efficientnetv2_tf.run_dir import RunDir
from hparams.errors import UserError
from tests.strategies import fake_strategy


def test_module_docstring_example_runs():
  result = doctest.testmod(run_dir)
  assert result.attempted > 0 and result.failed == 0


def test_a_saved_run_holds_the_config_that_runs_and_its_plan(tmp_path):
  specs = hparams.get_specs('efficientnetv2-b0', 'digits',
                            'train.batch_size=32,train.epochs=1,'
                            'train.min_steps=30,'
                            'train.stages=2,progressive.stage_epochs=0.5|0.5')
  plan = progressive.make_plan(specs, train_size=320, num_replicas=1)
  run = RunDir(str(tmp_path))
  run.save(specs, plan, ['zero', 'one'])
  saved = yaml.safe_load(open(run.config))
  assert saved['train']['epochs'] == 3  # 30 steps of 10 an epoch
  assert saved['progressive']['stage_epochs'] == [1.5, 1.5]
  assert json.load(open(run.plan))['total_steps'] == 30
  assert run.labels() == ['zero', 'one']
  loaded = run.load_specs()
  assert loaded == plan.applied_to(specs)
  assert progressive.make_plan(loaded, 320, 1) == plan
  assert not list(tmp_path.glob('*.tmp'))


def test_a_config_saved_before_a_key_existed_loads_with_its_default(tmp_path):
  specs = hparams.get_specs('efficientnetv2-b0', 'digits',
                            'train.min_steps=7')
  saved = hparams.config_values(specs)
  del saved['train']['min_steps']
  del saved['train']['image_size'], saved['train']['image_size_ratio']
  saved['train']['isize'] = 0.5  # the deprecated key
  (tmp_path / 'config.yaml').write_text(yaml.safe_dump(saved))
  loaded = RunDir(str(tmp_path)).load_specs()
  assert loaded.optim.min_steps == 0
  assert loaded.data.image_size_ratio == 0.5
  assert loaded.model == specs.model


def test_a_saved_config_with_an_unknown_key_is_refused(tmp_path):
  (tmp_path / 'config.yaml').write_text('train: {epoch: 3}\n')
  with pytest.raises(UserError, match="unknown config key 'train.epoch'; "
                     'closest valid: train.epochs'):
    RunDir(str(tmp_path)).load_specs()


def test_a_directory_without_a_config_is_not_a_run(tmp_path):
  run = RunDir(str(tmp_path))
  assert not run.exists() and run.labels() is None
  with pytest.raises(UserError, match='is not a run directory: it has no '
                     'config.yaml'):
    run.load_specs()


def test_checkpoints_are_found_by_prefix_name_or_as_the_newest(tmp_path):
  run = RunDir(str(tmp_path))
  with pytest.raises(UserError, match='no checkpoint in .*checkpoints; '
                     'train first'):
    run.checkpoint()
  checkpoints = tmp_path / 'checkpoints'
  checkpoints.mkdir()
  for step in (2, 4):
    (checkpoints / f'ckpt-{step}.index').write_text('')
  (checkpoints / 'checkpoint').write_text(
      'model_checkpoint_path: "ckpt-4"\n'
      'all_model_checkpoint_paths: "ckpt-2"\n'
      'all_model_checkpoint_paths: "ckpt-4"\n')
  assert run.checkpoint() == str(checkpoints / 'ckpt-4')
  assert run.checkpoint('ckpt-2') == str(checkpoints / 'ckpt-2')
  prefix = str(checkpoints / 'ckpt-2')
  assert run.checkpoint(prefix) == prefix
  with pytest.raises(UserError, match="checkpoint 'ckpt-3' is neither"):
    run.checkpoint('ckpt-3')


def test_only_the_chief_writes_to_the_run_directory():
  run = RunDir('/runs/s')
  chief = fake_strategy('chief', 0, ('chief', 'worker'))
  worker = fake_strategy('worker', 1, ('chief', 'worker'))
  assert run.for_worker(chief) == run
  assert run.for_worker(worker).path == '/runs/s/workers/worker_1'
  assert run.for_worker(worker).checkpoints == (
      '/runs/s/workers/worker_1/checkpoints')


def test_describe_lists_what_a_finished_run_leaves():
  assert RunDir('runs/b0').describe() == (
      'runs/b0 (config.yaml, plan.json, checkpoints/, metrics.csv, '
      'curves.png, tensorboard/, results.json)')
