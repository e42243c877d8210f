"""runs: the files a run saves, its model_dir checks, eval mode and sweeps."""
import csv
import json
import os
import re

import pytest
import tensorflow as tf
import yaml

from app import runs
import datasets
import hparams
from efficientnetv2_tf import distribute
from efficientnetv2_tf.run_dir import RunDir
from hparams.errors import UserError
from tests.conftest import tiny_config
from tests.conftest import TINY_RUN


def test_a_stretched_run_saves_the_epochs_it_trains_and_its_plan(tmp_path):
  # 40 images in batches of 8: 5 steps an epoch, so 12 steps need 3 epochs.
  cfg = tiny_config('data.per_class=4,train.batch_size=8,train.epochs=1,'
                    'train.min_steps=12,train.stages=2,'
                    'progressive.stage_epochs=0.4|0.6')
  results = runs.run('train', cfg, datasets.bind, str(tmp_path),
                     distribute.get_strategy('cpu'))
  saved = yaml.safe_load((tmp_path / 'config.yaml').read_text())
  assert saved['train']['epochs'] == 3
  assert saved['progressive']['stage_epochs'] == pytest.approx([1.2, 1.8])
  assert cfg.train.epochs == 1  # planning does not write to the config
  plan = json.loads((tmp_path / 'plan.json').read_text())
  assert (plan['epochs'], plan['steps_per_epoch'], plan['global_batch'],
          plan['total_steps']) == (3, 5, 8, 15)
  assert results['step'] == results['total_steps'] == plan['total_steps']
  latest = tf.train.latest_checkpoint(str(tmp_path / 'checkpoints'))
  assert latest.endswith(f'ckpt-{plan["total_steps"]}')
  assert [(s['start_step'], s['end_step'], s['image_size'])
          for s in plan['stages']] == [(0, 6, 24), (6, 15, 32)]
  assert [s['epochs'] for s in plan['stages']] == pytest.approx([1.2, 1.8])
  assert {'dropout_rate', 'magnitude', 'mixup_alpha', 'cutmix_alpha'} <= set(
      plan['stages'][0])


def test_eval_mode_without_a_checkpoint_fails_at_once(tmp_path):
  cfg = tiny_config()
  with pytest.raises(UserError, match='no checkpoint in .* to evaluate; '
                     'train first, or pass --eval_timeout'):
    runs.run('eval', cfg, datasets.bind, str(tmp_path),
             distribute.get_strategy('cpu'))
  assert not (tmp_path / 'config.yaml').exists()
  # A model_dir mistyped is not made.
  with pytest.raises(UserError, match='no checkpoint in .* to evaluate'):
    runs.run('eval', cfg, datasets.bind, str(tmp_path / 'typo'),
             distribute.get_strategy('cpu'))
  assert not (tmp_path / 'typo').exists()


@pytest.mark.parametrize('given, message', [
    ('checkpoints/ckpt-4', "is a checkpoint; --mode=eval takes the "
     r"directory of a training run \(the run in '{run}'\)"),
    ('checkpoints', "is the checkpoints folder of the run in '{run}'"),
    ('checkpoints/', "is the checkpoints folder of the run in '{run}'"),
])
def test_eval_mode_refuses_a_checkpoint_and_makes_nothing_there(
    tmp_path, given, message):
  run = tmp_path / 'run'
  (run / 'checkpoints').mkdir(parents=True)
  hparams.save_yaml(tiny_config(), str(run / 'config.yaml'))
  (run / 'checkpoints' / 'ckpt-4.index').write_text('')
  model_dir = os.path.join(str(run), given)
  with pytest.raises(UserError,
                     match=message.format(run=re.escape(str(run)))):
    runs.run('eval', tiny_config(), datasets.bind, model_dir,
             distribute.get_strategy('cpu'))
  # A folder named as the checkpoint would hide it from --weights.
  assert sorted(os.listdir(run / 'checkpoints')) == ['ckpt-4.index']


def test_a_model_dir_of_another_model_is_refused(tmp_path):
  specs = hparams.build_specs(tiny_config())
  hparams.save_yaml(tiny_config(), str(tmp_path / 'config.yaml'))
  runs.check_model_dir(RunDir(str(tmp_path)), specs.model)
  other = hparams.get_specs('efficientnetv2-s', 'digits', TINY_RUN)
  with pytest.raises(UserError, match=r"holds a run of another model "
                     r"\(model.model_name='efficientnetv2-b0'.*use a new "
                     r'--model_dir'):
    runs.check_model_dir(RunDir(str(tmp_path)), other.model)


