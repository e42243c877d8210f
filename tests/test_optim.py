"""Schedules, optimizers, loss terms, clipping, and the EMA with them; eager,
in tf.function and, in a subprocess, under MirroredStrategy over two
logical CPUs."""
import doctest
import math
import os
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientnetv2_tf import optim
from hparams.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXCLUDE = '.*(bias|gamma|beta).*'  # the config default


def lr_at(schedule, *steps):
  return [float(schedule(step)) for step in steps]


def schedule(name, **kwargs):
  """Peak 0.1, 10 steps an epoch, 100 steps in all, one warm-up epoch."""
  args = dict(peak=0.1, steps_per_epoch=10, total_steps=100, schedule=name,
              warmup_epochs=1.0)
  args.update(kwargs)
  return optim.LearningRate(**args)


def plateau_reducer(**kwargs):
  return optim.PlateauReducer(schedule('plateau', warmup_epochs=0), **kwargs)


def test_docstring_examples():
  result = doctest.testmod(optim, extraglobs={'keras': keras, 'tf': tf},
                           optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0 and result.failed == 0


# ---------------------------------------------------------------- schedules


def test_scaled_learning_rate_is_per_256_images():
  assert optim.scaled_learning_rate(0.016, 4096) == pytest.approx(0.256)
  assert optim.scaled_learning_rate(0.1, 128) == pytest.approx(0.05)


def test_warmup_rises_linearly_from_zero_to_peak():
  lr = schedule('constant', warmup_epochs=2.0)  # 20 warm-up steps
  assert lr_at(lr, 0, 5, 10, 19, 20, 21) == pytest.approx(
      [0.0, 0.025, 0.05, 0.095, 0.1, 0.1])


def test_warmup_steps_round_down_to_whole_steps():
  lr = schedule('constant', warmup_epochs=0.25, steps_per_epoch=10)
  assert lr.warmup_steps == 2
  assert lr_at(lr, 1, 2) == pytest.approx([0.05, 0.1])


def test_exponential_decays_in_stairs_counted_from_step_zero():
  lr = schedule('exponential')  # a stair every 2.4 * 10 = 24 steps
  assert lr_at(lr, 10, 23, 24, 47, 48) == pytest.approx(
      [0.1, 0.1, 0.097, 0.097, 0.1 * 0.97 ** 2])


def test_cosine_is_half_at_midpoint_and_stays_at_zero_after_the_end():
  lr = schedule('cosine')
  expected_10 = 0.05 * (1 + math.cos(math.pi * 0.1))
  assert lr_at(lr, 10, 50, 100, 150) == pytest.approx(
      [expected_10, 0.05, 0.0, 0.0], abs=1e-7)


def test_linear_falls_to_zero_at_total_steps_and_stays():
  lr = schedule('linear')
  assert lr_at(lr, 10, 55, 100, 200) == pytest.approx(
      [0.09, 0.045, 0.0, 0.0], abs=1e-7)


def test_constant_holds_the_peak_after_warmup():
  assert lr_at(schedule('constant'), 10, 99, 10_000) == pytest.approx(
      [0.1] * 3)


def test_minimum_floors_the_decay_but_not_the_warmup():
  lr = schedule('cosine', minimum=0.02)
  assert lr_at(lr, 1, 90, 100) == pytest.approx([0.01, 0.02, 0.02])


def test_schedule_runs_in_tf_function_with_an_int64_step():
  lr = schedule('exponential')
  value = tf.function(lr)(tf.constant(24, tf.int64))
  assert value.dtype == tf.float32
  assert float(value) == pytest.approx(0.097)


def test_get_config_round_trips():
  lr = schedule('exponential', decay_epochs=3.0, decay_factor=0.5,
                minimum=0.001)
  again = optim.LearningRate.from_config(lr.get_config())
  assert again.get_config() == lr.get_config()
  assert lr_at(again, 5, 30, 60) == lr_at(lr, 5, 30, 60)


def test_optimizer_with_schedule_serializes_and_deserializes():
  optimizer = optim.build_optimizer('rmsprop', schedule('cosine'))
  again = keras.optimizers.deserialize(keras.optimizers.serialize(optimizer))
  assert isinstance(again, optim.RMSpropTF1)
  assert again.get_config()['learning_rate']['config'] == (
      schedule('cosine').get_config())
  assert (again.rho, again.momentum, again.epsilon) == (0.9, 0.9, 1e-3)


def test_unknown_schedule_is_a_user_error_listing_known_names():
  with pytest.raises(UserError) as error:
    schedule('cosin')
  message = str(error.value)
  assert "'cosin'" in message and "did you mean 'cosine'" in message
  for name in ('constant', 'exponential', 'linear', 'plateau'):
    assert name in message


def test_non_positive_steps_per_epoch_is_a_user_error():
  with pytest.raises(UserError, match='Received: steps_per_epoch=0'):
    schedule('constant', steps_per_epoch=0)


# ---------------------------------------------------------------- plateau


def test_plateau_schedule_is_peak_times_scale():
  lr = schedule('plateau', warmup_epochs=0)
  lr.plateau_scale.assign(0.25)
  assert lr_at(lr, 0, 500) == pytest.approx([0.025, 0.025])
  assert schedule('cosine').plateau_scale is None


def test_plateau_reducer_waits_for_patience_bad_evals():
  reducer = plateau_reducer(patience=2, factor=0.5)
  assert reducer.update(1.0) is False  # first: a new best
  assert reducer.update(1.0) is False  # one without improvement
  assert float(reducer.scale.numpy()) == 1.0
  assert reducer.update(1.2) is True  # the second
  assert float(reducer.scale.numpy()) == 0.5
  assert reducer.update(0.9) is False  # a new best resets the count
  assert reducer.update(0.95) is False
  assert float(reducer.scale.numpy()) == 0.5
  assert reducer.update(0.95) is True
  assert float(reducer.scale.numpy()) == 0.25


def test_plateau_reducer_lowers_the_schedule_it_was_given():
  lr = schedule('plateau', warmup_epochs=0)
  reducer = optim.PlateauReducer(lr, patience=1, factor=0.1)
  reducer.update(2.0)
  assert reducer.update(2.0) is True
  assert lr_at(lr, 7) == pytest.approx([0.01])


def test_plateau_reducer_stops_at_min_scale():
  reducer = plateau_reducer(patience=1, factor=0.5, min_scale=0.3)
  reducer.update(1.0)
  assert [reducer.update(1.0) for _ in range(3)] == [True, True, False]
  assert float(reducer.scale.numpy()) == pytest.approx(0.3)


def test_plateau_reducer_state_survives_a_checkpoint(tmp_path):
  reducer = plateau_reducer(patience=2)
  for loss in (1.0, 1.1, 1.1, 1.2):  # best 1.0, reduced once, one bad eval
    reducer.update(loss)
  path = tf.train.Checkpoint(plateau=reducer).save(str(tmp_path / 'ckpt'))
  restored = plateau_reducer(patience=2)
  tf.train.Checkpoint(plateau=restored).restore(path).assert_consumed()
  assert float(restored.best_loss.numpy()) == 1.0
  assert int(restored.bad_evals.numpy()) == 1
  assert float(restored.scale.numpy()) == 0.5
  assert restored.update(1.0) is True  # the second bad eval in a row


def test_plateau_reducer_needs_a_plateau_schedule():
  with pytest.raises(UserError, match="Received: schedule='cosine'"):
    optim.PlateauReducer(schedule('cosine'))


# --------------------------------------------------------------- optimizers


@pytest.mark.parametrize('name', optim.OPTIMIZERS.names())
def test_each_optimizer_takes_a_step_that_lowers_a_quadratic(name):
  w = tf.Variable([3.0, -4.0])
  weight_decay = 0.01 if name == 'adamw' else 0.0
  optimizer = optim.build_optimizer(name, 0.01, weight_decay=weight_decay)

  def loss():
    return tf.reduce_sum(w ** 2)

  before = float(loss())
  with tf.GradientTape() as tape:
    value = loss()
  optimizer.apply_gradients(zip(tape.gradient(value, [w]), [w]))
  assert float(loss()) < before
  assert int(optimizer.iterations.numpy()) == 1


def test_optimizer_steps_inside_tf_function():
  w = tf.Variable([3.0, -4.0])
  optimizer = optim.build_optimizer('momentum', schedule('constant'))

  @tf.function
  def step():
    with tf.GradientTape() as tape:
      loss = tf.reduce_sum(w ** 2)
    optimizer.apply_gradients(zip(tape.gradient(loss, [w]), [w]))

  for _ in range(12):
    step()
  assert float(tf.reduce_sum(w ** 2)) < 25.0


def test_rmsprop_is_the_originals_first_step():
  optimizer = optim.build_optimizer('rmsprop', 0.1)
  assert (optimizer.rho, optimizer.momentum, optimizer.epsilon) == (
      0.9, 0.9, 1e-3)
  w = tf.Variable([3.0, -4.0])
  grad = tf.constant([0.5, 2.0])
  optimizer.apply_gradients([(grad, w)])
  # TF1's accumulator starts at 1: ms = 0.9 + 0.1 g^2, step lr g/sqrt(ms+eps)
  ms = 0.9 + 0.1 * grad.numpy() ** 2
  expected = np.array([3.0, -4.0]) - 0.1 * grad.numpy() / np.sqrt(ms + 1e-3)
  np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)


