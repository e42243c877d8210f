"""TrainState: building, fine-tuning, saving, restoring and best-so-far."""
import glob

import numpy as np
import pytest
import tensorflow as tf

import hparams
from efficientnetv2_tf import checkpoints
from efficientnetv2_tf import distribute
from efficientnetv2_tf import progressive
from efficientnetv2_tf import train_state
from efficientnetv2_tf import trainer as trainer_lib
from hparams import models
from tests import tf1_reference
from tests.conftest import tiny_config
from tests.conftest import tiny_run


def new_state(model_dir, *overrides):
  # `datasets.bind` would set the class count; the state is built without.
  specs = hparams.build_specs(tiny_config('model.num_classes=10', *overrides))
  plan = progressive.make_plan(specs, 160, 1)
  return train_state.TrainState(specs, plan, distribute.get_strategy('cpu'),
                                str(model_dir), 'float32')


def test_save_writes_a_checkpoint_and_the_model_info_beside_it(tmp_path):
  state = new_state(tmp_path)
  state.optimizer.iterations.assign(7)
  path = state.save()
  assert path.endswith('ckpt-7') and state.latest_checkpoint() == path
  info = checkpoints.read_model_info(str(tmp_path / 'checkpoints'))
  assert info['num_classes'] == 10 and info['include_top']


def test_restore_goes_back_over_an_unreadable_checkpoint(tmp_path):
  state = new_state(tmp_path)
  for step in (3, 6):
    state.optimizer.iterations.assign(step)
    state.save()
  (newest,) = glob.glob(str(tmp_path / 'checkpoints' / 'ckpt-6.data-*'))
  with open(newest, 'r+b') as f:
    f.truncate(16)  # as a full disk or a dying host leaves it
  again = new_state(tmp_path)
  assert again.restore().endswith('ckpt-3') and again.step == 3
  (older,) = glob.glob(str(tmp_path / 'checkpoints' / 'ckpt-3.data-*'))
  with open(older, 'r+b') as f:
    f.truncate(16)
  with pytest.raises(train_state.TrainingError,
                     match=r'no checkpoint in .* can be read \(ckpt-6, '
                     r'ckpt-3\); move them away to start over'):
    new_state(tmp_path).restore()


def test_restore_without_a_checkpoint_leaves_the_state_new(tmp_path):
  state = new_state(tmp_path)
  assert state.restore() is None and state.step == 0


def test_the_learning_rate_floor_scales_with_the_batch_as_the_peak(tmp_path):
  # The original scaled both train.lr_base and train.lr_min by batch / 256.
  state = new_state(tmp_path, 'train.batch_size=64,train.lr_sched=cosine,'
                    'train.lr_base=0.4,train.lr_min=0.004')
  end = state.schedule.total_steps
  assert float(state.schedule(end)) == pytest.approx(0.004 * 64 / 256)
  assert state.schedule.minimum == pytest.approx(0.001)


def test_update_best_says_when_early_stopping_is_due(tmp_path):
  state = new_state(tmp_path, 'train.lr_sched=plateau')
  tops = [0.5, 0.6, 0.6, 0.55, 0.7]
  due = [state.update_best({'eval_top1': t, 'eval_loss': 1.0}, patience=2)
         for t in tops]
  assert due == [False, False, False, True, False]
  assert float(state.best.numpy()) == 0.7
  assert not state.update_best({'eval_top1': 0.1, 'eval_loss': 1.0},
                               patience=0)


def test_finetuning_from_an_official_checkpoint_with_other_classes(tmp_path):
  images = np.zeros((1, 32, 32, 3), np.float32)
  directory, _, values = tf1_reference.official_checkpoint(
      images, tmp_path / 'official', 'efficientnetv2-b0',
      models.V2_BASE_BLOCKS, num_classes=7, width=0.25, depth=0.2)
  specs, dataset = tiny_run(f'train.epochs=1,train.ft_init_ckpt={directory}')
  trainer = trainer_lib.Trainer(specs, dataset, str(tmp_path / 'ft'),
                                distribute.get_strategy('cpu'))
  stem = trainer.model.get_layer('stem').weights[0].numpy()
  np.testing.assert_allclose(
      stem, values['efficientnetv2-b0/stem/conv2d/kernel'], rtol=1e-6)
  assert trainer.model.num_classes == 10
  assert trainer.train()['step'] == 5


def test_finetuning_from_a_run_directory_starts_from_its_ema(tmp_path):
  run = new_state(tmp_path / 'run')
  for variable in run.model.trainable_variables:
    variable.assign_add(tf.ones_like(variable))  # the EMA stays behind
  run.optimizer.iterations.assign(5)
  run.save()
  ft = new_state(tmp_path / 'ft', f'train.ft_init_ckpt={tmp_path / "run"}')
  with run.ema.applied():
    for want, got in zip(run.model.weights, ft.model.weights):
      if 'seed_generator' not in want.path:
        np.testing.assert_array_equal(want.numpy(), got.numpy())
  assert ft.step == 0  # the weights, not the run's step or optimizer


def test_a_checkpoint_in_the_model_dir_wins_over_finetuning(tmp_path):
  run = new_state(tmp_path)
  run.optimizer.iterations.assign(2)
  run.save()
  # Would fail to load if it were read: the run resumes instead.
  again = new_state(tmp_path, 'train.ft_init_ckpt=/nonexistent/checkpoint')
  assert again.restore().endswith('ckpt-2')


@pytest.mark.parametrize('schedule, expected', [
    # (step, learning rate) from the original's WarmupLearningRateSchedule
    # as its main.py builds it: steps_per_epoch = 1,256,144 / 4096 (not
    # rounded), so warm-up lasts int(5 * 306.67) = 1533 steps and a stair
    # of the exponential decay 2.4 * 306.67 = 736 steps. Its cosine and
    # linear decays ran to 350 * 306.67 = 107,336.7 steps, where it trained
    # 107,336: hence rel=2e-4.
    ('exponential', [(734, 0.12257273), (1530, 0.25549904),
                     (1533, 0.24087042), (50_000, 0.03326190),
                     (100_000, 0.00419204), (107_334, 0.00309132)]),
    ('cosine', [(1532, 0.25583303), (50_000, 0.14171632),
                (100_000, 0.00293964), (107_100, 0.00000307)]),
    ('linear', [(1530, 0.25549904), (100_000, 0.01749777)]),
])
def test_learning_rate_is_the_originals_on_imagenet(schedule, expected):
  specs = hparams.get_specs('efficientnetv2-s', 'ImageNet',
                            f'train.lr_sched={schedule}')
  plan = progressive.make_plan(specs, 1_256_144, 1)
  # pylint: disable-next=protected-access
  rate = train_state._learning_rate(specs.optim, plan)
  steps, rates = zip(*expected)
  assert [float(rate(s)) for s in steps] == pytest.approx(rates, rel=2e-4,
                                                          abs=2e-8)
