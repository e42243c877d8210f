"""Frozen, typed specs: what a resolved config means, checked once.

The config chain ends in a `ml_collections.ConfigDict`; `build_specs` turns
it into five frozen dataclasses and checks every value's range on the way:

    >>> import hparams
    >>> specs = build_specs(hparams.get_config('efficientnet-b0'))
    >>> specs.model.width_coefficient, specs.data.train_image_size
    (1.0, 176)

Each spec field carries its config key, a one-line meaning and, where it
has one, its allowed range, in `dataclasses.field` metadata. The defaults of
`base_config()` come from here, and so does the table of config keys in
docs/config_keys.md (`hparams.config.render_config_keys`). `ModelSpec`
is the one list of the model's arguments; fields marked `architecture` fix
its variables.
"""
import dataclasses
import math
from typing import Any, Callable, Dict, List, Optional, Tuple

from hparams.checks import (COUNT, GE0, GROWTH, GT0, REGEX, SEED, UNIT,
                             below_one, non_negative, optional, positive,
                             whole)
from hparams.errors import UserError

_SAME = object()  # a config default that is the field's default


def _option(default: Any, key: Optional[str] = None,
            doc: str = '', check: Optional[Tuple[Callable, str]] = None,
            architecture: bool = False, config_default: Any = _SAME,
            message: Optional[str] = None) -> Any:
  """A spec field. `check` is (test, what is allowed); `config_default` is
  the value in `base_config()` where it differs from `default`; `message`
  replaces the standard error, with {key} and {value} filled in."""
  metadata = {'key': key, 'doc': doc, 'check': check,
              'architecture': architecture, 'message': message,
              'config_default': default if config_default is _SAME
                                else config_default}
  return dataclasses.field(default=default, metadata=metadata)


# The classification losses a run can train with.
LOSS_TYPES = ('softmax', 'sigmoid')
# How the classifier's kernel starts: 'original', uniform in
# +-1/sqrt(classes) as in the original code, or a Keras initialiser.
HEAD_INITS = ('original', 'glorot_uniform', 'zeros')


def image_size_in_pixels(image_size: Optional[int],
                         image_size_ratio: Optional[float],
                         eval_image_size: int) -> int:
  """The training image size: pixels, else a fraction of the eval size
  rounded down to a multiple of 16 as the original does, else the eval
  size."""
  if image_size is not None:
    return image_size
  if image_size_ratio is not None:
    return int(eval_image_size * image_size_ratio) // 16 * 16
  return eval_image_size


class _Spec:
  """Range checks from field metadata, and lists converted to tuples."""
  # Whether errors quote the value by argument name, not by config key.
  _by_argument = False

  def __post_init__(self):
    for f in dataclasses.fields(self):
      value = getattr(self, f.name)
      if isinstance(value, float) and not math.isfinite(value):
        raise self._error(f, value, 'a finite number')
      if f.metadata['check']:
        test, allowed = f.metadata['check']
        try:
          ok = test(value)
        except TypeError:
          ok = False
        if not ok:
          raise self._error(f, value, allowed)
      if isinstance(value, list):  # frozen all the way down
        object.__setattr__(self, f.name, tuple(value))

  def _error(self, f: dataclasses.Field, value: Any,
             allowed: str) -> UserError:
    key = f.metadata['key'] or f.name
    if f.metadata['message']:
      return UserError(f.metadata['message'].format(key=key, value=value))
    name = f.name if self._by_argument else key
    return UserError(f'{key} must be {allowed}; received: {name}={value!r}')

  @classmethod
  def from_keys(cls, lookup: Callable[[str], Any], **overrides):
    """The spec whose fields `lookup(config_key)` gives, then `overrides`;
    an unset (None) value takes the field's default."""
    values = {}
    for f in dataclasses.fields(cls):
      if f.metadata['key']:
        value = lookup(f.metadata['key'])
        if value is not None:
          values[f.name] = value
    return cls(**{**values, **overrides})


