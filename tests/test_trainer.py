"""The training loop on tiny models: outputs, stages, resuming, NaN,
freezing and precision."""
import csv
import json
import os
import shutil
import threading
import time
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientnetv2_tf import distribute
from efficientnetv2_tf import ema as ema_lib
from efficientnetv2_tf import progressive
from efficientnetv2_tf import train_state
from efficientnetv2_tf import trainer as trainer_lib
from efficientnetv2_tf.run_dir import RunDir
from hparams.errors import UserError
from tests.conftest import tiny_run


@pytest.fixture(scope='module')
def finished_run(tmp_path_factory):
  """A two-stage traineval run with the paper's schedule."""
  model_dir = str(tmp_path_factory.mktemp('run'))
  specs, dataset = tiny_run(
      'train.epochs=2,train.stages=2,progressive.schedule=paper,'
      'model.dropout_rate=0.4,progressive.dropout_min=0.1,'
      'progressive.eval_size=stage')
  dataset.training_inputs = []  # (image size, seed) of each pipeline made
  distribute_fn = dataset.distribute_fn

  def recorded(split, batch_size, **kwargs):
    if kwargs.get('training'):
      dataset.training_inputs.append((kwargs['image_size'], kwargs['seed']))
    return distribute_fn(split, batch_size, **kwargs)

  dataset.distribute_fn = recorded
  strategy = distribute.get_strategy('cpu')
  trainer = trainer_lib.Trainer(specs, dataset, model_dir, strategy)
  RunDir(model_dir).save(specs, trainer.plan, dataset.class_names)
  results = trainer.train(evaluate=True)
  return model_dir, specs, trainer, results


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
  model_dir, specs, trainer, _ = finished_run
  rows = list(csv.DictReader(open(os.path.join(model_dir, 'metrics.csv'))))
  assert [int(r['stage']) for r in rows] == [0, 1]
  assert [int(r['image_size']) for r in rows] == [16, 32]  # paper: ibase..
  # progressive.eval_size=stage; the eval size is the training size here.
  assert [int(r['eval_image_size']) for r in rows] == [16, 32]
  stages = progressive.plan(specs, trainer.plan.steps_per_epoch)
  assert [s.dropout_rate for s in stages] == pytest.approx([0.1, 0.4])
  # Dropout changed in place, without rebuilding the model.
  assert trainer.model.top_dropout.rate == pytest.approx(0.4)
  # Training time per epoch, evaluations left out, grows.
  seconds = [float(r['wall_seconds']) for r in rows]
  assert 0 < seconds[0] < seconds[1]


