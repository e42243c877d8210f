import doctest

import pytest

import hparams
from efficientnetv2_tf import progressive
from efficientnetv2_tf.preprocessing import Augmentation
from hparams.errors import UserError

# V2-S with 4 stages and every regulariser on: 10 epochs of 100 steps, a
# 300 px training size grown from data.ibase=128.
V2_S = ('train.stages=4,train.sched=true,train.epochs=10,data.ram=15,'
        'data.mixup_alpha=0.2,data.cutmix_alpha=0.4,model.dropout_rate=0.3')
STEPS_PER_EPOCH = 100

# By hand: code sizes 128 + 172 * (i + 1) / 4, paper sizes 128 + 172 * i / 3
# (185.3 and 242.7 truncated); both grow the magnitude 5 -> 15, mixup
# 0 -> 0.2 and cutmix 0 -> 0.4 in thirds.
CODE_SIZES = [171, 214, 257, 300]
PAPER_SIZES = [128, 185, 242, 300]
MAGNITUDES = [5, 25 / 3, 35 / 3, 15]
MIXUPS = [0, 0.2 / 3, 0.4 / 3, 0.2]
CUTMIXES = [0, 0.4 / 3, 0.8 / 3, 0.4]


def make_plan(*overrides):
  specs = hparams.get_specs('efficientnetv2-s', None, V2_S, *overrides)
  return progressive.plan(specs, STEPS_PER_EPOCH)


def column(stages, name):
  return [getattr(stage, name) for stage in stages]


def test_schedules_are_registered():
  assert progressive.SCHEDULES.names() == ['code', 'paper']


def test_code_schedule_matches_the_original_code():
  stages = make_plan('progressive.schedule=code')
  assert column(stages, 'image_size') == CODE_SIZES
  assert column(stages, 'magnitude') == pytest.approx(MAGNITUDES)
  assert column(stages, 'mixup_alpha') == pytest.approx(MIXUPS)
  assert column(stages, 'cutmix_alpha') == pytest.approx(CUTMIXES)
  assert column(stages, 'dropout_rate') == [0.3] * 4  # fixed


def test_paper_schedule_grows_everything_from_its_minimum():
  stages = make_plan('progressive.schedule=paper')
  assert column(stages, 'image_size') == PAPER_SIZES
  assert column(stages, 'magnitude') == pytest.approx(MAGNITUDES)
  assert column(stages, 'mixup_alpha') == pytest.approx(MIXUPS)
  assert column(stages, 'cutmix_alpha') == pytest.approx(CUTMIXES)
  assert column(stages, 'dropout_rate') == pytest.approx(
      [0.1, 0.1 + 0.2 / 3, 0.1 + 0.4 / 3, 0.3])


@pytest.mark.parametrize('schedule', ['code', 'paper'])
def test_last_stage_has_exactly_the_configured_values(schedule):
  last = make_plan(f'progressive.schedule={schedule}')[-1]
  assert (last.image_size, last.magnitude, last.mixup_alpha,
          last.cutmix_alpha, last.dropout_rate) == (300, 15, 0.2, 0.4, 0.3)


@pytest.mark.parametrize('schedule, sizes', [('code', CODE_SIZES),
                                             ('paper', PAPER_SIZES)])
def test_without_sched_only_the_image_size_changes(schedule, sizes):
  stages = make_plan(f'train.sched=false,progressive.schedule={schedule}')
  assert column(stages, 'image_size') == sizes
  assert {(s.magnitude, s.mixup_alpha, s.cutmix_alpha, s.dropout_rate)
          for s in stages} == {(15, 0.2, 0.4, 0.3)}


def test_equal_stages_split_the_steps_evenly():
  stages = make_plan()
  assert [(s.start_step, s.end_step) for s in stages] == [
      (0, 250), (250, 500), (500, 750), (750, 1000)]