_BLOCKS = (lambda v: len(v) > 0 and all(isinstance(s, str) for s in v),
           'a non-empty list of block strings, e.g. r1_k3_s1_e1_i32_o16_c1')


@dataclasses.dataclass(frozen=True)
class ModelSpec(_Spec):
  """The arguments of `efficientnetv2_tf.EfficientNet` and their defaults;
  those without a config key are passed in code."""
  _by_argument = True

  name: str = _option(
      'efficientnet', 'model.model_name', 'the model preset, and the Keras '
      'model name', architecture=True, config_default='efficientnetv2-b0')
  blocks_args: Tuple[str, ...] = _option(
      (), 'model.blocks_args', 'block strings, one per stage (see '
      'efficientnetv2_tf.blockargs)', _BLOCKS, architecture=True)
  width_coefficient: float = _option(
      1.0, 'model.width_coefficient', 'channel multiplier', GT0,
      architecture=True)
  depth_coefficient: float = _option(
      1.0, 'model.depth_coefficient', 'block-count multiplier', GT0,
      architecture=True)
  num_classes: int = _option(
      1000, 'model.num_classes', 'classifier outputs; unset: from the '
      'dataset or the checkpoint, else 1000 (ImageNet)',
      (whole(positive), 'a positive int'), architecture=True,
      config_default=None)
  include_top: bool = _option(True, doc='add the dropout and classifier')
  with_endpoints: bool = _option(
      False, doc='also return the last feature map at each stride')
  dropout_rate: float = _option(
      0.2, 'model.dropout_rate', 'dropout before the classifier', UNIT)
  survival_prob: Optional[float] = _option(
      0.8, 'model.survival_prob', 'stochastic depth: block i of N survives '
      'with 1 - (1 - p) i / N, the last a little above p; 1.0, 0 (as in '
      'the original) or None disables it',
      (optional(lambda v: 0 <= v <= 1), 'in [0, 1], 0 or None to disable'))
  feature_size: int = _option(
      1280, 'model.feature_size', 'head channels before width scaling',
      GT0, architecture=True)
  depth_divisor: int = _option(
      8, 'model.depth_divisor', 'channels round to multiples of this', GT0,
      architecture=True)
  min_depth: Optional[int] = _option(
      8, 'model.min_depth', 'fewest channels of a layer',
      (optional(positive), '> 0 or None'), architecture=True)
  rounding_floor: float = _option(
      0.0, 'model.rounding_floor', 'channel rounding may lose at most '
      '1 - this (V1: 0.9)', UNIT, architecture=True)
  act_fn: str = _option('silu', 'model.act_fn', 'activation function')
  bn_momentum: float = _option(
      0.9, 'model.bn_momentum', 'BatchNorm moving-average momentum', UNIT)
  bn_epsilon: float = _option(
      1e-3, 'model.bn_epsilon', 'BatchNorm epsilon', GT0)
  bn_sync: Optional[bool] = _option(
      None, 'model.bn_sync', 'cross-replica BatchNorm statistics; unset: '
      'on under TPUStrategy, off elsewhere',
      (optional(lambda v: isinstance(v, bool)), 'True, False or None'))
  conv_dropout: Optional[float] = _option(
      0.0, 'model.conv_dropout', 'dropout inside each block',
      (optional(below_one), 'in [0, 1)'))
  headbias: Optional[float] = _option(
      None, 'model.headbias', 'initial classifier bias; unset: 0')
  head_init: str = _option(
      'original', 'model.head_init', 'initial classifier kernel: original '
      '(uniform in +-1/sqrt(classes)), glorot_uniform (Keras\'s Dense '
      'default, about 1/5 of that range at 10 classes) or zeros',
      (lambda v: v in HEAD_INITS, f'one of {", ".join(HEAD_INITS)}'))
  include_preprocessing: bool = _option(
      False, doc='take 0-255 pixels and normalise them in the model')
  preprocessing_mode: str = _option(
      'symmetric', doc='the normalisation of include_preprocessing')
  input_shape: Tuple[Optional[int], ...] = _option(
      (None, None, 3), doc='image shape without the batch dimension')

  def arguments(self) -> Dict[str, Any]:
    """The keyword arguments of `EfficientNet` that build this model."""
    return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

  def architecture_changes(self, other: 'ModelSpec'
                           ) -> List[Tuple[str, Any, Any]]:
    """(config key, this value, other's value) for each field that fixes
    the model's variables and differs: a checkpoint of one model does not
    load into the other unless this is empty."""
    return [(f.metadata['key'], getattr(self, f.name), getattr(other, f.name))
            for f in dataclasses.fields(self) if f.metadata['architecture']
            and getattr(self, f.name) != getattr(other, f.name)]


