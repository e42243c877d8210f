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
changes. The final size is the training size (`hparams.train_image_size`);
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
    >>> cfg = hparams.get_config(
    ...     'efficientnetv2-s', None, 'train.epochs=10,data.ram=15,'
    ...     'model.dropout_rate=0.3,progressive.schedule=paper')
    >>> stages = plan(cfg, steps_per_epoch=100)
    >>> [(s.end_step, s.image_size, round(s.dropout_rate, 2)) for s in stages]
    [(250, 128, 0.1), (500, 185, 0.17), (750, 242, 0.23), (1000, 300, 0.3)]
    >>> print(stage_at(stages, 600).describe())
    stage 3/4: steps 500-749, 242 px, magnitude 11.67, mixup 0.0, ...

`make_plan` plans a whole run (`RunPlan`) from the config, the training
split's size and the number of replicas: the global batch, steps per epoch,
epochs (`train.epochs`, stretched until there are `train.min_steps` steps,
`progressive.stage_epochs` with them) and the stages. It only reads the
config; `RunPlan.applied_to` gives the config that runs, to save beside
the plan:

    >>> run = make_plan(cfg, train_size=409_600, num_replicas=8)
    >>> run.global_batch, run.steps_per_epoch, run.epochs, run.total_steps
    (4096, 100, 10, 1000)
"""
import bisect
import copy
import dataclasses
from fractions import Fraction
import functools
import itertools
import math
import numbers
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import ml_collections

import hparams
from efficientnetv2_tf import distribute
from efficientnetv2_tf.preprocessing import AUGMENTATIONS
from efficientnetv2_tf.preprocessing import Augmentation
from hparams.errors import UserError
from hparams.registry import Registry

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


def _lookup(cfg: ml_collections.ConfigDict, key: str) -> Any:
  return functools.reduce(getattr, key.split('.'), cfg)


def _lerp(first: float, last: float, fraction: Fraction) -> Fraction:
  # Exact arithmetic, so that the last stage gets exactly the configured
  # value and sizes are truncated from the true value, not a rounded one.
  return Fraction(first) + (Fraction(last) - Fraction(first)) * fraction


def _is_number(value: Any) -> bool:
  return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _num_stages(cfg: ml_collections.ConfigDict) -> int:
  stages = cfg.train.stages
  if stages < 0:
    raise UserError(f'train.stages must be >= 0 (0 or 1: no progressive '
                    f'learning); received: train.stages={stages}')
  return max(stages, 1)


def _schedule(cfg: ml_collections.ConfigDict) -> Callable[[int, int],
                                                          Progress]:
  try:
    return SCHEDULES.get(cfg.progressive.schedule)
  except UserError as e:
    raise UserError(f'progressive.schedule: {e}') from None


def _end_steps(epochs: float, stage_epochs: Sequence[float],
               configured_stages: int, num_stages: int,
               steps_per_epoch: int) -> List[int]:
  """The exclusive last global step of each stage."""
  if (not isinstance(steps_per_epoch, int) or isinstance(steps_per_epoch, bool)
      or steps_per_epoch < 1):
    raise UserError(f'steps per epoch must be an integer >= 1; received: '
                    f'steps_per_epoch={steps_per_epoch!r}')
  total = int(epochs * steps_per_epoch)
  if not stage_epochs:
    return [total * (i + 1) // num_stages for i in range(num_stages)]
  if len(stage_epochs) != num_stages:
    raise UserError(
        f'progressive.stage_epochs needs one entry per stage '
        f'(train.stages={configured_stages}); received: {list(stage_epochs)} '
        f'({len(stage_epochs)} entries)')
  if not all(_is_number(e) and e > 0 for e in stage_epochs):
    raise UserError(f'progressive.stage_epochs must be numbers > 0; '
                    f'received: {list(stage_epochs)}')
  if not math.isclose(sum(stage_epochs), epochs):
    raise UserError(f'progressive.stage_epochs must add up to train.epochs='
                    f'{epochs}; received: {list(stage_epochs)} (sum '
                    f'{sum(stage_epochs):g})')
  ends = [round(Fraction(done) * steps_per_epoch)
          for done in itertools.accumulate(stage_epochs[:-1])]
  return ends + [total]


def stretched_stage_epochs(cfg: ml_collections.ConfigDict,
                           epochs: float) -> List[float]:
  """`progressive.stage_epochs` scaled from `train.epochs` to `epochs`, so
  that a stretched run's stages still add up; empty when not set."""
  scale = epochs / cfg.train.epochs
  stage_epochs = list(cfg.progressive.stage_epochs)
  if scale == 1:
    return stage_epochs
  return [e * scale if _is_number(e) else e for e in stage_epochs]


def _values(cfg: ml_collections.ConfigDict, min_key: str, max_key: str,
            fractions: Sequence[Fraction]) -> List[float]:
  """`min_key`'s value grown towards `max_key`'s by each fraction."""
  first, last = _lookup(cfg, min_key), _lookup(cfg, max_key)
  if first < 0:
    raise UserError(f'{min_key} must be >= 0; received: {min_key}={first}')
  if first > last and any(f != 1 for f in fractions):
    raise UserError(f'{min_key}={first} is above {max_key}={last}; a '
                    'progressive schedule grows from the minimum to the '
                    'configured value')
  return [float(_lerp(first, last, f)) for f in fractions]


