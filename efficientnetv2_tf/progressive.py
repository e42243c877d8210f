"""Progressive learning: stages of growing image size and regularisation.

EfficientNetV2 (Tan & Le, 2021, Sec. 4) trains on small images first and
larger ones later, and with `train.sched` makes regularisation stronger as
the images grow: RandAugment magnitude (`data.ram`), mixup and cutmix alphas
and, in the paper, dropout. `train.stages` (N) sets the number of stages;
0 or 1 means one stage at the full size with the configured regularisation.

Two schedules, set by `progressive.schedule`, differ in exactly two ways:

- 'code' (the default) is what the original code ran. Stage i of N
  (0-based) trains at `ibase + (size - ibase) * (i + 1) / N` pixels, so even
  the first stage is larger than `data.ibase`. Dropout stays at
  `model.dropout_rate` (the original's dropout schedule is commented out).
- 'paper' is Table 6 of the paper: everything grows linearly from its
  minimum at the first stage to its maximum at the last, the image size from
  `data.ibase` (`ibase + (size - ibase) * i / (N - 1)`) and dropout from
  `progressive.dropout_min`.

Both grow the magnitude from `progressive.ram_min` and mixup and cutmix from
`progressive.mixup_min` and `cutmix_min` to their `data.*` values, linearly
from the first stage to the last; without `train.sched` only the image size
changes. The final size is the training size (`DataSpec.train_image_size`);
`data.ibase` 0 means half of it, as in the original. Sizes are truncated to
whole pixels, as in the original, and never fall below 16. The magnitude is
scheduled only when the augmentation uses RandAugment ('randaug', 'ra_aa'):
AutoAugment ignores it.

V2-S with the paper's maxima (`data.ram=15,model.dropout_rate=0.3`; the
`efficientnetv2-s` preset itself keeps the code's 10 and 0.2), 4 stages,
mixup and cutmix 0 throughout:

    stage   size (code)  size (paper)  magnitude  dropout (code)  (paper)
    1/4     171          128           5.0        0.3             0.1
    2/4     214          185           8.33       0.3             0.167
    3/4     257          242           11.67      0.3             0.233
    4/4     300          300           15.0       0.3             0.3

Stage i ends after (i + 1) / N of the training steps, or after the epochs in
`progressive.stage_epochs` when given. A resumed run finds its stage from
the global step with `stage_at`:

    >>> import hparams
    >>> specs = hparams.get_specs(
    ...     'efficientnetv2-s', None, 'train.epochs=10,data.ram=15,'
    ...     'model.dropout_rate=0.3,progressive.schedule=paper')
    >>> stages = plan(specs, steps_per_epoch=100)
    >>> [(s.end_step, s.image_size, round(s.dropout_rate, 2)) for s in stages]
    [(250, 128, 0.1), (500, 185, 0.17), (750, 242, 0.23), (1000, 300, 0.3)]
    >>> print(stage_at(stages, 600).describe())
    stage 3/4: steps 500-749, 242 px, magnitude 11.67, mixup 0.0, ...

Evaluations during training are at the eval size, or, with
`progressive.eval_size=stage`, at each stage's own size (`eval_image_size`).

`make_plan` plans a whole run (`RunPlan`) from its specs, the training
split's size and the number of replicas: the global batch, steps per epoch,
epochs (`train.epochs`, stretched until there are `train.min_steps` steps,
`progressive.stage_epochs` with them) and the stages. As in the original's
main.py, a run is `epochs * train_size // batch` steps and the schedules'
epoch is `train_size / batch` steps (`epoch_steps`), fractions kept; the
loop's epochs, after which it evaluates, are whole batches.
`RunPlan.applied_to(specs)` gives the specs that run, to save beside the
plan:

    >>> run = make_plan(specs, train_size=409_600, num_replicas=8)
    >>> run.global_batch, run.steps_per_epoch, run.epochs, run.total_steps
    (4096, 100, 10, 1000)
    >>> run = make_plan(specs, train_size=410_000, num_replicas=8)
    >>> run.steps_per_epoch, run.epoch_steps, run.total_steps
    (100, 100.09765625, 1000)
"""
import bisect
import dataclasses
from fractions import Fraction
import itertools
import math
from numbers import Rational
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

from efficientnetv2_tf import distribute
from efficientnetv2_tf.preprocessing import AUGMENTATIONS
from efficientnetv2_tf.preprocessing import Augmentation
from hparams.errors import UserError
from hparams.registry import Registry
from hparams.specs import DataSpec
from hparams.specs import Specs