def test_stages_that_differ_in_image_size_and_dropout_share_one_traced_step(
    tmp_path, caplog):
  # 2 epochs of 3 steps in 3 stages: the first two end inside an epoch.
  specs, dataset = tiny_run(
      'train.epochs=2,train.stages=3,progressive.schedule=paper,'
      'data.per_class=10,train.sched=true,model.dropout_rate=0.3,'
      'progressive.dropout_min=0.1')
  trainer = trainer_lib.Trainer(specs, dataset, str(tmp_path),
                                distribute.get_strategy('cpu'))
  epochs = [np.zeros(3), np.zeros(3)]  # steps, summed loss, correct
  run_loop = trainer._run_loop  # pylint: disable=protected-access

  def recorded(*args):
    result = run_loop(*args)
    epochs[(trainer.step - 1) // 3] += result[:3]
    return result

  trainer._run_loop = recorded  # pylint: disable=protected-access
  trainer.train()
  assert [s.end_step for s in trainer.plan.stages] == [2, 4, 6]
  # Updates 5 and 6 decay by 6/15 and 7/16 (the warm-up): 0.175 is left,
  # a hair less in float32.
  assert ('train.ema_decay=0.99 keeps 17% of the evaluated averages from '
          'before the last stage (2 steps at 32 px)') in caplog.text
  # Each epoch's row counts all its steps, across the stage change within.
  rows = trainer.reporter.rows()
  assert len(rows) == 2
  for row, (steps, loss, correct) in zip(rows, epochs):
    assert steps == 3
    assert float(row['train_loss']) == pytest.approx(loss / 3, rel=1e-5)
    assert float(row['train_top1']) == pytest.approx(correct / 96,
                                                     rel=1e-5)
  sizes = [s.image_size for s in trainer.plan.stages]
  assert len(set(sizes)) == 3
  rates = [s.dropout_rate for s in trainer.plan.stages]
  assert rates == pytest.approx([0.1, 0.2, 0.3])
  # The last stage's rate is what the step read in the end.
  assert trainer.model.top_dropout._settings.numpy()[0] == (  # pylint: disable=protected-access
      pytest.approx(0.3))
  loop = trainer._loop  # pylint: disable=protected-access
  assert loop.experimental_get_tracing_count() == 1
  # Only the tracing call is left out of the training-speed figures.
  assert trainer.train_images == trainer.plan.total_steps * 32 - 32


def test_a_finished_run_resumes_to_nothing_more(finished_run):
  model_dir, specs, trainer, _ = finished_run
  again = trainer_lib.Trainer(specs, trainer.dataset, model_dir,
                              distribute.get_strategy('cpu'))
  results = again.train(evaluate=False)
  assert results['step'] == 10 and again.train_images == 0
  # Run again without evaluations, it keeps those of the step it holds.
  saved = json.load(open(os.path.join(model_dir, 'results.json')))
  assert saved['eval_top1'] == pytest.approx(finished_run[3]['eval_top1'],
                                             abs=1e-6)
  assert saved['eval_images'] == 359


def _saves_counted(trainer) -> list:
  """Makes `trainer` note the step of each checkpoint save in the list it
  returns, saving as before."""
  saved_at, save = [], trainer.state.save
  trainer.state.save = lambda: saved_at.append(trainer.step) or save()
  return saved_at


def test_an_early_stopped_run_keeps_its_evaluations_and_stays_stopped(
    tmp_path):
  # Nothing learns (learning rate 0, BatchNorm frozen), so every evaluation
  # gives the same top-1 and the second one is due to stop the run.
  specs, dataset = tiny_run('train.epochs=4,train.lr_base=0.0,'
                            'train.freeze_epochs=4.0,'
                            'train.early_stop_patience=1')
  trainer = trainer_lib.Trainer(specs, dataset, str(tmp_path),
                                distribute.get_strategy('cpu'))
  saved_at = _saves_counted(trainer)
  first = trainer.train(evaluate=True)
  epoch = trainer.plan.steps_per_epoch
  assert first['step'] == 2 * epoch < trainer.plan.total_steps
  # With early stopping, each epoch is saved again after its evaluation,
  # so that each checkpoint holds the evaluation of its own step.
  assert saved_at == [epoch, epoch, 2 * epoch, 2 * epoch]
  for step, since_best in ((epoch, 0), (2 * epoch, 1)):
    path = os.path.join(str(tmp_path), 'checkpoints', f'ckpt-{step}')
    saved = dict(tf.train.list_variables(path))
    names = {name.split('/')[0]: name for name in saved}
    reader = tf.train.load_checkpoint(path)
    assert reader.get_tensor(names['best']) == pytest.approx(
        first['eval_top1'])
    assert reader.get_tensor(names['evals_since_best']) == since_best
  # Run again, it trains no further.
  again = trainer_lib.Trainer(specs, dataset, str(tmp_path),
                              distribute.get_strategy('cpu'))
  results = again.train(evaluate=True)
  assert results['step'] == 2 * epoch and again.train_images == 0
  assert results['eval_top1'] == pytest.approx(first['eval_top1'])


def test_an_epoch_is_saved_once_before_its_evaluation(tmp_path):
  # Without early stopping or a plateau schedule nothing an evaluation
  # changes is worth a second save, and an evaluation that fails leaves
  # the epoch saved.
  specs, dataset = tiny_run('train.epochs=2')
  trainer = trainer_lib.Trainer(specs, dataset, str(tmp_path),
                                distribute.get_strategy('cpu'))
  saved_at = _saves_counted(trainer)

  def broken(image_size=None):
    raise OSError('the eval split is unreadable')

  trainer.evaluate = broken
  with pytest.raises(OSError, match='unreadable'):
    trainer.train(evaluate=True)
  epoch = trainer.plan.steps_per_epoch
  assert saved_at == [epoch] and trainer.step == epoch
  latest = tf.train.latest_checkpoint(str(tmp_path / 'checkpoints'))
  assert latest.endswith(f'ckpt-{epoch}')


def test_nan_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path):
  specs, dataset = tiny_run(
      'train.epochs=1,train.lr_base=1e30,train.ema_decay=0.0,'
      'runtime.checkpoint_every_steps=1,train.optimizer=sgd')
  trainer = trainer_lib.Trainer(specs, dataset, str(tmp_path),
                                distribute.get_strategy('cpu'))
  with pytest.raises(train_state.TrainingError,
                     match=r'the loss became (nan|inf) at step \d+ .*the '
                     r'last good checkpoint is .*ckpt-\d+'):
    trainer.train()
  latest = tf.train.latest_checkpoint(str(tmp_path / 'checkpoints'))
  assert latest is not None


