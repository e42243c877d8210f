"""Learning-rate schedules, optimizers and loss terms.

The pieces of the original's `model_fn` that sit around the model, for a
custom training loop. All of them run inside `tf.function` and under any
`tf.distribute` strategy; per-example losses let the caller divide by the
global batch size.

    >>> lr = LearningRate(0.1, steps_per_epoch=10, total_steps=100,
    ...                   schedule='cosine', warmup_epochs=1)
    >>> [round(float(lr(step)), 4) for step in (0, 5, 50, 100)]
    [0.0, 0.05, 0.05, 0.0]

One training step (the weight averages are in `ema`):

    >>> w = tf.Variable([3.0, -4.0])
    >>> optimizer = build_optimizer('sgd', 0.1)
    >>> with tf.GradientTape() as tape:
    ...   loss = tf.reduce_sum(w ** 2) + weight_decay_loss([w], 1e-5, '')
    >>> grads = clip_gradients(tape.gradient(loss, [w]), clip_norm=1.0)
    >>> _ = optimizer.apply_gradients(zip(grads, [w]))
    >>> w.numpy()
    array([ 2.94, -3.92], dtype=float32)

Where this module differs from the original, on purpose:

- 'cosine' and 'linear' stop at `total_steps`: past it the original's
  cosine rose again and its linear schedule went negative.
- 'plateau' is new: a constant rate that `PlateauReducer` lowers.
- 'momentum' is Keras's SGD, which folds the learning rate into the
  momentum buffer; TF1's applied it afterwards. The two agree while the
  rate is constant.
- `build_optimizer(weight_decay=...)` is Keras's decoupled decay (new); the
  original's decay is the L2 term `weight_decay_loss`.
- Softmax labels are always scaled to sum to 1; the original did so only
  for multi-class datasets (`data.multiclass`). One-hot and mixed labels
  already sum to 1. There an all-zero label row was 0 / 0, a NaN loss;
  here it stays zero (no loss without label smoothing).
"""
import math
import re
from typing import Any, Callable, List, Optional, Sequence, Union

import keras
import tensorflow as tf

from efficientnetv2_tf.optimizers import AdamTF1
from efficientnetv2_tf.optimizers import AdamWTF1
from efficientnetv2_tf.optimizers import RMSpropTF1
from hparams.errors import UserError
from hparams.registry import Registry
from hparams.specs import LOSS_TYPES  # what `classification_loss` computes

Variables = Sequence[tf.Variable]
Step = Union[int, tf.Tensor, tf.Variable]  # e.g. `optimizer.iterations`


def scaled_learning_rate(lr_base: float, global_batch_size: int) -> float:
  """The learning rate for `global_batch_size`: `lr_base` is per 256 images.

  The original scaled `train.lr_base` and `train.lr_min` this way.

      >>> scaled_learning_rate(0.016, 4096)
      0.256
  """
  return lr_base * global_batch_size / 256.0


# ---------------------------------------------------------------- schedules

# Each schedule maps (LearningRate, float32 step) to the rate after warm-up.
SCHEDULES: Registry[Callable[['LearningRate', tf.Tensor], tf.Tensor]] = (
    Registry('learning rate schedule'))


@SCHEDULES.register('exponential')
def _exponential(lr: 'LearningRate', step: tf.Tensor) -> tf.Tensor:
  # Staircase, counted from step 0 rather than from the end of warm-up.
  decay_steps = lr.decay_epochs * lr.steps_per_epoch
  return lr.peak * lr.decay_factor ** tf.floor(step / decay_steps)


def _progress(lr: 'LearningRate', step: tf.Tensor) -> tf.Tensor:
  return tf.minimum(step / lr.total_steps, 1.0)


@SCHEDULES.register('cosine')
def _cosine(lr: 'LearningRate', step: tf.Tensor) -> tf.Tensor:
  return 0.5 * lr.peak * (1.0 + tf.cos(math.pi * _progress(lr, step)))


@SCHEDULES.register('linear')
def _linear(lr: 'LearningRate', step: tf.Tensor) -> tf.Tensor:
  return lr.peak * (1.0 - _progress(lr, step))


@SCHEDULES.register('constant')
def _constant(lr: 'LearningRate', step: tf.Tensor) -> tf.Tensor:
  return tf.fill(tf.shape(step), tf.constant(lr.peak, tf.float32))


