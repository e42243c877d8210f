"""train_step: the traced loop trains, accumulates and adds its L2 loss."""
import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

import efficientnetv2_tf
from efficientnetv2_tf import ema as ema_lib
from efficientnetv2_tf import progressive
from efficientnetv2_tf import train_step
import hparams
from tests.conftest import TINY

BATCH = 8
SETTINGS = train_step.StepSettings(
    global_batch=BATCH, total_steps=10, grad_accum_steps=1,
    loss_type='softmax', label_smoothing=0.1, l2_weight_decay=0.0,
    weight_decay_inc=0.0, weight_decay_exclude='', gclip=0.0,
    jit_compile=False)


def batches(strategy, count):
  """`count` batches of random 32 px images and one-hot labels, as a
  distributed iterator."""
  images = np.random.default_rng(0).uniform(
      -1, 1, (count * BATCH, 32, 32, 3)).astype('float32')
  labels = tf.one_hot(np.arange(count * BATCH) % 10, 10)
  dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(BATCH)
  return iter(strategy.experimental_distribute_dataset(dataset))


def built(learning_rate=0.01, ema_decay=0.0):
  strategy = tf.distribute.get_strategy()
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)
  optimizer = keras.optimizers.SGD(learning_rate)
  optimizer.build(model.trainable_variables)
  ema = ema_lib.maybe_ema(ema_lib.ema_variables(model), ema_decay)
  return strategy, model, optimizer, ema


def test_the_loop_runs_its_steps_and_sums_loss_and_correct():
  strategy, model, optimizer, ema = built(ema_decay=0.9)
  before = [v.numpy() for v in model.trainable_variables]
  loop = train_step.build_train_loop(model, optimizer, ema, strategy,
                                     SETTINGS)
  loss, correct = loop(batches(strategy, 3), tf.constant(3))
  assert int(optimizer.iterations.numpy()) == 3
  assert np.isfinite(float(loss)) and float(loss) > 0
  assert 0 <= float(correct) <= 3 * BATCH
  assert any(not np.allclose(a, b.numpy())
             for a, b in zip(before, model.trainable_variables))
  with ema.applied():  # the average has moved, but less than the weights
    assert any(not np.allclose(a, b.numpy())
               for a, b in zip(before, model.trainable_variables))


def test_accumulation_takes_one_optimizer_step_over_its_micro_batches():
  strategy, model, optimizer, ema = built()
  settings = dataclasses.replace(SETTINGS, grad_accum_steps=2,
                                 global_batch=2 * BATCH)
  loop = train_step.build_train_loop(model, optimizer, ema, strategy,
                                     settings)
  loop(batches(strategy, 4), tf.constant(2))
  assert int(optimizer.iterations.numpy()) == 2


def test_an_l2_weight_decay_adds_to_the_loss():
  strategy, model, optimizer, ema = built(learning_rate=0.0)
  plain = train_step.build_train_loop(model, optimizer, ema, strategy,
                                      SETTINGS)
  decayed = train_step.build_train_loop(
      model, optimizer, ema, strategy,
      dataclasses.replace(SETTINGS, l2_weight_decay=0.1))
  without, _ = plain(batches(strategy, 1), tf.constant(1))
  with_l2, _ = decayed(batches(strategy, 1), tf.constant(1))
  assert float(with_l2) > float(without) + 1e-3


def test_gradient_clipping_holds_under_loss_scaling():
  # Loss scaling multiplies the gradients by 2**15 until the optimizer
  # divides it out: the clip must act on the gradients without it. The
  # oracle is the same step without loss scaling.
  # A small convolutional model will do: the clip acts on any gradients.
  settings = dataclasses.replace(SETTINGS, gclip=0.05)
  updates = []
  for scaled in (False, True):
    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    model = keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Conv2D(8, 3),
        keras.layers.GlobalAveragePooling2D(), keras.layers.Dense(10)])
    optimizer = keras.optimizers.SGD(1.0)
    optimizer.build(model.trainable_variables)
    ema = ema_lib.maybe_ema(ema_lib.ema_variables(model), 0.0)
    if scaled:
      optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
      optimizer.build(model.trainable_variables)
    before = [v.numpy() for v in model.trainable_variables]
    loop = train_step.build_train_loop(model, optimizer, ema, strategy,
                                       settings)
    loop(batches(strategy, 1), tf.constant(1))
    updates.append([v.numpy() - b for v, b in
                    zip(model.trainable_variables, before)])
  norm = np.sqrt(sum(np.sum(u ** 2) for u in updates[0]))
  assert norm == pytest.approx(0.05, rel=1e-3)  # the clip was reached
  for plain, scaled in zip(*updates):
    np.testing.assert_allclose(scaled, plain, rtol=1e-4, atol=1e-7)


def test_a_frozen_backbone_leaves_only_the_classifier_to_train():
  _, model, _, _ = built()
  train_step.freeze_backbone(model, True)
  assert {v.path for v in model.trainable_variables} == {
      'predictions/kernel', 'predictions/bias'}
  train_step.freeze_backbone(model, False)
  assert len(model.trainable_variables) > 2


def test_settings_come_from_the_specs_and_the_plan():
  specs = hparams.get_specs('efficientnetv2-b0', 'digits',
                            'train.batch_size=32,train.grad_accum_steps=2,'
                            'train.gclip=1.5,train.loss_type=sigmoid')
  plan = progressive.make_plan(specs, 320, 1)
  settings = train_step.StepSettings.from_specs(specs, plan, 1e-5)
  assert (settings.global_batch, settings.total_steps,
          settings.grad_accum_steps, settings.l2_weight_decay,
          settings.gclip, settings.loss_type) == (
              32, plan.total_steps, 2, 1e-5, 1.5, 'sigmoid')