def test_freezing_trains_only_the_classifier(tmp_path):
  specs, dataset = tiny_run(
      'train.epochs=1,train.freeze_epochs=1.0,'
      'train.ema_decay=0.0')
  trainer = trainer_lib.Trainer(specs, dataset, str(tmp_path),
                                distribute.get_strategy('cpu'))
  before = {v.path: v.numpy() for v in trainer.model.variables}
  trainer.train()
  changed = {v.path for v in trainer.model.variables
             if not np.array_equal(before[v.path], v.numpy()) and
             'seed_generator' not in v.path}  # dropout's random state
  # BatchNorm statistics stay put too: frozen layers run in inference mode.
  assert changed == {'predictions/kernel', 'predictions/bias'}
  assert trainer.model.get_layer('stem').trainable  # unfrozen afterwards


def test_evaluate_checkpoints_evaluates_the_latest_checkpoint(finished_run):
  model_dir, specs, trainer, results = finished_run
  again = trainer_lib.Trainer(specs, trainer.dataset, model_dir,
                              distribute.get_strategy('cpu'))
  evaluated = again.evaluate_checkpoints(timeout=5)
  assert evaluated['step'] == 10
  assert evaluated['eval_top1'] == pytest.approx(results['eval_top1'])


def _point_state_at(directory, name):
  with open(os.path.join(directory, 'checkpoint'), 'w') as f:
    f.write(f'model_checkpoint_path: "{name}"\n'
            f'all_model_checkpoint_paths: "{name}"\n')


def test_evaluate_checkpoints_skips_an_unreadable_checkpoint(finished_run,
                                                            tmp_path):
  model_dir, specs, trainer, results = finished_run
  copy = str(tmp_path / 'run')
  shutil.copytree(model_dir, copy)
  folder = os.path.join(copy, 'checkpoints')
  for suffix in ('.index', '.data-00000-of-00001'):
    shutil.copy(os.path.join(folder, 'ckpt-10' + suffix),
                os.path.join(folder, 'ckpt-9' + suffix))
  with open(os.path.join(folder, 'ckpt-9.data-00000-of-00001'), 'r+') as f:
    f.truncate(1000)  # cut short, as a full disk leaves it
  _point_state_at(folder, 'ckpt-9')
  again = trainer_lib.Trainer(specs, trainer.dataset, copy,
                              distribute.get_strategy('cpu'))
  with pytest.raises(UserError, match=r'no checkpoint that can be read '
                     r'\(not ckpt-9\) appeared in .* within 1 s'):
    again.evaluate_checkpoints(timeout=1)
  # The one that appears next is evaluated.
  timer = threading.Timer(1.5, _point_state_at, (folder, 'ckpt-10'))
  timer.start()
  evaluated = again.evaluate_checkpoints(timeout=5)
  timer.join()
  assert evaluated['step'] == 10
  assert evaluated['eval_top1'] == pytest.approx(results['eval_top1'])


def test_bfloat16_accumulation_loops_and_plateau_run_together(tmp_path):
  specs, dataset = tiny_run(
      'train.epochs=2,train.grad_accum_steps=2,'
      'runtime.steps_per_loop=3,runtime.mixed_precision=true,'
      'train.lr_sched=plateau,train.plateau_patience=1,'
      'train.optimizer=adamw')
  before = keras.mixed_precision.global_policy().name
  trainer = trainer_lib.Trainer(specs, dataset, str(tmp_path),
                                distribute.get_strategy('cpu'))
  assert trainer.policy == 'mixed_bfloat16'
  results = trainer.train(evaluate=True)
  assert results['step'] == 10 and np.isfinite(results['eval_loss'])
  assert trainer.model.get_layer('stem').compute_dtype == 'bfloat16'
  assert trainer.model.classifier.compute_dtype == 'float32'
  # The run's policy held for the run only.
  assert keras.mixed_precision.global_policy().name == before == 'float32'