def test_unknown_optimizer_is_a_user_error_naming_the_value():
  with pytest.raises(UserError) as error:
    optim.build_optimizer('rmsprob', 0.1)
  message = str(error.value)
  assert "'rmsprob'" in message and "did you mean 'rmsprop'" in message
  assert 'adamw' in message and 'momentum' in message


def test_adamw_decays_kernels_but_not_excluded_biases():
  layer = keras.layers.Dense(2, bias_initializer='ones')
  layer.build((None, 3))
  kernel, bias = layer.kernel.numpy(), layer.bias.numpy()
  optimizer = optim.build_optimizer(
      'adamw', 0.1, weight_decay=0.5,
      excluded=optim.decay_excluded(layer.trainable_variables, EXCLUDE))
  zeros = [tf.zeros_like(v) for v in layer.trainable_variables]
  optimizer.apply_gradients(zip(zeros, layer.trainable_variables))
  # Zero gradients move Adam nowhere; only the decay lr * wd * w remains.
  np.testing.assert_allclose(layer.kernel.numpy(), kernel * (1 - 0.05),
                             rtol=1e-6)
  np.testing.assert_allclose(layer.bias.numpy(), bias)


def test_adamw_and_the_l2_loss_leave_out_the_same_variables_by_path():
  # A pattern on the path: Keras's own name matching would see only
  # 'kernel' and 'bias', and leave out nothing.
  inputs = keras.Input((3,))
  dense = lambda units, name: keras.layers.Dense(
      units, name=name, bias_initializer='ones')
  model = keras.Model(inputs, dense(2, 'head')(dense(4, 'stem')(inputs)))
  before = [v.numpy() for v in model.trainable_variables]
  excluded = optim.decay_excluded(model.trainable_variables, 'stem/.*')
  assert [v.path for v in excluded] == ['stem/kernel', 'stem/bias']
  optimizer = optim.build_optimizer('adamw', 0.1, weight_decay=0.5,
                                    excluded=excluded)
  optimizer.apply_gradients([(tf.zeros_like(v), v)
                             for v in model.trainable_variables])
  decayed = [v.path for v, old in zip(model.trainable_variables, before)
             if not np.array_equal(v.numpy(), old)]
  assert decayed == ['head/kernel', 'head/bias']
  head = model.get_layer('head')
  expected = sum(0.5 * np.sum(np.square(v.numpy())) for v in head.weights)
  np.testing.assert_allclose(
      optim.weight_decay_loss(model.trainable_variables, 1.0, 'stem/.*'),
      expected, rtol=1e-6)