@pytest.mark.parametrize('stage_epochs, ends', [
    ('1|2|3|4', [100, 300, 600, 1000]),
    ('2.5|2.5|2.5|2.5', [250, 500, 750, 1000]),
])
def test_stage_epochs_set_the_stage_boundaries(stage_epochs, ends):
  stages = make_plan(f'progressive.stage_epochs={stage_epochs}')
  assert column(stages, 'end_step') == ends
  assert column(stages, 'start_step') == [0] + ends[:-1]
  assert column(stages, 'image_size') == CODE_SIZES  # sizes follow the index


@pytest.mark.parametrize('step, index', [
    (0, 0), (249, 0), (250, 1), (499, 1), (500, 2), (999, 3), (1000, 3),
    (10**6, 3)])
def test_stage_at_finds_the_stage_of_a_step(step, index):
  assert progressive.stage_at(make_plan(), step).index == index


def test_stage_at_follows_this_runs_boundaries():
  # Step 600 is in stage 3 of a 10-epoch run but stage 2 of a 20-epoch one:
  # a resumed run must use its own plan, not the old run's stage length.
  assert progressive.stage_at(make_plan(), 600).index == 2
  assert progressive.stage_at(make_plan('train.epochs=20'), 600).index == 1


def test_stage_at_skips_empty_stages():
  specs = hparams.get_specs('efficientnetv2-s', None, V2_S, 'train.epochs=2')
  stages = progressive.plan(specs, steps_per_epoch=1)  # 2 steps, 4 stages
  assert [(s.start_step, s.end_step) for s in stages] == [
      (0, 0), (0, 1), (1, 1), (1, 2)]
  assert [progressive.stage_at(stages, step).index for step in (0, 1)] == [
      1, 3]
  assert 'no steps' in stages[0].describe()


@pytest.mark.parametrize('num_stages', [0, 1])
@pytest.mark.parametrize('schedule', ['code', 'paper'])
def test_zero_or_one_stage_trains_at_the_configured_values(num_stages,
                                                          schedule):
  stages = make_plan(f'train.stages={num_stages},'
                     f'progressive.schedule={schedule}')
  assert stages == [progressive.Stage(0, 0, 1000, 300, 15.0, 0.2, 0.4, 0.3,
                                      num_stages=1)]


def test_code_schedule_ignores_dropout_min():
  stages = make_plan('progressive.dropout_min=0.5')
  assert column(stages, 'dropout_rate') == [0.3] * 4


def test_magnitude_is_fixed_when_the_augmentation_ignores_it():
  stages = make_plan('data.augname=effnetv1_autoaug,data.ram=0')
  assert column(stages, 'magnitude') == [0.0] * 4
  assert column(stages, 'mixup_alpha') == pytest.approx(MIXUPS)


def test_ibase_zero_starts_at_half_the_training_size():
  stages = make_plan('data.ibase=0')
  assert column(stages, 'image_size') == [187, 225, 262, 300]


def test_image_size_is_never_below_16():
  stages = make_plan('data.ibase=4,train.image_size=32')
  assert column(stages, 'image_size') == [16, 18, 25, 32]


@pytest.mark.parametrize('overrides, quoted', [
    ('progressive.stage_epochs=1|2|3', 'progressive.stage_epochs'),
    ('progressive.stage_epochs=1|2|3|5', 'progressive.stage_epochs'),
    ('progressive.stage_epochs=-1|5|3|3', 'progressive.stage_epochs'),
    ('progressive.stage_epochs=0|5|2|3', 'progressive.stage_epochs'),
    ('progressive.ram_min=-1', 'progressive.ram_min=-1.0'),
    ('progressive.ram_min=20', 'progressive.ram_min=20.0'),
    ('progressive.mixup_min=0.5', 'progressive.mixup_min=0.5'),
    ('progressive.cutmix_min=-0.1', 'progressive.cutmix_min=-0.1'),
    ('progressive.schedule=paper,progressive.dropout_min=0.5',
     'progressive.dropout_min=0.5'),
    ('progressive.schedule=papr', "progressive.schedule: unknown progressive "
     "schedule 'papr'; did you mean 'paper'?"),
    ('data.ibase=400', 'data.ibase=400'),
    ('data.ibase=-1', 'data.ibase=-1'),
    ('train.stages=-2', 'train.stages=-2'),
    ('train.epochs=0', 'train.epochs=0'),
])
def test_bad_settings_raise_a_one_line_error_naming_the_key(overrides,
                                                            quoted):
  with pytest.raises(UserError) as err:
    make_plan(overrides)
  assert quoted in str(err.value)
  assert '\n' not in str(err.value)


