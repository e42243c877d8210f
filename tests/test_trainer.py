"""The training loop on tiny models: outputs, stages, EMA, NaN, fine-tuning."""
import csv
import json
import os
import re

import numpy as np
import pytest
import tensorflow as tf

import datasets
import hparams
from efficientnetv2_tf import distribute
from efficientnetv2_tf import progressive
from efficientnetv2_tf import runs
from efficientnetv2_tf import trainer as trainer_lib
from hparams import models
from hparams.errors import UserError
from tests import tf1_reference

TINY_RUN = ('model.width_coefficient=0.25,model.depth_coefficient=0.2,'
            'train.batch_size=32,data.per_class=16,train.isize=32.0,'
            'eval.isize=32,data.ibase=16,eval.batch_size=120,'
            'train.lr_warmup_epoch=0.0')


def tiny_config(*overrides):
  return hparams.get_config('efficientnetv2-b0', 'digits', TINY_RUN,
                            *overrides)


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  """A two-stage traineval run with the paper's schedule."""
  model_dir = str(tmp_path_factory.mktemp('run'))
  cfg = tiny_config('train.epochs=2,train.stages=2,progressive.schedule=paper,'
                    'model.dropout_rate=0.4,progressive.dropout_min=0.1')
  strategy = distribute.get_strategy('cpu')
  dataset = datasets.bind(cfg)
  trainer_lib.check_model_dir(model_dir, cfg)
  hparams.save_yaml(cfg, os.path.join(model_dir, 'config.yaml'))
  trainer = trainer_lib.Trainer(cfg, dataset, model_dir, strategy)
  results = trainer.train(evaluate=True)
  return model_dir, cfg, trainer, results


def test_a_run_leaves_results_metrics_curves_and_summaries(finished_run):
  model_dir, _, trainer, results = finished_run
  assert results['step'] == trainer.plan.total_steps == 10  # 160 // 32 * 2
  saved = json.load(open(os.path.join(model_dir, 'results.json')))
  assert saved['step'] == 10 and 0 <= saved['eval_top1'] <= 1
  assert saved['eval_images'] == 359  # evaluation sees the whole eval split
  assert saved['train_images_per_second'] > 0
  for name in ('curves.png', 'metrics.csv'):
    assert os.path.getsize(os.path.join(model_dir, name)) > 0
  assert os.listdir(os.path.join(model_dir, 'tensorboard'))
  assert tf.train.latest_checkpoint(os.path.join(model_dir, 'checkpoints'))


def test_each_epoch_trains_with_its_stage_settings(finished_run):
  model_dir, cfg, trainer, _ = finished_run
  rows = list(csv.DictReader(open(os.path.join(model_dir, 'metrics.csv'))))
  assert [int(r['stage']) for r in rows] == [0, 1]
  assert [int(r['image_size']) for r in rows] == [16, 32]  # paper: ibase..
  stages = progressive.plan(cfg, trainer.plan.steps_per_epoch)
  assert [s.dropout_rate for s in stages] == pytest.approx([0.1, 0.4])
  # Dropout changed in place, without rebuilding the model.
  assert trainer.model.get_layer('top_dropout').rate == pytest.approx(0.4)
  # Training time per epoch, evaluations left out, grows.
  seconds = [float(r['wall_seconds']) for r in rows]
  assert 0 < seconds[0] < seconds[1]


def test_stages_that_differ_only_in_image_size_share_one_traced_step(
    tmp_path):
  cfg = tiny_config('train.epochs=3,train.stages=3,progressive.schedule=code,'
                    'data.per_class=4')
  trainer = trainer_lib.Trainer(cfg, datasets.bind(cfg), str(tmp_path),
                                distribute.get_strategy('cpu'))
  trainer.train()
  sizes = [s.image_size for s in trainer.plan.stages]
  assert len(set(sizes)) == 3
  (loop,) = trainer._train_fns.values()  # pylint: disable=protected-access
  # The first size, then one trace for any size.
  assert loop.experimental_get_tracing_count() == 2
  assert trainer.train_images == trainer.plan.total_steps * 32 - 2 * 32