@pytest.mark.parametrize('mode', ['train', 'traineval'])
def test_a_run_shortened_below_the_step_it_reached_is_refused(tmp_path,
                                                              mode):
  # A run of 3 epochs of 5 steps, trained to its end.
  hparams.save_yaml(tiny_config('train.epochs=3,model.num_classes=10'),
                    str(tmp_path / 'config.yaml'))
  checkpoints = tmp_path / 'checkpoints'
  optimizer = tf.Module()
  optimizer._iterations = tf.Variable(15, dtype=tf.int64)  # pylint: disable=protected-access
  tf.train.Checkpoint(optimizer=optimizer).write(
      str(checkpoints / 'ckpt-15'))
  tf.compat.v1.train.update_checkpoint_state(str(checkpoints), 'ckpt-15')
  saved = (tmp_path / 'config.yaml').read_text()
  with pytest.raises(UserError, match=r"holds a run trained to step 15, "
                     r'past the 10 steps this config plans \(train.epochs=2, '
                     r'batch 32\); raise train.epochs or use a new '
                     r'--model_dir'):
    runs.run(mode, tiny_config('train.epochs=2'), datasets.bind,
             str(tmp_path), distribute.get_strategy('cpu'))
  # The run's record still says what trained.
  assert (tmp_path / 'config.yaml').read_text() == saved
  assert not (tmp_path / 'plan.json').exists()


def test_an_unwritable_model_dir_is_refused(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  with pytest.raises(UserError, match='is not writable'):
    runs.check_model_dir(RunDir(str(blocker / 'run')),
                         hparams.build_specs(tiny_config()).model)


def test_sweeps_run_each_combination_and_write_a_summary(tmp_path, capsys):
  def make_config(extra):
    return tiny_config('train.epochs=1,data.per_class=4,train.batch_size=8',
                       extra)
  rows = runs.run_sweep('train', make_config, datasets.bind, str(tmp_path),
                        distribute.get_strategy('cpu'),
                        'train.lr_base=0.01|0.02,model.dropout_rate=0.1')
  assert [r['run'] for r in rows] == [
      'train.lr_base=0.01,model.dropout_rate=0.1',
      'train.lr_base=0.02,model.dropout_rate=0.1']
  assert all(r['step'] == 5 for r in rows)
  summary = list(csv.DictReader(open(tmp_path / 'sweeps.csv')))
  assert len(summary) == 2
  assert 'sweep summary:' in capsys.readouterr().out
  for row in rows:
    plan = json.loads((tmp_path / row['run'] / 'plan.json').read_text())
    assert plan['total_steps'] == 5


@pytest.mark.parametrize('sweeps, message', [
    ('data.ibase=16|48', 'data.ibase=48: data.ibase=48 is above the '
                         'training image size 32'),
    ('progressive.schedule=paper,progressive.dropout_min=0.1|0.5',
     'progressive.schedule=paper,progressive.dropout_min=0.5: '
     'progressive.dropout_min=0.5 is above model.dropout_rate=0.2'),
    ('train.grad_accum_steps=2|3', 'train.grad_accum_steps=3: '
                                   'train.grad_accum_steps=3 must divide '
                                   'the per-replica batch 32'),
])
def test_sweeps_refuse_a_combination_that_cannot_be_planned_before_training(
    sweeps, message, tmp_path):
  bound = []

  def bind(cfg):
    bound.append(cfg)
    return datasets.bind(cfg)
  with pytest.raises(UserError,
                     match=re.escape(f'--sweeps combination {message}')):
    runs.run_sweep('train', tiny_config, bind, str(tmp_path),
                   distribute.get_strategy('cpu'), sweeps)
  assert not bound and not os.listdir(tmp_path)


def test_a_sweep_value_that_is_a_list_is_one_alternative():
  two = "['r1_k3_s1_e1_i32_o16_c1','r1_k3_s2_e4_i16_o24_c0']"
  one = "['r1_k3_s1_e1_i32_o16_c1']"
  combinations = runs.sweep_combinations(
      f'model.blocks_args={two}|{one},model.dropout_rate=0.1|0.2')
  assert [(len(c['model.blocks_args']), c['model.dropout_rate'])
          for c in combinations] == [(2, 0.1), (2, 0.2), (1, 0.1), (1, 0.2)]
  alone = runs.sweep_combinations(f'model.blocks_args={two}')
  assert [len(c['model.blocks_args']) for c in alone] == [2]