@SCHEDULES.register('plateau')
def _plateau(lr: 'LearningRate', step: tf.Tensor) -> tf.Tensor:
  return _constant(lr, step) * lr.plateau_scale


def _check_positive(**values) -> None:
  for name, value in values.items():
    if not value > 0:
      raise UserError(f'{name} must be positive; Received: {name}={value!r}')


@keras.saving.register_keras_serializable(package='efficientnetv2_tf')
class LearningRate(keras.optimizers.schedules.LearningRateSchedule):
  """The original's learning rate: linear warm-up, then a decay schedule.

  Warm-up rises from 0 at step 0 towards `peak`, reached at step
  `int(warmup_epochs * steps_per_epoch)`; after it comes `schedule`, one of
  `SCHEDULES.names()`, floored at `minimum` (warm-up is not floored).
  Steps count from 0, as `optimizer.iterations` does, and the decay is a
  function of the step itself, not of the steps since warm-up.
  `steps_per_epoch` may be fractional, as the original's training-split
  size over the batch size was.

  For 'plateau' the rate is `peak * plateau_scale`, a non-trainable
  variable that `PlateauReducer` lowers; it is state, so `get_config`
  leaves it out. Other schedules have `plateau_scale = None`.
  """

  def __init__(self, peak: float, steps_per_epoch: float, total_steps: int,
               schedule: str = 'exponential', warmup_epochs: float = 5.0,
               decay_epochs: float = 2.4, decay_factor: float = 0.97,
               minimum: float = 0.0):
    super().__init__()
    self._decay = SCHEDULES.get(schedule)
    _check_positive(steps_per_epoch=steps_per_epoch, total_steps=total_steps,
                    decay_epochs=decay_epochs)
    self.peak = float(peak)
    self.steps_per_epoch = steps_per_epoch
    self.total_steps = total_steps
    self.schedule = schedule
    self.warmup_epochs = float(warmup_epochs)
    self.decay_epochs = float(decay_epochs)
    self.decay_factor = float(decay_factor)
    self.minimum = float(minimum)
    self.warmup_steps = int(self.warmup_epochs * steps_per_epoch)
    self.plateau_scale = None
    if schedule.lower() == 'plateau':
      self.plateau_scale = tf.Variable(1.0, trainable=False,
                                       name='plateau_scale')

  def __call__(self, step: Step) -> tf.Tensor:
    step = tf.cast(step, tf.float32)
    lr = tf.maximum(self._decay(self, step), self.minimum)
    if self.warmup_steps > 0:
      warmup = self.peak * step / self.warmup_steps
      lr = tf.where(step < self.warmup_steps, warmup, lr)
    return lr

  def get_config(self) -> dict:
    return {'peak': self.peak, 'steps_per_epoch': self.steps_per_epoch,
            'total_steps': self.total_steps, 'schedule': self.schedule,
            'warmup_epochs': self.warmup_epochs,
            'decay_epochs': self.decay_epochs,
            'decay_factor': self.decay_factor, 'minimum': self.minimum}


class PlateauReducer(tf.Module):
  """Lowers a 'plateau' schedule when the eval loss stops improving.

  After `patience` evaluations in a row without a new best loss, the
  schedule's `plateau_scale` is multiplied by `factor` (not below
  `min_scale`) and the count starts again. The best loss, the count and
  the scale are variables of this module, so `tf.train.Checkpoint` saves
  and restores all three. `update` runs eagerly, between evaluations.
  """

  def __init__(self, schedule: LearningRate, patience: int = 2,
               factor: float = 0.5, min_scale: float = 1e-3):
    super().__init__(name='plateau_reducer')
    if schedule.plateau_scale is None:
      raise UserError("PlateauReducer needs schedule='plateau'; Received: "
                      f'schedule={schedule.schedule!r}')
    _check_positive(patience=patience, factor=factor, min_scale=min_scale)
    if factor >= 1:
      raise UserError(f'factor must be below 1; Received: factor={factor!r}')
    self.patience = int(patience)
    self.factor = float(factor)
    self.min_scale = float(min_scale)
    self.scale = schedule.plateau_scale
    # float64 so that an equal loss, passed again as a Python float, does
    # not count as an improvement after a float32 round trip.
    self.best_loss = tf.Variable(math.inf, dtype=tf.float64, trainable=False,
                                 name='best_loss')
    self.bad_evals = tf.Variable(0, dtype=tf.int64, trainable=False,
                                 name='bad_evals')

  def update(self, eval_loss: float) -> bool:
    """Records one evaluation's loss; True if it lowered the scale."""
    eval_loss = float(eval_loss)
    if eval_loss < self.best_loss.numpy():
      self.best_loss.assign(eval_loss)
      self.bad_evals.assign(0)
      return False
    self.bad_evals.assign_add(1)
    if self.bad_evals.numpy() < self.patience:
      return False
    self.bad_evals.assign(0)
    before = self.scale.numpy()
    self.scale.assign(max(before * self.factor, self.min_scale))
    return bool(self.scale.numpy() < before)