def test_evaluation_uses_the_ema_and_training_keeps_raw_weights(finished_run):
  _, _, trainer, results = finished_run
  raw = [v.numpy() for v in trainer.model.trainable_variables]
  with trainer.ema.applied():
    averaged = [v.numpy() for v in trainer.model.trainable_variables]
    ema, trainer.ema = trainer.ema, None
    try:
      by_hand = trainer.evaluate()
    finally:
      trainer.ema = ema
  assert any(not np.allclose(a, b) for a, b in zip(raw, averaged))
  for before, after in zip(raw, trainer.model.trainable_variables):
    np.testing.assert_array_equal(before, after.numpy())
  assert trainer.evaluate()['eval_loss'] == pytest.approx(
      by_hand['eval_loss'], rel=1e-5)
  assert results['eval_loss'] == pytest.approx(by_hand['eval_loss'],
                                               rel=1e-5)


def test_a_finished_run_resumes_to_nothing_more(finished_run):
  model_dir, cfg, _, _ = finished_run
  again = trainer_lib.Trainer(cfg, datasets.bind(cfg), model_dir,
                              distribute.get_strategy('cpu'))
  results = again.train(evaluate=False)
  assert results['step'] == 10 and again.train_images == 0


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  cfg = tiny_config('train.epochs=1,train.lr_base=1e30,train.ema_decay=0.0,'
                    'runtime.checkpoint_every_steps=1,train.optimizer=sgd')
  trainer = trainer_lib.Trainer(cfg, datasets.bind(cfg), str(tmp_path),
                                distribute.get_strategy('cpu'))
  with pytest.raises(trainer_lib.TrainingError,
                     match=r'the loss became (nan|inf) at step \d+ .*the '
                     r'last good checkpoint is .*ckpt-\d+'):
    trainer.train()
  latest = tf.train.latest_checkpoint(str(tmp_path / 'checkpoints'))
  assert latest is not None


def test_finetuning_from_an_official_checkpoint_with_other_classes(tmp_path):
  images = np.zeros((1, 32, 32, 3), np.float32)
  directory, _, values = tf1_reference.official_checkpoint(
      images, tmp_path / 'official', 'efficientnetv2-b0',
      models.V2_BASE_BLOCKS, num_classes=7, width=0.25, depth=0.2)
  cfg = tiny_config(f'train.epochs=1,train.ft_init_ckpt={directory}')
  trainer = trainer_lib.Trainer(cfg, datasets.bind(cfg), str(tmp_path / 'ft'),
                                distribute.get_strategy('cpu'))
  stem = trainer.model.get_layer('stem').weights[0].numpy()
  np.testing.assert_allclose(
      stem, values['efficientnetv2-b0/stem/conv2d/kernel'], rtol=1e-6)
  assert trainer.model.num_classes == 10
  assert trainer.train()['step'] == 5


def test_finetuning_from_a_run_directory_starts_from_its_ema(finished_run,
                                                           tmp_path):
  model_dir, cfg, trainer, _ = finished_run
  ft_cfg = tiny_config(f'train.ft_init_ckpt={model_dir}')
  ft = trainer_lib.Trainer(ft_cfg, datasets.bind(ft_cfg), str(tmp_path),
                           distribute.get_strategy('cpu'))
  with trainer.ema.applied():
    for want, got in zip(trainer.model.weights, ft.model.weights):
      if 'seed_generator' not in want.path:
        np.testing.assert_array_equal(want.numpy(), got.numpy())
  assert ft.step == 0  # the weights, not the run's step or optimizer


def test_freezing_trains_only_the_classifier(tmp_path):
  cfg = tiny_config('train.epochs=1,train.freeze_epochs=1.0,'
                    'train.ema_decay=0.0')
  trainer = trainer_lib.Trainer(cfg, datasets.bind(cfg), str(tmp_path),
                                distribute.get_strategy('cpu'))
  before = {v.path: v.numpy() for v in trainer.model.variables}
  trainer.train()
  changed = {v.path for v in trainer.model.variables
             if not np.array_equal(before[v.path], v.numpy()) and
             'seed_generator' not in v.path}  # dropout's random state
  # BatchNorm statistics stay put too: frozen layers run in inference mode.
  assert changed == {'predictions/kernel', 'predictions/bias'}
  assert trainer.model.get_layer('stem').trainable  # unfrozen afterwards