@dataclasses.dataclass(frozen=True)
class DataSpec(_Spec):
  """What to read, how to augment it and at which sizes."""
  dataset: str = _option(
      'imagenet', 'data.dataset', 'a name from datasets.list_datasets()')
  data_dir: Optional[str] = _option(
      None, 'data.data_dir', 'where the data is; --data_dir wins')
  train_split: str = _option('train', 'data.train_split', 'training split')
  eval_split: str = _option('eval', 'data.eval_split', 'evaluation split')
  per_class: Optional[int] = _option(
      None, 'data.per_class', 'at most this many training images per class',
      (optional(whole(positive)),
       'a positive integer (or None for all images)'))
  fraction: float = _option(
      1.0, 'data.fraction', 'share of the training split used',
      (lambda v: 0 < v <= 1, 'in (0, 1]'),
      message='{key} must be in (0, 1]; received: {value!r}')
  val_fraction: float = _option(
      0.2, 'data.val_fraction', 'held out for evaluation where a source has '
      'no evaluation split', (lambda v: 0 < v < 1, 'in (0, 1)'))
  seed: Optional[int] = _option(
      None, 'data.seed', 'repeatable initialisation, order and augmentation',
      SEED)
  strict: bool = _option(
      False, 'data.strict', 'fail on an unreadable image instead of '
      'skipping it')
  cache: str = _option('auto', 'data.cache', 'auto, memory or none')
  shuffle_buffer: int = _option(
      16384, 'data.shuffle_buffer', 'images in the shuffle buffer', COUNT)
  flip: bool = _option(True, 'data.flip', 'random horizontal flips')
  augmentation: str = _option(
      'randaug', 'data.augname', 'augmentation recipe')
  augment_fixes: bool = _option(
      False, 'data.augment_fixes', "False: the original's augmentation "
      'ops, quirks included; True: the corrected ops')
  normalization: Optional[str] = _option(
      None, 'data.normalization', "symmetric, inception or imagenet; unset: "
      "the recipe's, or the fine-tuned weights'")
  randaug_layers: int = _option(
      2, 'data.ra_num_layers', 'RandAugment ops per image',
      (whole(non_negative), 'an integer >= 0'))
  randaug_magnitude: float = _option(
      15.0, 'data.ram', 'RandAugment magnitude')
  mixup_alpha: float = _option(
      0.0, 'data.mixup_alpha', 'mixup Beta parameter; 0 disables it',
      (non_negative, 'a number >= 0 (0 disables it)'))
  cutmix_alpha: float = _option(
      0.0, 'data.cutmix_alpha', 'cutmix Beta parameter; 0 disables it',
      (non_negative, 'a number >= 0 (0 disables it)'))
  image_size: Optional[int] = _option(
      None, 'train.image_size', 'training image size in pixels; unset: '
      'from train.image_size_ratio, else the eval size',
      (optional(whole(positive)), 'a positive integer or None'))
  image_size_ratio: Optional[float] = _option(
      None, 'train.image_size_ratio', 'training image size as a fraction '
      'of the eval size, rounded down to a multiple of 16',
      (optional(positive), '> 0 or None'))
  eval_image_size: int = _option(
      224, 'eval.isize', 'evaluation image size in pixels',
      (whole(positive), 'a positive integer'))
  eval_batch_size: int = _option(
      8, 'eval.batch_size', 'evaluation batch size', COUNT)

  @property
  def train_image_size(self) -> int:
    return image_size_in_pixels(self.image_size, self.image_size_ratio,
                                self.eval_image_size)