@pytest.mark.slow
def test_xla_compiles_the_training_step(tmp_path):
  # Two blocks, one of each kind: XLA's compile time grows with the ops.
  specs, dataset = tiny_run(
      'train.epochs=1,train.stages=1,train.jit_compile=true,'
      'train.grad_accum_steps=2,model.blocks_args='
      'r1_k3_s1_e1_i32_o16_c1|r1_k3_s2_e4_i16_o24_se0.25')
  trainer = trainer_lib.Trainer(specs, dataset, str(tmp_path),
                                distribute.get_strategy('cpu'))
  before = trainer.model.get_layer('stem').weights[0].numpy()
  results = trainer.train()
  assert results['step'] == 5 and np.isfinite(results['train_loss'])
  assert not np.allclose(before,
                         trainer.model.get_layer('stem').weights[0].numpy())


def test_a_run_resumed_at_a_stage_boundary_feeds_that_stage_as_before(
    finished_run, tmp_path):
  model_dir, specs, trainer, _ = finished_run
  uninterrupted = list(trainer.dataset.training_inputs)
  assert len(uninterrupted) == 2  # the second made before evaluation
  # Evaluations at 16 and 32 px: traces for the first batch, the short
  # last batch (any batch size) and the second size (any size).
  step_fn = trainer.evaluator._step_fn  # pylint: disable=protected-access
  assert step_fn.experimental_get_tracing_count() == 3
  # The same run, stopped at the boundary: its checkpoint of that step.
  boundary = trainer.plan.stages[0].end_step
  checkpoints = os.path.join(str(tmp_path), 'checkpoints')
  os.makedirs(checkpoints)
  source = os.path.join(model_dir, 'checkpoints', f'ckpt-{boundary}')
  for path in tf.io.gfile.glob(source + '.*'):
    tf.io.gfile.copy(path, os.path.join(checkpoints,
                                        os.path.basename(path)))
  tf.compat.v1.train.update_checkpoint_state(checkpoints, f'ckpt-{boundary}')
  trainer.dataset.training_inputs.clear()
  again = trainer_lib.Trainer(specs, trainer.dataset, str(tmp_path),
                              distribute.get_strategy('cpu'))
  again.train()
  assert again.step == trainer.plan.total_steps
  assert trainer.dataset.training_inputs == uninterrupted[1:]
  # Dropout (0.4) and stochastic depth drew on where they had stopped, so
  # the weights end where the uninterrupted run's did.
  for ours, theirs in zip(again.model.weights, trainer.model.weights):
    np.testing.assert_allclose(ours.numpy(), theirs.numpy(), atol=1e-6,
                               err_msg=ours.path)


def test_a_run_resumed_with_an_ema_it_kept_none_of_averages_from_there(
    tmp_path):
  specs, dataset = tiny_run('train.ema_decay=0.0')
  strategy = distribute.get_strategy('cpu')
  first = trainer_lib.Trainer(specs, dataset, str(tmp_path), strategy)
  for weight in first.model.trainable_weights:  # as if it had trained
    weight.assign_add(tf.ones_like(weight))
  first.state.save()
  with_ema, _ = tiny_run('train.ema_decay=0.99')
  again = trainer_lib.Trainer(with_ema, dataset, str(tmp_path), strategy)
  again.restore()
  # Not the initial weights, which the averages were made with.
  averaged = ema_lib.ema_variables(again.model)
  assert len(averaged) == len(again.ema.averages)
  for average, weight in zip(again.ema.averages, averaged):
    np.testing.assert_array_equal(average.numpy(), weight.numpy())


@pytest.mark.parametrize('timeout', [0, 1])
def test_evaluating_the_ema_of_a_run_that_kept_none_is_refused(tmp_path,
                                                               timeout):
  # Else the averages evaluated would be the initial weights.
  specs, dataset = tiny_run('train.ema_decay=0.0')
  strategy = distribute.get_strategy('cpu')
  trainer_lib.Trainer(specs, dataset, str(tmp_path), strategy).state.save()
  with_ema, _ = tiny_run('train.ema_decay=0.99')
  evaluating = trainer_lib.Trainer(with_ema, dataset, str(tmp_path),
                                   strategy)
  with pytest.raises(UserError, match=r"checkpoint '.*ckpt-0' holds no "
                     r'moving average of the weights, which '
                     r'train.ema_decay=0.99 evaluates; evaluate its weights '
                     r'with train.ema_decay=0'):
    evaluating.evaluate_checkpoints(timeout)