def test_plan_checks_batch_and_replicas():
  cfg = tiny_config()
  with pytest.raises(UserError, match='batch size 32 is not divisible by the '
                     '3 replicas'):
    trainer_lib.make_plan(cfg, 1000, 3)
  with pytest.raises(UserError, match='larger than the 10 training images'):
    trainer_lib.make_plan(cfg, 10, 1)
  cfg = tiny_config('train.min_steps=100,train.epochs=1')
  assert trainer_lib.make_plan(cfg, 320, 1).epochs == 10


def test_a_model_dir_of_another_model_is_refused(finished_run):
  model_dir, _, _, _ = finished_run
  other = hparams.get_config('efficientnetv2-s', 'digits', TINY_RUN)
  with pytest.raises(UserError, match=r"holds a run of another model "
                     r"\(model.model_name='efficientnetv2-b0'.*use a new "
                     r'--model_dir'):
    trainer_lib.check_model_dir(model_dir, other)


def test_an_unwritable_model_dir_is_refused(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('')
  with pytest.raises(UserError, match='is not writable'):
    trainer_lib.check_model_dir(str(blocker / 'run'), tiny_config())


def test_eval_mode_without_a_checkpoint_fails_at_once(tmp_path):
  cfg = tiny_config()
  with pytest.raises(UserError, match='no checkpoint in .* to evaluate; '
                     'train first, or pass --eval_timeout'):
    runs.run('eval', cfg, datasets.bind, str(tmp_path),
             distribute.get_strategy('cpu'))


def test_eval_mode_evaluates_the_latest_checkpoint(finished_run, tmp_path):
  model_dir, cfg, _, results = finished_run
  evaluated = runs.run('eval', cfg, datasets.bind, model_dir,
                       distribute.get_strategy('cpu'), eval_timeout=5)
  assert evaluated['step'] == 10
  assert evaluated['eval_top1'] == pytest.approx(results['eval_top1'])


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


@pytest.mark.parametrize('sweeps, message', [
    ('data.ibase=16|48', 'data.ibase=48: data.ibase=48 is above the '
                         'training image size 32'),
    ('progressive.schedule=paper,progressive.dropout_min=0.1|0.5',
     'progressive.schedule=paper,progressive.dropout_min=0.5: '
     'progressive.dropout_min=0.5 is above model.dropout_rate=0.2'),
])
def test_sweeps_refuse_a_combination_without_a_stage_plan_before_training(
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


def test_bfloat16_accumulation_loops_and_plateau_run_together(tmp_path):
  cfg = tiny_config('train.epochs=2,train.grad_accum_steps=2,'
                    'runtime.steps_per_loop=3,runtime.mixed_precision=true,'
                    'train.lr_sched=plateau,train.plateau_patience=1,'
                    'train.optimizer=adamw')
  trainer = trainer_lib.Trainer(cfg, datasets.bind(cfg), str(tmp_path),
                                distribute.get_strategy('cpu'))
  try:
    assert trainer.policy == 'mixed_bfloat16'
    results = trainer.train(evaluate=True)
  finally:
    distribute.apply_precision('float32')
  assert results['step'] == 10 and np.isfinite(results['eval_loss'])
  assert trainer.model.get_layer('stem').compute_dtype == 'bfloat16'
  assert trainer.model.get_layer('predictions').compute_dtype == 'float32'


@pytest.mark.slow
def test_xla_compiles_the_training_step(tmp_path):
  cfg = tiny_config('train.epochs=1,train.stages=1,train.jit_compile=true,'
                    'train.grad_accum_steps=2')
  trainer = trainer_lib.Trainer(cfg, datasets.bind(cfg), str(tmp_path),
                                distribute.get_strategy('cpu'))
  before = trainer.model.get_layer('stem').weights[0].numpy()
  results = trainer.train()
  assert results['step'] == 5 and np.isfinite(results['train_loss'])
  assert not np.allclose(before,
                         trainer.model.get_layer('stem').weights[0].numpy())