@dataclasses.dataclass(frozen=True)
class ProgressiveSpec(_Spec):
  """Progressive learning: stages whose image size and regularisation
  grow from these minimums to the configured values."""
  stages: int = _option(
      0, 'train.stages', 'progressive stages; 0 or 1: none',
      (non_negative, '>= 0 (0 or 1: no progressive learning)'))
  schedule_regularization: bool = _option(
      False, 'train.sched', 'stages also grow RandAugment, mixup and '
      'cutmix, and dropout under the paper schedule')
  schedule: str = _option(
      'code', 'progressive.schedule', "code (the original code's) or paper "
      '(Table 6)')
  stage_epochs: Tuple[float, ...] = _option(
      (), 'progressive.stage_epochs', 'epochs per stage; empty: equal '
      'stages', (lambda v: all(e > 0 for e in v), 'numbers > 0'))
  eval_size: str = _option(
      'final', 'progressive.eval_size', "evaluations during training: "
      "final (all at the eval size, as the original's eval job) or stage "
      '(at the stage\'s size, scaled as the eval size is to the training '
      'size)', (lambda v: v in ('final', 'stage'), "'final' or 'stage'"))
  first_image_size: int = _option(
      128, 'data.ibase', "the first stage's image size under the paper "
      'schedule, one step below it under the code schedule; 0: half the '
      'training size',
      (non_negative, '>= 0 (0: half the training size)'))
  ram_min: float = _option(
      5.0, 'progressive.ram_min', 'first-stage RandAugment magnitude', GE0)
  mixup_min: float = _option(
      0.0, 'progressive.mixup_min', 'first-stage mixup alpha', GE0)
  cutmix_min: float = _option(
      0.0, 'progressive.cutmix_min', 'first-stage cutmix alpha', GE0)
  dropout_min: float = _option(
      0.1, 'progressive.dropout_min', "first-stage dropout; the 'code' "
      'schedule keeps dropout fixed', UNIT)


@dataclasses.dataclass(frozen=True)
class OptimSpec(_Spec):
  """How long to train and how to optimise."""
  epochs: int = _option(350, 'train.epochs', 'training epochs', GT0)
  batch_size: int = _option(
      4096, 'train.batch_size', 'global training batch size', COUNT)
  min_steps: int = _option(
      0, 'train.min_steps', 'epochs grow until training has this many '
      'steps', GE0)
  optimizer: str = _option('rmsprop', 'train.optimizer', 'optimizer name')
  lr_schedule: str = _option(
      'exponential', 'train.lr_sched', 'learning-rate schedule')
  lr_base: float = _option(
      0.016, 'train.lr_base', 'peak learning rate', GE0)
  lr_decay_epoch: float = _option(
      2.4, 'train.lr_decay_epoch', 'epochs per exponential decay', GT0)
  lr_decay_factor: float = _option(
      0.97, 'train.lr_decay_factor', 'exponential decay factor', GT0)
  lr_warmup_epoch: float = _option(
      5.0, 'train.lr_warmup_epoch', 'linear warm-up epochs', GE0)
  lr_min: float = _option(0.0, 'train.lr_min', 'learning-rate floor, per '
                          '256 images as train.lr_base', GE0)
  ema_decay: float = _option(
      0.9999, 'train.ema_decay', 'weight moving-average decay; 0: no '
      'moving average, evaluation uses the raw weights', UNIT)
  weight_decay: float = _option(
      1e-5, 'train.weight_decay', 'L2 weight decay', GE0)
  weight_decay_inc: float = _option(
      0.0, 'train.weight_decay_inc', 'weight decay grows by this share '
      'over training', GROWTH)
  weight_decay_exclude: str = _option(
      '.*(bias|gamma|beta).*', 'train.weight_decay_exclude',
      'regex of variables without weight decay', REGEX)
  label_smoothing: float = _option(
      0.1, 'train.label_smoothing', 'label smoothing', UNIT)
  loss_type: str = _option(
      'softmax', 'train.loss_type', 'softmax: cross-entropy, multi-hot '
      'labels divided by their sum; sigmoid: per-class binary',
      (lambda v: v in LOSS_TYPES, f'one of {", ".join(LOSS_TYPES)}'))
  grad_clip_norm: float = _option(
      0.0, 'train.gclip', 'gradient clipping norm; 0: none', GE0)
  init_checkpoint: Optional[str] = _option(
      None, 'train.ft_init_ckpt', 'weights to fine-tune from')
  init_from_ema: bool = _option(
      True, 'train.ft_init_ema', 'fine-tune from the moving-average weights')
  freeze_epochs: float = _option(
      0.0, 'train.freeze_epochs', 'epochs that train only the classifier',
      GE0)
  plateau_patience: int = _option(
      2, 'train.plateau_patience', 'evaluations without improvement before '
      'lr_sched=plateau lowers the rate', COUNT)
  plateau_factor: float = _option(
      0.5, 'train.plateau_factor', 'what lr_sched=plateau multiplies by',
      (lambda v: 0 < v < 1, 'in (0, 1)'))
  early_stop_patience: int = _option(
      0, 'train.early_stop_patience', 'evaluations without improvement '
      'before stopping; 0: never', GE0)
  grad_accum_steps: int = _option(
      1, 'train.grad_accum_steps', 'micro-batches per update', COUNT)