# --------------------------------------------------------- weight decay


def test_weight_decay_loss_excludes_bias_gamma_beta_by_path():
  model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4),
                            keras.layers.BatchNormalization(),
                            keras.layers.Dense(2)])
  paths = [v.path for v in model.trainable_variables]
  assert any('gamma' in p for p in paths) and any('bias' in p for p in paths)
  kernels = [v.numpy() for v in model.trainable_variables
             if v.path.endswith('kernel')]
  expected = 1e-3 * sum(0.5 * np.sum(k.astype(np.float64) ** 2)
                        for k in kernels)
  loss = optim.weight_decay_loss(model.trainable_variables, 1e-3, EXCLUDE)
  assert float(loss) == pytest.approx(expected, rel=1e-5)


def test_weight_decay_loss_matches_plain_tf_variables_by_name():
  kept = tf.Variable([1.0, 2.0], name='dense/kernel')
  dropped = tf.Variable([5.0], name='dense/bias')
  loss = optim.weight_decay_loss([kept, dropped], 0.1, EXCLUDE)
  assert float(loss) == pytest.approx(0.1 * 0.5 * 5.0)
  everything = optim.weight_decay_loss([kept, dropped], 0.1, '')
  assert float(everything) == pytest.approx(0.1 * 0.5 * 30.0)