MIN_IMAGE_SIZE = 16
# The augmentation policies that read the RandAugment magnitude.
_MAGNITUDE_POLICIES = ('randaug', 'ra_aa')


@dataclasses.dataclass(frozen=True)
class Stage:
  """One stage of training: its global steps [start_step, end_step) and the
  image size and regularisation to train with."""
  index: int  # 0-based
  start_step: int
  end_step: int  # exclusive
  image_size: int
  magnitude: float
  mixup_alpha: float
  cutmix_alpha: float
  dropout_rate: float
  num_stages: int

  @property
  def num_steps(self) -> int:
    return self.end_step - self.start_step

  def augmentation(self, base: Augmentation) -> Augmentation:
    """`base` with this stage's magnitude and mix alphas."""
    return dataclasses.replace(base, magnitude=self.magnitude,
                               mixup_alpha=self.mixup_alpha,
                               cutmix_alpha=self.cutmix_alpha)

  def describe(self) -> str:
    """One line for the training log."""
    steps = (f'steps {self.start_step}-{self.end_step - 1}' if self.num_steps
             else 'no steps')
    return (f'stage {self.index + 1}/{self.num_stages}: {steps}, '
            f'{self.image_size} px, magnitude {round(self.magnitude, 2)}, '
            f'mixup {round(self.mixup_alpha, 2)}, '
            f'cutmix {round(self.cutmix_alpha, 2)}, '
            f'dropout {round(self.dropout_rate, 2)}')


@dataclasses.dataclass(frozen=True)
class Progress:
  """Where a stage lies between the minimums (0) and the configured values
  (1), for the image size, the augmentation and dropout."""
  image_size: Fraction
  augmentation: Fraction
  dropout: Fraction


# The last stage, and the only one when there is no progression.
_FULL = Progress(Fraction(1), Fraction(1), Fraction(1))

# Each maps (stage index, number of stages >= 2) to that stage's `Progress`.
SCHEDULES: Registry[Callable[[int, int], Progress]] = Registry(
    'progressive schedule')


@SCHEDULES.register('code')
def code_schedule(index: int, num_stages: int) -> Progress:
  """The original code's: the size starts one step above ibase; dropout is
  fixed."""
  return Progress(image_size=Fraction(index + 1, num_stages),
                  augmentation=Fraction(index, num_stages - 1),
                  dropout=Fraction(1))


@SCHEDULES.register('paper')
def paper_schedule(index: int, num_stages: int) -> Progress:
  """The paper's Table 6: everything from its minimum to its maximum."""
  fraction = Fraction(index, num_stages - 1)
  return Progress(fraction, fraction, fraction)


def _lerp(first: float, last: float, fraction: Fraction) -> Fraction:
  # Exact arithmetic, so that the last stage gets exactly the configured
  # value and sizes are truncated from the true value, not a rounded one.
  return Fraction(first) + (Fraction(last) - Fraction(first)) * fraction


def _schedule(name: str) -> Callable[[int, int], Progress]:
  try:
    return SCHEDULES.get(name)
  except UserError as e:
    raise UserError(f'progressive.schedule: {e}') from None