def test_stage_epochs_error_quotes_the_values_received():
  with pytest.raises(UserError, match=r'received: \[1, 2, 3, 5\] \(sum 11\)'):
    make_plan('progressive.stage_epochs=1|2|3|5')


def test_bad_steps_per_epoch_raises():
  specs = hparams.get_specs('efficientnetv2-s', None, V2_S)
  with pytest.raises(UserError, match='steps_per_epoch=0'):
    progressive.plan(specs, 0)


def test_augmentation_replaces_only_the_scheduled_fields():
  stage = make_plan()[1]
  base = Augmentation('ra_aa', num_layers=3, magnitude=15.0, mixup_alpha=0.5,
                      cutmix_alpha=0.5, flip=False)
  augmentation = stage.augmentation(base)
  assert (augmentation.augname, augmentation.num_layers,
          augmentation.flip) == ('ra_aa', 3, False)
  assert (augmentation.magnitude, augmentation.mixup_alpha,
          augmentation.cutmix_alpha) == (stage.magnitude, stage.mixup_alpha,
                                         stage.cutmix_alpha)


def test_describe_is_one_log_line():
  assert make_plan('progressive.schedule=paper')[1].describe() == (
      'stage 2/4: steps 250-499, 185 px, magnitude 8.33, mixup 0.07, '
      'cutmix 0.13, dropout 0.17')