def test_weight_decay_loss_is_float32_for_bfloat16_variables():
  w = tf.Variable(tf.constant([3.0, 4.0], tf.bfloat16), name='kernel')
  loss = optim.weight_decay_loss([w], 0.5, EXCLUDE)
  assert loss.dtype == tf.float32
  assert float(loss) == pytest.approx(0.5 * 12.5)


def test_weight_decay_loss_of_no_variables_is_zero():
  assert float(optim.weight_decay_loss([], 0.1, EXCLUDE)) == 0.0


def test_weight_decay_at_rises_with_the_step():
  assert float(optim.weight_decay_at(1e-5, 0.0, 50, 100)) == pytest.approx(
      1e-5)
  values = [float(optim.weight_decay_at(1e-5, 2.0, step, 100))
            for step in (0, 50, 100)]
  assert values == pytest.approx([1e-5, 2e-5, 3e-5])


# ---------------------------------------------------------------- clipping


def test_clip_gradients_clips_each_then_the_global_norm():
  grads = [tf.constant([3.0, 4.0]), tf.constant([0.0, 0.5])]
  clipped = optim.clip_gradients(grads, 1.0)
  # [3, 4] first shrinks to norm 1; then both share norm sqrt(1.25).
  scale = 1.0 / math.sqrt(1.25)
  np.testing.assert_allclose(clipped[0].numpy(), [0.6 * scale, 0.8 * scale],
                             rtol=1e-6)
  np.testing.assert_allclose(clipped[1].numpy(), [0.0, 0.5 * scale],
                             rtol=1e-6)


def test_clip_gradients_uses_the_absolute_value_of_a_negative_norm():
  clipped = optim.clip_gradients([tf.constant([3.0, 4.0])], -2.0)
  np.testing.assert_allclose(clipped[0].numpy(), [1.2, 1.6], rtol=1e-6)


def test_clip_gradients_keeps_none_and_passes_through_at_zero():
  grad = tf.constant([30.0, 40.0])
  clipped = optim.clip_gradients([grad, None], 1.0)
  assert clipped[1] is None
  assert float(tf.norm(clipped[0])) == pytest.approx(1.0)
  unclipped = optim.clip_gradients([grad, None], 0.0)
  assert unclipped[0] is grad and unclipped[1] is None


# ------------------------------------------------------------------- loss


def softmax_xent(target, logits):
  logits = np.asarray(logits, np.float64)
  log_probs = logits - np.log(np.sum(np.exp(logits), -1, keepdims=True))
  return -np.sum(np.asarray(target) * log_probs, -1)


def sigmoid_xent(target, logits):
  logits = np.asarray(logits, np.float64)
  log_p, log_not_p = -np.logaddexp(0, -logits), -np.logaddexp(0, logits)
  return -np.mean(target * log_p + (1 - np.asarray(target)) * log_not_p, -1)


LOGITS = [[1.0, 2.0, 3.0], [0.5, -1.0, 0.0]]
ONE_HOT = [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]