@dataclasses.dataclass(frozen=True)
class RuntimeSpec(_Spec):
  """How the training loop runs, saves and reports."""
  steps_per_loop: int = _option(
      1, 'runtime.steps_per_loop', 'training steps per tf.function call',
      COUNT)
  checkpoint_every_steps: int = _option(
      0, 'runtime.checkpoint_every_steps', '0: at every epoch end only',
      GE0)
  keep_checkpoints: int = _option(
      3, 'runtime.keep_checkpoints', 'checkpoints kept', COUNT)
  mixed_precision: bool = _option(
      False, 'runtime.mixed_precision', 'bfloat16 on CPU/TPU, float16 on '
      'GPU')
  log_every_steps: int = _option(
      0, 'runtime.log_every_steps', 'a line of training loss, top-1 and '
      'speed every this many steps; 0: a progress bar per epoch', GE0)
  jit_compile: bool = _option(
      False, 'train.jit_compile', 'compile the training step with XLA')


@dataclasses.dataclass(frozen=True)
class Specs:
  """Everything a run needs to know, resolved and checked."""
  model: ModelSpec
  data: DataSpec
  progressive: ProgressiveSpec
  optim: OptimSpec
  runtime: RuntimeSpec


SPEC_TYPES = (ModelSpec, DataSpec, ProgressiveSpec, OptimSpec, RuntimeSpec)


def build_specs(cfg: Any) -> Specs:
  """Converts a resolved config into specs; raises UserError naming the
  first key whose value is out of range."""
  def lookup(key):
    section, leaf = key.split('.')
    return cfg[section][leaf]
  return Specs(*(spec_type.from_keys(lookup) for spec_type in SPEC_TYPES))


def config_values(specs: Specs) -> Dict[str, Dict[str, Any]]:
  """The config keys' values that `specs` were built from, by section: the
  inverse of `build_specs`, for saving the config that runs."""
  sections: Dict[str, Dict[str, Any]] = {}
  for spec in (getattr(specs, f.name) for f in dataclasses.fields(specs)):
    for f in dataclasses.fields(spec):
      if f.metadata['key']:
        section, key = f.metadata['key'].split('.')
        value = getattr(spec, f.name)
        sections.setdefault(section, {})[key] = (
            list(value) if isinstance(value, tuple) else value)
  return sections