@pytest.mark.parametrize('timeout', [0, 1])
def test_evaluating_checkpoints_of_another_model_is_refused(tmp_path,
                                                            timeout):
  specs, dataset = tiny_run()
  strategy = distribute.get_strategy('cpu')
  trainer_lib.Trainer(specs, dataset, str(tmp_path), strategy).state.save()
  wider, _ = tiny_run('model.width_coefficient=0.5')
  evaluating = trainer_lib.Trainer(wider, dataset, str(tmp_path), strategy)
  before = [v.numpy() for v in evaluating.state.checkpoint.model.weights]
  with pytest.raises(UserError, match=r"checkpoint '.*ckpt-0' does not fit "
                     r'the model of this config: .* has shape \[3, 3, 3, '
                     r'8\] there and \[3, 3, 3, 16\] here'):
    evaluating.evaluate_checkpoints(timeout)
  # Refused before any variable was assigned (a restore that fails part way
  # also leaves TensorFlow's warnings of values unread, as the process ends).
  after = [v.numpy() for v in evaluating.state.checkpoint.model.weights]
  assert all(np.array_equal(b, a) for b, a in zip(before, after))


@pytest.mark.parametrize('timeout', [0, 1])
def test_evaluating_a_checkpoint_uses_the_size_training_evaluated_it_at(
    finished_run, tmp_path, timeout):
  model_dir, specs, trainer, _ = finished_run
  copy = str(tmp_path / 'run')
  shutil.copytree(model_dir, copy)
  _point_state_at(os.path.join(copy, 'checkpoints'), 'ckpt-5')
  again = trainer_lib.Trainer(specs, trainer.dataset, copy,
                              distribute.get_strategy('cpu'))
  evaluated = again.evaluate_checkpoints(timeout)
  # progressive.eval_size=stage: the first stage's checkpoint at its size.
  row = next(r for r in csv.DictReader(open(os.path.join(
      model_dir, 'metrics.csv'))) if r['step'] == '5')
  assert evaluated['step'] == 5
  assert evaluated['eval_image_size'] == int(row['eval_image_size']) == 16
  assert evaluated['eval_top1'] == pytest.approx(float(row['eval_top1']),
                                                 abs=1e-5)


def test_a_thread_trains_and_after_epoch_is_not_training_time(tmp_path,
                                                             monkeypatch):
  # Python runs signal handlers in its main thread only: installing the
  # SIGTERM handler in another raised ValueError before the first step.
  specs, dataset = tiny_run('train.epochs=2')
  trainer = trainer_lib.Trainer(specs, dataset, str(tmp_path),
                                distribute.get_strategy('cpu'))
  saved_at = _saves_counted(trainer)
  # The trainer's clock jumps an hour in each call: none of it may count.
  hours = [0.0]
  monkeypatch.setattr(trainer_lib, 'time', types.SimpleNamespace(
      time=lambda: time.time() + 3600 * hours[0],
      perf_counter=time.perf_counter))
  calls, outcome = [], {}

  def after_epoch():
    calls.append(trainer.step)
    hours[0] += 1

  def train():
    try:
      outcome['results'] = trainer.train(evaluate=True,
                                         after_epoch=after_epoch)
    except Exception as e:  # pylint: disable=broad-except
      outcome['error'] = e

  thread = threading.Thread(target=train)
  thread.start()
  thread.join()
  assert 'error' not in outcome, outcome.get('error')
  epoch = trainer.plan.steps_per_epoch
  assert calls == [epoch, 2 * epoch] and epoch > 0
  # Evaluated, without early stopping or a plateau: one save an epoch.
  assert saved_at == [epoch, 2 * epoch]
  walls = [float(row['wall_seconds']) for row in trainer.reporter.rows()]
  assert len(walls) == 2 and 0 < walls[0] < walls[1] < 3600
  assert walls[1] <= outcome['results']['wall_seconds'] < 3600