def loss_of(labels, logits=LOGITS, **kwargs):
  kwargs.setdefault('loss_type', 'softmax')
  kwargs.setdefault('label_smoothing', 0.0)
  return optim.classification_loss(tf.constant(labels), tf.constant(logits),
                                   **kwargs)


def test_softmax_loss_is_per_example_cross_entropy():
  loss = loss_of(ONE_HOT)
  assert loss.shape == (2,)
  np.testing.assert_allclose(loss.numpy(), softmax_xent(ONE_HOT, LOGITS),
                             rtol=1e-6)


def test_label_smoothing_moves_mass_evenly_to_all_classes():
  loss = loss_of(ONE_HOT, label_smoothing=0.3)
  target = np.array(ONE_HOT) * 0.7 + 0.1
  np.testing.assert_allclose(loss.numpy(), softmax_xent(target, LOGITS),
                             rtol=1e-6)


def test_soft_labels_give_the_mixed_loss():
  mixed = [[0.7, 0.0, 0.3], [0.0, 0.4, 0.6]]
  np.testing.assert_allclose(loss_of(mixed).numpy(),
                             softmax_xent(mixed, LOGITS), rtol=1e-6)


MULTI_HOT = [[1.0, 1.0, 0.0], [1.0, 1.0, 1.0]]


def test_softmax_divides_multi_hot_labels_by_their_sum_then_smooths():
  loss = loss_of(MULTI_HOT, label_smoothing=0.3)
  # By hand: [1/2, 1/2, 0] * 0.7 + 0.3 / 3 and [1/3, 1/3, 1/3] (unchanged).
  target = [[0.45, 0.45, 0.1], [1 / 3, 1 / 3, 1 / 3]]
  np.testing.assert_allclose(loss.numpy(), softmax_xent(target, LOGITS),
                             rtol=1e-6)
  smoothed_first = np.array(MULTI_HOT) * 0.7 + 0.1
  smoothed_first /= smoothed_first.sum(-1, keepdims=True)
  assert not np.allclose(loss.numpy(), softmax_xent(smoothed_first, LOGITS),
                         rtol=1e-3)


@pytest.mark.parametrize('smoothing', [0.0, 0.3])
def test_softmax_leaves_an_all_zero_label_row_zero_before_smoothing(
    smoothing):
  loss = loss_of([[0.0, 0.0, 0.0]], [LOGITS[0]], label_smoothing=smoothing)
  np.testing.assert_allclose(
      loss.numpy(), softmax_xent([[smoothing / 3] * 3], [LOGITS[0]]),
      rtol=1e-6, atol=1e-7)


def test_sigmoid_is_mean_binary_cross_entropy_of_the_labels_as_they_are():
  loss = loss_of(MULTI_HOT, loss_type='sigmoid')
  # By hand for [1, 1, 0] and logits [1, 2, 3]:
  # (log(1 + e^-1) + log(1 + e^-2) + log(1 + e^3)) / 3.
  by_hand = (math.log1p(math.exp(-1)) + math.log1p(math.exp(-2)) +
             math.log1p(math.exp(3))) / 3
  assert loss.numpy()[0] == pytest.approx(by_hand, rel=1e-6)
  np.testing.assert_allclose(loss.numpy(), sigmoid_xent(MULTI_HOT, LOGITS),
                             rtol=1e-6)


def test_sigmoid_smooths_towards_one_half_as_tf1_and_keras_do():
  labels = [[1.0, 0.0, 1.0], [0.0, 0.0, 1.0]]
  loss = loss_of(labels, loss_type='sigmoid', label_smoothing=0.2)
  target = np.array(labels) * 0.8 + 0.1
  np.testing.assert_allclose(loss.numpy(), sigmoid_xent(target, LOGITS),
                             rtol=1e-6)
  keras_loss = keras.losses.binary_crossentropy(
      tf.constant(labels), tf.constant(LOGITS), from_logits=True,
      label_smoothing=0.2)
  np.testing.assert_allclose(loss.numpy(), keras_loss.numpy(), rtol=1e-5)