def test_module_docstring_example_runs():
  result = doctest.testmod(progressive, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0
  assert result.failed == 0


def digits_specs(*overrides):
  return hparams.get_specs('efficientnetv2-b0', 'digits',
                           'train.batch_size=32', *overrides)


def test_make_plan_checks_batch_and_replicas():
  specs = digits_specs()
  with pytest.raises(UserError, match='batch size 32 is not divisible by the '
                     '3 replicas'):
    progressive.make_plan(specs, 1000, 3)
  with pytest.raises(UserError, match='larger than the 10 training images'):
    progressive.make_plan(specs, 10, 1)
  with pytest.raises(UserError, match='train.grad_accum_steps=3 must divide '
                     'the per-replica batch 16'):
    progressive.make_plan(digits_specs('train.grad_accum_steps=3'), 64, 2)


def test_make_plan_stretches_the_run_and_its_applied_specs_plan_the_same():
  specs = digits_specs('train.min_steps=100,train.epochs=1,train.stages=2,'
                       'progressive.stage_epochs=0.25|0.75')
  plan = progressive.make_plan(specs, 320, 1)  # 10 steps an epoch
  assert (plan.epochs, plan.stage_epochs, plan.total_steps) == (
      10, (2.5, 7.5), 100)
  assert [(s.start_step, s.end_step) for s in plan.stages] == [(0, 25),
                                                               (25, 100)]
  assert plan.epoch_of(50) == 5
  ran = plan.applied_to(specs)
  assert (ran.optim.epochs, ran.progressive.stage_epochs) == (10, (2.5, 7.5))
  assert progressive.make_plan(ran, 320, 1) == plan


def test_make_plan_keeps_a_run_that_is_long_enough():
  plan = progressive.make_plan(digits_specs('train.min_steps=10,'
                                             'train.epochs=3'), 320, 2)
  assert (plan.global_batch, plan.steps_per_epoch, plan.epochs,
          plan.total_steps, plan.stage_epochs) == (32, 10, 3, 30, ())


def test_plan_to_dict_gives_each_stage_its_epochs():
  plan = progressive.make_plan(digits_specs('train.epochs=4,train.stages=2'),
                               320, 1)
  saved = plan.to_dict()
  assert (saved['epochs'], saved['total_steps']) == (4, 40)
  assert [s['epochs'] for s in saved['stages']] == [2, 2]
  assert saved['stages'][1]['image_size'] == plan.stages[1].image_size


@pytest.mark.parametrize('eval_size, sizes', [
    ('final', [384, 384, 384, 384]),
    # 128, 185, 242, 300 px scaled by 384 / 300; the last is the eval size.
    ('stage', [164, 237, 310, 384]),
])
def test_eval_image_size_follows_progressive_eval_size(eval_size, sizes):
  specs = hparams.get_specs(
      'efficientnetv2-s', None, 'train.epochs=4,train.stages=4,'
      f'progressive.schedule=paper,progressive.eval_size={eval_size}')
  assert specs.data.eval_image_size == 384
  assert specs.data.train_image_size == 300
  stages = progressive.plan(specs, steps_per_epoch=10)
  assert [s.image_size for s in stages] == [128, 185, 242, 300]
  assert [progressive.eval_image_size(specs, s) for s in stages] == sizes


def test_make_plan_counts_steps_as_the_originals_main_does():
  # google/automl main.py, ImageNet 'train' split (1,256,144 images), batch
  # 4096, 350 epochs, 4 stages: `train_steps = epochs * images // batch`
  # and stage i ends at `int((i + 1) / 4 * train_steps)`. These figures
  # are what the original printed, not 350 * (1,256,144 // 4096) = 107,100.
  specs = hparams.get_specs('efficientnetv2-s', 'ImageNet', None)
  plan = progressive.make_plan(specs, 1_256_144, 1)
  assert plan.total_steps == 107_336
  assert [s.end_step for s in plan.stages] == [26_834, 53_668, 80_502,
                                               107_336]
  assert plan.steps_per_epoch == 306  # whole batches between evaluations
  assert plan.epoch_steps == 1_256_144 / 4096
  assert plan.epoch_of(plan.total_steps) == pytest.approx(350, abs=0.01)


LAST_STAGE_40_STEPS = 'progressive.stage_epochs=3|3|3.6|0.4'


class _Ema:
  """The EMA's interface that the warning reads, with a fixed decay."""

  def __init__(self, decay):
    self.decay = decay

  def share_before(self, start_step, end_step):
    return self.decay ** (end_step - start_step)


def test_ema_carryover_warning_names_the_share_and_a_decay_that_fits():
  stages = make_plan(LAST_STAGE_40_STEPS)
  assert stages[-1].num_steps == 40
  warning = progressive.ema_carryover_warning(stages, _Ema(0.99))
  assert warning == (
      'train.ema_decay=0.99 keeps 67% of the evaluated averages from before '
      'the last stage (40 steps at 300 px): its weights and BatchNorm '
      'statistics mix in smaller images. A decay of at most 0.944 keeps '
      'that under 10%')
  assert 0.944 ** 40 <= 0.1 < 0.945 ** 40


@pytest.mark.parametrize('overrides, decay', [
    (LAST_STAGE_40_STEPS, 0.944),  # within the limit
    ('train.stages=0', 0.99),  # one image size
    (LAST_STAGE_40_STEPS + ',data.ibase=300', 0.99),
])
def test_no_ema_carryover_warning_where_the_average_fits(overrides, decay):
  stages = make_plan(overrides)
  assert progressive.ema_carryover_warning(stages, _Ema(decay)) is None
  assert progressive.ema_carryover_warning(stages, None) is None
