"""The traced, distributed training step, built from ready objects.

    settings = StepSettings.from_specs(specs, plan, l2_weight_decay=1e-5)
    loop = build_train_loop(model, optimizer, ema, strategy, settings)
    loss_sum, correct = loop(iterator, tf.constant(steps))

One call of the loop runs `steps` optimizer steps inside one `tf.function`,
each over `grad_accum_steps` micro-batches per replica, and returns the sum
of the steps' losses and of their correct top-1 predictions. The loop reads
which of the model's layers are trainable, and its top dropout's rate
unless that follows a variable (`blocks.TopDropout`), when it is
traced: set them (`freeze_backbone`) before the first call.
"""
import dataclasses
from typing import Any, Callable, List, Optional, Sequence

import keras
import tensorflow as tf

from efficientnetv2_tf import ema as ema_lib
from efficientnetv2_tf import optim
from efficientnetv2_tf.model import EfficientNet
from efficientnetv2_tf.progressive import RunPlan
from hparams.specs import Specs


@dataclasses.dataclass(frozen=True)
class StepSettings:
  """What a training step computes besides the model's forward pass."""
  global_batch: int
  total_steps: int  # for the weight-decay schedule
  grad_accum_steps: int
  loss_type: str
  label_smoothing: float
  l2_weight_decay: float  # of an L2 loss term; 0: none
  weight_decay_inc: float
  weight_decay_exclude: str  # a regex of variable paths; '': none
  gclip: float
  jit_compile: bool

  @classmethod
  def from_specs(cls, specs: Specs, plan: RunPlan,
                 l2_weight_decay: float) -> 'StepSettings':
    """The settings of a run of `plan`; `l2_weight_decay` is 0 for an
    optimizer that decays weights itself."""
    optim_spec = specs.optim
    return cls(
        global_batch=plan.global_batch, total_steps=plan.total_steps,
        grad_accum_steps=optim_spec.grad_accum_steps,
        loss_type=optim_spec.loss_type,
        label_smoothing=optim_spec.label_smoothing,
        l2_weight_decay=l2_weight_decay,
        weight_decay_inc=optim_spec.weight_decay_inc,
        weight_decay_exclude=optim_spec.weight_decay_exclude,
        gclip=optim_spec.grad_clip_norm,
        jit_compile=specs.runtime.jit_compile)


def freeze_backbone(model: EfficientNet, frozen: bool) -> None:
  """Freezes everything but the classifier; a frozen BatchNorm layer runs in
  inference mode in Keras 3."""
  for layer in model.backbone_layers():
    layer.trainable = not frozen


def _gradients_fn(model: keras.Model, optimizer: keras.optimizers.Optimizer,
                  variables: Sequence[tf.Variable], settings: StepSettings,
                  replicas: int) -> Callable[..., Any]:
  """One micro-batch's gradients, loss and number of correct predictions."""
  micro_batch = settings.global_batch // settings.grad_accum_steps

  def gradients(images, labels, weight_decay):
    with tf.GradientTape() as tape:
      logits = model(images, training=True)
      per_example = optim.classification_loss(
          labels, logits, loss_type=settings.loss_type,
          label_smoothing=settings.label_smoothing)
      loss = tf.nn.compute_average_loss(per_example,
                                        global_batch_size=micro_batch)
      if settings.l2_weight_decay:
        loss += optim.weight_decay_loss(
            variables, weight_decay, settings.weight_decay_exclude) / replicas
      loss /= settings.grad_accum_steps
      scaled = (optimizer.scale_loss(loss)
                if hasattr(optimizer, 'scale_loss') else loss)
    correct = tf.reduce_sum(tf.cast(
        tf.argmax(logits, -1) == tf.argmax(labels, -1), tf.float32))
    return tape.gradient(scaled, variables), loss, correct

  if settings.jit_compile:
    # XLA takes the model's forward and backward pass; the input iterator,
    # the cross-replica gradient sum and the optimizer stay outside it.
    return tf.function(gradients, jit_compile=True)
  return gradients


def _skipped_together(grads: List[Optional[tf.Tensor]]
                      ) -> List[Optional[tf.Tensor]]:
  """`grads`, all NaN on every replica if any replica's are not finite.

  Keras's loss scaling checks the first replica's gradients only, as if
  they had been summed across replicas already; they are summed later,
  so an overflow on another replica would reach the weights instead of
  skipping the step and lowering the scale.
  """
  context = tf.distribute.get_replica_context()
  if context is None or context.num_replicas_in_sync == 1:
    return grads
  bad = tf.add_n([tf.reduce_sum(tf.cast(~tf.math.is_finite(g), tf.float32))
                  for g in grads if g is not None])
  bad = context.all_reduce(tf.distribute.ReduceOp.SUM, bad)
  poison = tf.where(bad > 0, float('nan'), 0.0)
  return [None if g is None else g + tf.cast(poison, g.dtype)
          for g in grads]


def _replica_step_fn(gradients: Callable[..., Any],
                     optimizer: keras.optimizers.Optimizer,
                     ema: Optional[ema_lib.ExponentialMovingAverage],
                     variables: Sequence[tf.Variable],
                     settings: StepSettings) -> Callable[..., Any]:
  """One optimizer step on one replica, over its micro-batches."""

  def replica_step(*batches):
    grads_sum, loss_sum, correct_sum = None, 0.0, 0.0
    weight_decay = optim.weight_decay_at(
        settings.l2_weight_decay, settings.weight_decay_inc,
        optimizer.iterations, settings.total_steps)
    for images, labels in batches:
      grads, loss, correct = gradients(images, labels, weight_decay)
      grads_sum = grads if grads_sum is None else [
          a + b for a, b in zip(grads_sum, grads)]
      loss_sum += loss
      correct_sum += correct
    scale = 1.0
    if isinstance(optimizer, keras.optimizers.LossScaleOptimizer):
      grads_sum = _skipped_together(grads_sum)
      scale = optimizer.dynamic_scale
    grads_sum = optim.clip_gradients(grads_sum, settings.gclip, scale)
    optimizer.apply_gradients(zip(grads_sum, variables))
    if ema:
      ema.update(optimizer.iterations)
    return loss_sum, correct_sum

  return replica_step


def build_train_loop(model: keras.Model,
                     optimizer: keras.optimizers.Optimizer,
                     ema: Optional[ema_lib.ExponentialMovingAverage],
                     strategy: tf.distribute.Strategy,
                     settings: StepSettings) -> Callable[..., Any]:
  """`loop(iterator, steps)`: `steps` training steps over the distributed
  `iterator`, returning the summed loss and correct predictions.

  Trains the variables that are trainable now. Built under `strategy`
  from objects created in its scope; traced once per input signature, so
  batches without a static image size (`distribute_input(...,
  any_image_size=True)`) share one trace whatever their size.
  """
  variables = list(model.trainable_variables)
  gradients = _gradients_fn(model, optimizer, variables, settings,
                            strategy.num_replicas_in_sync)
  replica_step = _replica_step_fn(gradients, optimizer, ema, variables,
                                  settings)
  accum = settings.grad_accum_steps

  @tf.function
  def loop(iterator, steps):
    loss_total = tf.constant(0.0)
    correct_total = tf.constant(0.0)
    for _ in tf.range(steps):
      batches = tuple(next(iterator) for _ in range(accum))
      loss, correct = strategy.run(replica_step, args=batches)
      loss_total += strategy.reduce('SUM', loss, axis=None)
      correct_total += strategy.reduce('SUM', correct, axis=None)
    return loss_total, correct_total

  return loop