def _image_sizes(cfg: ml_collections.ConfigDict,
                 fractions: Sequence[Fraction]) -> List[int]:
  size = hparams.train_image_size(cfg)
  ibase = cfg.data.ibase
  if ibase < 0:
    raise UserError(f'data.ibase must be >= 0 (0: half the training size); '
                    f'received: data.ibase={ibase}')
  ibase = ibase or Fraction(size, 2)
  if ibase > size and any(f != 1 for f in fractions):
    raise UserError(f'data.ibase={ibase} is above the training image size '
                    f'{size} (train.image_size); the first stage must be '
                    'smaller')
  return [max(MIN_IMAGE_SIZE, int(_lerp(ibase, size, f))) for f in fractions]


def plan(cfg: ml_collections.ConfigDict, steps_per_epoch: int,
         epochs: Optional[float] = None) -> List[Stage]:
  """The stages of a run: `epochs * steps_per_epoch` steps in all.

  `epochs` defaults to `train.epochs`; a longer run stretches
  `progressive.stage_epochs` with it. Reads the config and returns values;
  raises `UserError`, naming the key, for settings that make no schedule.
  """
  num_stages = _num_stages(cfg)
  schedule = _schedule(cfg)
  if cfg.train.epochs <= 0:
    raise UserError(f'train.epochs must be > 0; received: train.epochs='
                    f'{cfg.train.epochs}')
  if epochs is None:
    epochs = cfg.train.epochs
  ends = _end_steps(epochs, stretched_stage_epochs(cfg, epochs),
                    cfg.train.stages, num_stages, steps_per_epoch)
  progress = [schedule(i, num_stages) if num_stages > 1 else _FULL
              for i in range(num_stages)]
  if not cfg.train.sched:
    progress = [dataclasses.replace(p, augmentation=Fraction(1),
                                    dropout=Fraction(1)) for p in progress]
  augment = [p.augmentation for p in progress]
  policy = AUGMENTATIONS.get(cfg.data.augname or 'none').policy
  magnitude = (augment if policy in _MAGNITUDE_POLICIES
               else [Fraction(1)] * num_stages)
  columns = zip(
      _image_sizes(cfg, [p.image_size for p in progress]),
      _values(cfg, 'progressive.ram_min', 'data.ram', magnitude),
      _values(cfg, 'progressive.mixup_min', 'data.mixup_alpha', augment),
      _values(cfg, 'progressive.cutmix_min', 'data.cutmix_alpha', augment),
      _values(cfg, 'progressive.dropout_min', 'model.dropout_rate',
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


@dataclasses.dataclass(frozen=True)
class RunPlan:
  """How long a run is and what each part of it does: derived from the
  config and the dataset once, saved beside the config as plan.json."""
  global_batch: int
  steps_per_epoch: int
  epochs: float  # train.epochs, stretched to train.min_steps
  stage_epochs: Tuple[float, ...]  # progressive.stage_epochs, stretched
  total_steps: int
  stages: Tuple[Stage, ...]

  def epoch_of(self, step: int) -> float:
    return step / self.steps_per_epoch

  def applied_to(self, cfg: ml_collections.ConfigDict
                 ) -> ml_collections.ConfigDict:
    """A copy of `cfg` with the epochs this plan trains: the config that
    runs, to save. Planning it again gives this plan."""
    ran = copy.deepcopy(cfg)
    hparams.override(ran, {'train.epochs': self.epochs,
                           'progressive.stage_epochs': list(
                               self.stage_epochs)})
    return ran

  def to_dict(self) -> Dict[str, Any]:
    """The plan as plain values, each stage with its length in epochs."""
    stages = [{**dataclasses.asdict(s),
               'epochs': self.epoch_of(s.num_steps)} for s in self.stages]
    return {'epochs': self.epochs, 'steps_per_epoch': self.steps_per_epoch,
            'total_steps': self.total_steps,
            'global_batch': self.global_batch, 'stages': stages}


def make_plan(cfg: ml_collections.ConfigDict, train_size: int,
              num_replicas: int) -> RunPlan:
  """The run's length and stages from its config, its training-split size
  and its number of replicas; the config is only read."""
  global_batch = cfg.train.batch_size
  distribute.check_batch_size(global_batch, num_replicas)
  accum = cfg.train.grad_accum_steps
  if accum < 1 or (global_batch // num_replicas) % accum:
    raise UserError(f'train.grad_accum_steps={accum} must be >= 1 and divide'
                    f' the per-replica batch {global_batch // num_replicas}')
  steps_per_epoch = train_size // global_batch
  if not steps_per_epoch:
    raise UserError(f'train.batch_size={global_batch} is larger than the '
                    f'{train_size} training images')
  epochs = cfg.train.epochs
  if cfg.train.min_steps:
    epochs = max(epochs, math.ceil(cfg.train.min_steps / steps_per_epoch))
  stages = plan(cfg, steps_per_epoch, epochs)
  return RunPlan(global_batch, steps_per_epoch, epochs,
                 tuple(stretched_stage_epochs(cfg, epochs)),
                 stages[-1].end_step, tuple(stages))