# --------------------------------------------------------------- optimizers


# Each factory takes (learning_rate, weight_decay); weight_decay is a float
# for 'adamw', which requires one, and None (no decay) or a float otherwise.
OPTIMIZERS: Registry[Callable[..., keras.optimizers.Optimizer]] = (
    Registry('optimizer'))


@OPTIMIZERS.register('rmsprop')
def _rmsprop(learning_rate, weight_decay):
  return RMSpropTF1(learning_rate, rho=0.9, momentum=0.9, epsilon=1e-3,
                    weight_decay=weight_decay)


@OPTIMIZERS.register('sgd')
def _sgd(learning_rate, weight_decay):
  return keras.optimizers.SGD(learning_rate, weight_decay=weight_decay)


@OPTIMIZERS.register('momentum')
def _momentum(learning_rate, weight_decay):
  return keras.optimizers.SGD(learning_rate, momentum=0.9,
                              weight_decay=weight_decay)


# epsilon 1e-8 is TF1 Adam's; with it Keras's update is the same as TF1's.
@OPTIMIZERS.register('adam')
def _adam(learning_rate, weight_decay):
  return AdamTF1(learning_rate, epsilon=1e-8, weight_decay=weight_decay)


@OPTIMIZERS.register('adamw')
def _adamw(learning_rate, weight_decay):
  return AdamWTF1(learning_rate, epsilon=1e-8,
                  weight_decay=weight_decay or 0.0)


def build_optimizer(
    name: str, learning_rate, *, weight_decay: float = 0.0,
    excluded: Sequence[Any] = ()) -> keras.optimizers.Optimizer:
  """A Keras optimizer by name, one of `OPTIMIZERS.names()`.

  `learning_rate` is a float or a schedule such as `LearningRate`.
  `weight_decay` is Keras's decoupled decay (each step subtracts
  `lr * weight_decay * w`); 0 turns it off, and 'adamw' is Adam with it.
  The variables `excluded` (see `decay_excluded`) are not decayed.

  Under a strategy, create it and call `optimizer.build(variables)` in
  the strategy's scope (Keras cannot create its slots inside
  `strategy.run`), then call `optimizer.apply_gradients(zip(grads,
  variables))` inside `strategy.run`: Keras sums the gradients over
  replicas there.
  """
  factory = OPTIMIZERS.get(name)
  if not weight_decay >= 0:
    raise UserError('weight_decay must be >= 0; Received: '
                    f'weight_decay={weight_decay!r}')
  optimizer = factory(learning_rate, float(weight_decay) or None)
  if weight_decay and excluded:
    optimizer.exclude_from_weight_decay(var_list=list(excluded))
  return optimizer


# ------------------------------------------------------- loss and gradients


def variable_path(variable) -> str:
  """Keras 3 variables have a `path` ('block1a/conv2d/kernel'); tf ones not."""
  return getattr(variable, 'path', None) or variable.name