def test_sigmoid_takes_one_hot_labels_unchanged():
  # As the original's loss_type=sigmoid: one-hot labels are binary targets.
  loss = loss_of(ONE_HOT, loss_type='sigmoid', label_smoothing=0.1)
  target = np.array(ONE_HOT) * 0.9 + 0.05
  np.testing.assert_allclose(loss.numpy(), sigmoid_xent(target, LOGITS),
                             rtol=1e-6)


@pytest.mark.parametrize('loss_type', optim.LOSS_TYPES)
def test_bfloat16_logits_give_float32_losses(loss_type):
  logits = tf.cast(tf.constant(LOGITS), tf.bfloat16)
  loss = optim.classification_loss(tf.constant(ONE_HOT), logits,
                                   loss_type=loss_type, label_smoothing=0.1)
  assert loss.dtype == tf.float32
  np.testing.assert_allclose(
      loss.numpy(), loss_of(ONE_HOT, loss_type=loss_type,
                            label_smoothing=0.1).numpy(), rtol=1e-6)


def test_unknown_loss_type_names_the_value_and_the_allowed_ones():
  with pytest.raises(UserError) as err:
    loss_of(ONE_HOT, loss_type='focal')
  assert str(err.value) == ("loss_type must be one of softmax, sigmoid; "
                            "received: 'focal'")
  with pytest.raises(UserError, match=r"^train\.loss_type must be one of "
                     r"softmax, sigmoid; received: 'Softmax'$"):
    optim.check_loss_type('Softmax', 'train.loss_type')
  assert optim.check_loss_type('sigmoid') == 'sigmoid'


# ------------------------------------------------------- MirroredStrategy

MIRRORED_SCRIPT = r'''
import os
import sys
os.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'
import numpy as np
import tensorflow as tf
cpu = tf.config.list_physical_devices('CPU')[0]
tf.config.set_logical_device_configuration(
    cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from efficientnetv2_tf import ema as ema_lib
from efficientnetv2_tf import optim

strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
assert strategy.num_replicas_in_sync == 2


def build():
  w = keras.Variable([1.0, 2.0], name='w')
  bn = keras.layers.BatchNormalization(momentum=0.5)
  bn.build((None, 1))
  lr = optim.LearningRate(0.1, steps_per_epoch=1, total_steps=10,
                          schedule='plateau', warmup_epochs=0)
  return w, bn, lr, optim.PlateauReducer(lr, patience=1)


with strategy.scope():
  w, bn, lr, reducer = build()
  optimizer = optim.build_optimizer('sgd', lr)
  optimizer.build([w])
  ema = ema_lib.maybe_ema([w, bn.moving_mean], decay=0.9)
  assert isinstance(ema.averages[0], tf.distribute.DistributedValues)

# Replica r sees example weight r + 1 and input r + 1, so replicas differ.
inputs = strategy.experimental_distribute_values_from_function(
    lambda ctx: tf.constant([ctx.replica_id_in_sync_group + 1.0]))


@tf.function
def train_step(inputs):
  def replica_step(x):
    with tf.GradientTape() as tape:
      bn(x[:, None], training=True)
      per_example = x * tf.reduce_sum(w * w)
      loss = tf.nn.compute_average_loss(per_example, global_batch_size=2)
      loss += tf.nn.scale_regularization_loss(
          optim.weight_decay_loss([w], 0.0, '.*(bias|gamma|beta).*'))
    grads = optim.clip_gradients(tape.gradient(loss, [w]), 100.0)
    optimizer.apply_gradients(zip(grads, [w]))
    ema.update(optimizer.iterations)
  strategy.run(replica_step, args=(inputs,))


def replicas(variable):
  if isinstance(variable, keras.Variable):
    variable = variable.value
  return [v.numpy() for v in variable.values]


def check(variable, expected):
  copies = replicas(variable)
  assert len(copies) == 2
  for copy in copies:
    np.testing.assert_allclose(copy, expected, rtol=1e-6)


# The gradient summed over replicas is (1 + 2) w / 2 * 2 = 3 w.
w0 = np.array([1.0, 2.0])
train_step(inputs)
w1 = w0 * (1 - 0.1 * 3)
check(w, w1)
d1 = 2 / 11
avg1 = d1 * w0 + (1 - d1) * w1
check(ema.averages[0], avg1)
# Keras 3 leaves each replica its own batch-norm statistics (0.5 and 1.0
# here); the average follows the first replica's, which is what
# cross-replica reads and checkpoints see.
assert [float(m[0]) for m in replicas(bn.moving_mean)] == [0.5, 1.0]
check(ema.averages[1], (1 - d1) * 0.5)

# The reducer, outside strategy.run, halves the rate the next step uses.
assert reducer.update(1.0) is False and reducer.update(1.0) is True
train_step(inputs)
w2 = w1 * (1 - 0.05 * 3)
check(w, w2)
d2 = 3 / 12
avg2 = d2 * avg1 + (1 - d2) * w2
check(ema.averages[0], avg2)

with ema.applied():
  check(w, avg2)
check(w, w2)
swap = tf.function(ema.swap)
swap()
check(w, avg2)
swap()
check(w, w2)

path = tf.train.Checkpoint(ema=ema, plateau=reducer).save(
    os.path.join(sys.argv[1], 'ckpt'))
with strategy.scope():
  w_new, bn_new, lr_new, reducer_new = build()
  ema_new = ema_lib.maybe_ema([w_new, bn_new.moving_mean], decay=0.9)
tf.train.Checkpoint(ema=ema_new, plateau=reducer_new).restore(
    path).assert_consumed()
check(ema_new.averages[0], avg2)
assert float(lr_new(0)) == np.float32(0.05)
print('mirrored ok')
'''