def _end_steps(epochs: float, stage_epochs: Sequence[float],
               configured_stages: int, num_stages: int,
               steps_per_epoch: Rational) -> List[int]:
  """The exclusive last global step of each stage."""
  if (not isinstance(steps_per_epoch, Rational)
      or isinstance(steps_per_epoch, bool) or steps_per_epoch < 1):
    raise UserError(f'steps per epoch must be an int or Fraction >= 1; '
                    f'received: steps_per_epoch={steps_per_epoch!r}')
  total = int(Fraction(epochs) * steps_per_epoch)
  if not stage_epochs:
    return [total * (i + 1) // num_stages for i in range(num_stages)]
  if len(stage_epochs) != num_stages:
    raise UserError(
        f'progressive.stage_epochs needs one entry per stage '
        f'(train.stages={configured_stages}); received: {list(stage_epochs)} '
        f'({len(stage_epochs)} entries)')
  if not math.isclose(sum(stage_epochs), epochs):
    raise UserError(f'progressive.stage_epochs must add up to train.epochs='
                    f'{epochs}; received: {list(stage_epochs)} (sum '
                    f'{sum(stage_epochs):g})')
  ends = [round(Fraction(done) * steps_per_epoch)
          for done in itertools.accumulate(stage_epochs[:-1])]
  return ends + [total]


def stretched_stage_epochs(specs: Specs, epochs: float) -> Tuple[float, ...]:
  """`progressive.stage_epochs` scaled from `train.epochs` to `epochs`, so
  that a stretched run's stages still add up; empty when not set."""
  scale = epochs / specs.optim.epochs
  stage_epochs = specs.progressive.stage_epochs
  if scale == 1:
    return stage_epochs
  return tuple(e * scale for e in stage_epochs)


def _values(first: float, last: float, keys: Tuple[str, str],
            fractions: Sequence[Fraction]) -> List[float]:
  """`first` grown towards `last` by each fraction; `keys` name them."""
  if first > last and any(f != 1 for f in fractions):
    raise UserError(f'{keys[0]}={first} is above {keys[1]}={last}; a '
                    'progressive schedule grows from the minimum to the '
                    'configured value')
  return [float(_lerp(first, last, f)) for f in fractions]


def _image_sizes(data: DataSpec, first_image_size: int,
                 fractions: Sequence[Fraction]) -> List[int]:
  size = data.train_image_size
  ibase = first_image_size or Fraction(size, 2)
  if ibase > size and any(f != 1 for f in fractions):
    raise UserError(f'data.ibase={ibase} is above the training image size '
                    f'{size} (train.image_size); the first stage must be '
                    'smaller')
  return [max(MIN_IMAGE_SIZE, int(_lerp(ibase, size, f))) for f in fractions]


def _progress(specs: Specs, num_stages: int) -> List[Progress]:
  """Where each stage lies between the minimums and the configured values."""
  schedule = _schedule(specs.progressive.schedule)
  progress = [schedule(i, num_stages) if num_stages > 1 else _FULL
              for i in range(num_stages)]
  if not specs.progressive.schedule_regularization:
    progress = [dataclasses.replace(p, augmentation=Fraction(1),
                                    dropout=Fraction(1)) for p in progress]
  return progress


def plan(specs: Specs, steps_per_epoch: Rational,
         epochs: Optional[float] = None) -> List[Stage]:
  """The stages of a run: `int(epochs * steps_per_epoch)` steps in all.

  `steps_per_epoch` is an int or, as the original's training-split size
  over the batch size, a `Fraction`.

  `epochs` defaults to `train.epochs`; a longer run stretches
  `progressive.stage_epochs` with it. Raises `UserError`, naming the config
  keys, for settings that make no schedule.
  """
  prog, data = specs.progressive, specs.data
  num_stages = max(prog.stages, 1)
  if epochs is None:
    epochs = specs.optim.epochs
  ends = _end_steps(epochs, stretched_stage_epochs(specs, epochs),
                    prog.stages, num_stages, steps_per_epoch)
  progress = _progress(specs, num_stages)
  augment = [p.augmentation for p in progress]
  policy = AUGMENTATIONS.get(data.augmentation or 'none').policy
  magnitude = (augment if policy in _MAGNITUDE_POLICIES
               else [Fraction(1)] * num_stages)
  columns = zip(
      _image_sizes(data, prog.first_image_size,
                   [p.image_size for p in progress]),
      _values(prog.ram_min, data.randaug_magnitude,
              ('progressive.ram_min', 'data.ram'), magnitude),
      _values(prog.mixup_min, data.mixup_alpha,
              ('progressive.mixup_min', 'data.mixup_alpha'), augment),
      _values(prog.cutmix_min, data.cutmix_alpha,
              ('progressive.cutmix_min', 'data.cutmix_alpha'), augment),
      _values(prog.dropout_min, specs.model.dropout_rate,
              ('progressive.dropout_min', 'model.dropout_rate'),
              [p.dropout for p in progress]))
  starts = [0] + ends[:-1]
  return [Stage(i, start, end, *values, num_stages=num_stages)
          for i, (start, end, values) in enumerate(zip(starts, ends, columns))]


def stage_at(stages: Sequence[Stage], step: int) -> Stage:
  """The stage that global step `step` trains in; the last one past the end.

  Derived from the step alone, so a resumed run picks up the right stage
  whatever the previous run's length.
  """
  if not stages:
    raise ValueError('stage_at needs at least one stage')
  if step < 0:
    raise ValueError(f'step must be >= 0; received: step={step}')
  index = bisect.bisect_right([s.end_step for s in stages], step)
  return stages[min(index, len(stages) - 1)]


def eval_image_size(specs: Specs, stage: Stage) -> int:
  """The image size that evaluations during `stage` use.

  `progressive.eval_size='final'` evaluates at the eval size throughout, as
  the original did (its eval job read every checkpoint at `eval.isize`).
  'stage' evaluates at the stage's training size, scaled as the eval size
  is to the final training size, so the last stage gives the eval size
  itself and earlier figures show what the stage has learnt at its own
  size.
  """
  data = specs.data
  if specs.progressive.eval_size == 'final':
    return data.eval_image_size
  scaled = Fraction(stage.image_size * data.eval_image_size,
                    data.train_image_size)
  return max(MIN_IMAGE_SIZE, round(scaled))


# Above this share of the final average from before the last stage, the
# EMA a run evaluates mixes in earlier stages' image sizes.
EMA_CARRYOVER_LIMIT = 0.1


def ema_carryover_warning(stages: Sequence[Stage], ema: Any
                          ) -> Optional[str]:
  """A sentence when the EMA (`ema.ExponentialMovingAverage`) that a run
  of growing image sizes evaluates at its end still holds more than
  `EMA_CARRYOVER_LIMIT` from before its last stage; None otherwise.

  The averages include BatchNorm's moving statistics, which depend on the
  image size. The paper's runs had tens of thousands of steps in a stage;
  a short run under the presets' decay does not.
  """
  last = stages[-1]
  if ema is None or len({s.image_size for s in stages}) < 2 or \
      not last.num_steps:
    return None
  share = ema.share_before(last.start_step, last.end_step)
  if share <= EMA_CARRYOVER_LIMIT:
    return None
  bound = math.floor(EMA_CARRYOVER_LIMIT ** (1 / last.num_steps) * 1000)
  return (f'train.ema_decay={ema.decay:g} keeps {share:.0%} of the '
          f'evaluated averages from before the last stage ({last.num_steps} '
          f'steps at {last.image_size} px): its weights and BatchNorm '
          f'statistics mix in smaller images. A decay of at most '
          f'{bound / 1000:g} keeps that under '
          f'{EMA_CARRYOVER_LIMIT:.0%}')


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """How long a run is and what each part of it does: derived from the
  config and the dataset once, saved beside the config as plan.json."""
  global_batch: int
  steps_per_epoch: int  # whole batches: the loop's epochs
  epoch_steps: float  # train size / global batch: the schedules' epoch
  epochs: float  # train.epochs, stretched to train.min_steps
  stage_epochs: Tuple[float, ...]  # progressive.stage_epochs, stretched
  total_steps: int
  stages: Tuple[Stage, ...]

  def epoch_of(self, step: int) -> float:
    """Passes over the training split that `step` steps make."""
    return step / self.epoch_steps

  def applied_to(self, specs: Specs) -> Specs:
    """`specs` with the epochs this plan trains: what runs, to save.
    Planning it again gives this plan."""
    return dataclasses.replace(
        specs,
        optim=dataclasses.replace(specs.optim, epochs=self.epochs),
        progressive=dataclasses.replace(specs.progressive,
                                        stage_epochs=self.stage_epochs))

  def to_dict(self) -> Dict[str, Any]:
    """The plan as plain values, each stage with its length in epochs."""
    stages = [{**dataclasses.asdict(s),
               'epochs': self.epoch_of(s.num_steps)} for s in self.stages]
    return {'epochs': self.epochs, 'steps_per_epoch': self.steps_per_epoch,
            'epoch_steps': self.epoch_steps, 'total_steps': self.total_steps,
            'global_batch': self.global_batch, 'stages': stages}


def make_plan(specs: Specs, train_size: int, num_replicas: int) -> RunPlan:
  """The run's length and stages from its specs, its training-split size
  and its number of replicas."""
  optim = specs.optim
  global_batch = optim.batch_size
  distribute.check_batch_size(global_batch, num_replicas)
  accum = optim.grad_accum_steps
  if (global_batch // num_replicas) % accum:
    raise UserError(f'train.grad_accum_steps={accum} must divide the '
                    f'per-replica batch {global_batch // num_replicas}')
  if global_batch > train_size:
    raise UserError(f'train.batch_size={global_batch} is larger than the '
                    f'{train_size} training images')
  # As the original's main.py: `epochs * train_size // batch` steps, and
  # an epoch of `train_size / batch` steps for the schedules.
  epoch_steps = Fraction(train_size, global_batch)
  epochs = optim.epochs
  if optim.min_steps:
    epochs = max(epochs, math.ceil(optim.min_steps / epoch_steps))
  stages = plan(specs, epoch_steps, epochs)
  return RunPlan(global_batch, train_size // global_batch,
                 float(epoch_steps), epochs,
                 stretched_stage_epochs(specs, epochs),
                 stages[-1].end_step, tuple(stages))