def weight_decay_loss(variables: Variables,
                      weight_decay: Union[float, tf.Tensor],
                      exclude: str) -> tf.Tensor:
  """`weight_decay` times the sum of `tf.nn.l2_loss` over `variables`.

  A variable is left out when `re.match(exclude, path)` succeeds (the
  config default '.*(bias|gamma|beta).*' leaves out biases and batch-norm
  parameters); '' leaves out none. Computed in float32 whatever the
  variables' dtype. The original summed over all trainable variables.

  Under a strategy with several replicas, Keras sums gradients over
  replicas, so add `tf.nn.scale_regularization_loss(...)` of this.
  """
  left_out = {id(v) for v in decay_excluded(variables, exclude)}
  terms = [tf.nn.l2_loss(tf.cast(v, tf.float32)) for v in variables
           if id(v) not in left_out]
  total = tf.add_n(terms) if terms else tf.constant(0.0)
  return tf.cast(weight_decay, tf.float32) * total


def decay_excluded(variables: Variables, exclude: str) -> List[Any]:
  """The variables whose path `re.match(exclude, path)` matches: those
  that neither the L2 loss nor AdamW decays ('' matches none)."""
  matcher = re.compile(exclude) if exclude else None
  return [v for v in variables
          if matcher is not None and matcher.match(variable_path(v))]


def weight_decay_at(weight_decay: float, weight_decay_inc: float, step: Step,
                    total_steps: int) -> tf.Tensor:
  """The original's rising decay: `(1 + inc * step / total) * decay`."""
  fraction = tf.cast(step, tf.float32) / float(total_steps)
  return (1.0 + weight_decay_inc * fraction) * weight_decay


def clip_gradients(grads: Sequence[Optional[tf.Tensor]], clip_norm: float,
                   scale: Any = 1.0) -> List[Optional[tf.Tensor]]:
  """Clips as the original did for `train.gclip`; 0 passes `grads` through.

  Each gradient is first clipped to norm `|clip_norm|`, then all of them
  together to that global norm. None gradients stay None. `scale` is the
  factor the gradients carry (a loss scale): the norms are those of the
  gradients without it.
  """
  if not clip_norm:
    return list(grads)
  clip_norm = abs(clip_norm) * scale
  grads = [None if g is None else tf.clip_by_norm(g, clip_norm)
           for g in grads]
  return tf.clip_by_global_norm(grads, clip_norm)[0]


def check_loss_type(loss_type: str, name: str = 'loss_type') -> str:
  """`loss_type` if it is one of `LOSS_TYPES`, else a `UserError` that
  calls it `name` (e.g. the config key)."""
  if loss_type not in LOSS_TYPES:
    raise UserError(f'{name} must be one of {", ".join(LOSS_TYPES)}; '
                    f'received: {loss_type!r}')
  return loss_type


def classification_loss(labels: tf.Tensor, logits: tf.Tensor, *,
                        loss_type: str,
                        label_smoothing: float) -> tf.Tensor:
  """Per-example cross-entropy [B], in float32, for [B, C] labels.

  Labels may be one-hot, multi-hot (ImageNet-21k) or soft (mixup, cutmix).
  `loss_type` is one of `LOSS_TYPES`:

  - 'softmax': each label row is divided by its sum, then smoothed to
    `(1 - s) * y + s / C`; an all-zero row stays zero before smoothing.
  - 'sigmoid': the mean over classes of sigmoid cross-entropy with the
    labels as they are (one-hot ones too), smoothed to
    `(1 - s) * y + s / 2`, as TF1's `sigmoid_cross_entropy` and Keras's
    binary cross-entropy smooth.

  Divide the sum by the global batch size, e.g. with
  `tf.nn.compute_average_loss`.

      >>> classification_loss([[1.0, 1.0]], [[0.0, 0.0]], loss_type='softmax',
      ...                     label_smoothing=0.0).numpy().round(4)
      array([0.6931], dtype=float32)
  """
  check_loss_type(loss_type)
  labels = tf.cast(labels, tf.float32)
  logits = tf.cast(logits, tf.float32)
  if loss_type == 'sigmoid':
    labels = labels * (1.0 - label_smoothing) + 0.5 * label_smoothing
    return tf.reduce_mean(tf.nn.sigmoid_cross_entropy_with_logits(
        labels=labels, logits=logits), axis=-1)
  labels = tf.math.divide_no_nan(
      labels, tf.reduce_sum(labels, axis=-1, keepdims=True))
  num_classes = tf.cast(tf.shape(labels)[-1], tf.float32)
  labels = labels * (1.0 - label_smoothing) + label_smoothing / num_classes
  return tf.nn.softmax_cross_entropy_with_logits(labels=labels, logits=logits)