def test_training_step_under_mirrored_strategy_on_two_cpus(tmp_path):
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([sys.executable, '-c', MIRRORED_SCRIPT,
                           str(tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  assert 'mirrored ok' in result.stdout


# ------------------------------------------- fused kernels against Keras


def _keras_twin(name, learning_rate):
  """Keras's own optimizer with the settings `build_optimizer(name)` uses;
  for 'rmsprop' its accumulator is set to TF1's starting value of 1 once
  built."""
  if name == 'rmsprop':
    return keras.optimizers.RMSprop(learning_rate, rho=0.9, momentum=0.9,
                                    epsilon=1e-3)
  if name == 'adamw':
    return keras.optimizers.AdamW(learning_rate, epsilon=1e-8,
                                  weight_decay=0.01)
  return keras.optimizers.Adam(learning_rate, epsilon=1e-8)


def _run_steps(optimizer, variables, grads_per_step, traced):
  optimizer.build(variables)
  if isinstance(optimizer, keras.optimizers.RMSprop):
    for velocity in optimizer._velocities:  # pylint: disable=protected-access
      velocity.assign(tf.ones_like(velocity))

  def step(grads):
    optimizer.apply_gradients(zip(grads, variables))

  step = tf.function(step) if traced else step
  for grads in grads_per_step:
    step(grads)
  return [v.numpy() for v in variables]


@pytest.mark.parametrize('traced', [False, True], ids=['eager', 'traced'])
@pytest.mark.parametrize('name', ['rmsprop', 'adam', 'adamw'])
def test_fused_optimizers_follow_keras_own_over_several_steps(name, traced):
  rng = np.random.default_rng(0)
  shapes = [(3, 3, 4, 8), (8,), (5,)]
  start = [rng.normal(size=s).astype(np.float32) for s in shapes]
  grads = [[tf.constant(rng.normal(size=s).astype(np.float32))
            for s in shapes] for _ in range(5)]
  kwargs = {'weight_decay': 0.01} if name == 'adamw' else {}
  ours = optim.build_optimizer(name, 0.05, **kwargs)
  twin = type(_keras_twin(name, 0.05))
  assert type(ours).update_step is not twin.update_step  # the fused one
  got = _run_steps(ours, [tf.Variable(s) for s in start], grads, traced)
  want = _run_steps(_keras_twin(name, 0.05), [tf.Variable(s) for s in start],
                    grads, traced)
  for g, w, s in zip(got, want, start):
    assert not np.allclose(g, s)  # the steps moved the weights
    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize('name, kernel', [('adam', 'ResourceApplyAdam'),
                                          ('rmsprop', 'ResourceApplyRMSProp')])
def test_a_traced_update_makes_its_shared_scalars_once(name, kernel):
  variables = [tf.Variable(tf.ones([4])) for _ in range(5)]
  grads = [tf.ones([4]) for _ in variables]
  optimizer = optim.build_optimizer(name, 0.05)
  optimizer.build(variables)

  @tf.function
  def step():
    optimizer.apply_gradients(zip(grads, variables))

  graph = step.get_concrete_function().graph
  kernels = [op for op in graph.get_operations() if op.type == kernel]
  assert len(kernels) == len(variables)
  # Inputs: the variable and its two slots, the scalars, the gradient.
  # Every kernel reads the same scalar tensors (learning rate, constants
  # and, for Adam, the step powers), made once for the whole update.
  scalars = {tuple(t.name for t in op.inputs[3:-1]) for op in kernels}
  assert len(scalars) == 1
  assert len(next(iter(scalars))) == (6 if name == 'adam' else 4)


def test_sparse_gradients_take_keras_own_adam_update():
  start = np.arange(12, dtype=np.float32).reshape(4, 3)
  sparse = tf.IndexedSlices(tf.ones([2, 3]), tf.constant([0, 2]),
                            tf.constant([4, 3]))
  results = []
  for optimizer in (optim.build_optimizer('adam', 0.1),
                    keras.optimizers.Adam(0.1, epsilon=1e-8)):
    w = tf.Variable(start)
    for _ in range(3):
      optimizer.apply_gradients([(sparse, w)])
    results.append(w.numpy())
  assert not np.allclose(results[0], start)
  np.testing.assert_allclose(results[0], results[1], rtol=1e-6)


def test_fused_optimizers_pass_the_doctest():
  from efficientnetv2_tf import optimizers  # pylint: disable=g-import-not-at-top
  assert doctest.testmod(optimizers).failed == 0


FUSED_MIRRORED_SCRIPT = r'''
import numpy as np
import tensorflow as tf
tf.config.set_logical_device_configuration(
    tf.config.list_physical_devices('CPU')[0],
    [tf.config.LogicalDeviceConfiguration()] * 2)
import keras
from efficientnetv2_tf import optim

strategy = tf.distribute.MirroredStrategy(['/cpu:0', '/cpu:1'])
results = {}
for name in ('rmsprop', 'adam'):
  with strategy.scope():
    w = tf.Variable([1.0, -2.0, 3.0])
    optimizer = optim.build_optimizer(name, 0.1)
    optimizer.build([w])

  @tf.function
  def train_step():
    def replica_step():
      replica = tf.distribute.get_replica_context().replica_id_in_sync_group
      # Each replica's gradient differs; Keras sums them across replicas.
      grad = tf.constant([1.0, 2.0, -1.0]) * tf.cast(replica + 1, tf.float32)
      optimizer.apply_gradients([(grad, w)])
    strategy.run(replica_step)

  for _ in range(3):
    train_step()
  copies = [v.numpy() for v in strategy.experimental_local_results(w)]
  np.testing.assert_array_equal(copies[0], copies[1])
  single = tf.Variable([1.0, -2.0, 3.0])
  alone = optim.build_optimizer(name, 0.1)
  for _ in range(3):
    alone.apply_gradients([(tf.constant([3.0, 6.0, -3.0]), single)])
  np.testing.assert_allclose(copies[0], single.numpy(), rtol=1e-6)
print('fused mirrored ok')
'''


def test_fused_optimizers_under_mirrored_strategy_update_every_copy_alike():
  env = dict(os.environ, PYTHONPATH=ROOT, TF_CPP_MIN_LOG_LEVEL='2')
  result = subprocess.run([sys.executable, '-c', FUSED_MIRRORED_SCRIPT],
                          cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
  assert result.returncode == 0, result.stderr[-4000:]
  assert 'fused mirrored ok' in result.stdout
