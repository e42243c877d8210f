"""The exponential moving average: the original's warm-up, swapping in
and back, checkpoints and BatchNorm statistics."""
import keras
import numpy as np
import pytest
import tensorflow as tf

from efficientnetv2_tf import ema as ema_lib
from hparams.errors import UserError


def test_ema_follows_the_originals_num_updates_warmup():
  w = tf.Variable([1.0, -1.0])
  ema = ema_lib.ExponentialMovingAverage([w], decay=0.99)
  expected = np.array([1.0, -1.0])
  for step, value in ((1, [2.0, 0.0]), (2, [4.0, 2.0]), (3, [0.0, 8.0])):
    w.assign(value)
    ema.update(step)
    decay = min(0.99, (1 + step) / (10 + step))
    expected = decay * expected + (1 - decay) * np.array(value)
    np.testing.assert_allclose(ema.averages[0].numpy(), expected, rtol=1e-6)
  np.testing.assert_allclose(w.numpy(), [0.0, 8.0])  # untouched by update


def test_ema_uses_the_decay_itself_once_warmed_up():
  ema = ema_lib.ExponentialMovingAverage([tf.Variable(0.0)], decay=0.9)
  assert float(ema.decay_at(1000)) == pytest.approx(0.9)
  assert float(ema.decay_at(0)) == pytest.approx(0.1)


def test_ema_updates_inside_tf_function():
  w = tf.Variable(0.0)
  ema = ema_lib.ExponentialMovingAverage([w], decay=0.5)
  step = tf.Variable(100, dtype=tf.int64)

  @tf.function
  def train_step():
    w.assign_add(1.0)
    step.assign_add(1)
    ema.update(step)

  train_step()
  train_step()
  assert float(ema.averages[0].numpy()) == pytest.approx(0.5 * 0.5 + 0.5 * 2)


def test_a_traced_update_makes_its_rate_once():
  variables = [tf.Variable(tf.fill([3], float(i))) for i in range(4)]
  ema = ema_lib.ExponentialMovingAverage(variables, 0.9)
  graph = tf.function(ema.update).get_concrete_function(
      tf.constant(5, tf.int64)).graph
  scalings = [op for op in graph.get_operations() if op.type == 'Mul']
  assert len(scalings) == len(variables)
  # Each average moves by the one rate, 1 - decay, made for the update.
  assert len({op.inputs[0].name for op in scalings}) == 1


def test_ema_averages_batch_norm_moving_statistics():
  model = keras.Sequential([keras.Input((2,)),
                            keras.layers.BatchNormalization(momentum=0.5)])
  bn = model.layers[0]
  ema = ema_lib.ExponentialMovingAverage(model.weights, decay=0.9)
  model(tf.constant([[2.0, 4.0], [4.0, 8.0]]), training=True)
  np.testing.assert_allclose(bn.moving_mean.numpy(), [1.5, 3.0])
  ema.update(1000)
  index = [v.path for v in model.weights].index(bn.moving_mean.path)
  np.testing.assert_allclose(ema.averages[index].numpy(), [0.15, 0.3],
                             rtol=1e-6)


def test_ema_applied_swaps_in_and_back():
  w = tf.Variable([1.0, 2.0])
  ema = ema_lib.ExponentialMovingAverage([w], decay=0.5)
  w.assign([3.0, 4.0])
  with ema.applied():
    np.testing.assert_allclose(w.numpy(), [1.0, 2.0])
  np.testing.assert_allclose(w.numpy(), [3.0, 4.0])
  np.testing.assert_allclose(ema.averages[0].numpy(), [1.0, 2.0])


def test_ema_applied_swaps_back_on_error():
  w = tf.Variable([1.0, 2.0])
  ema = ema_lib.ExponentialMovingAverage([w], decay=0.5)
  w.assign([3.0, 4.0])
  with pytest.raises(RuntimeError, match='eval failed'):
    with ema.applied():
      raise RuntimeError('eval failed')
  np.testing.assert_allclose(w.numpy(), [3.0, 4.0])


def test_ema_swap_twice_restores_also_in_tf_function():
  w = tf.Variable([1.0, 2.0])
  ema = ema_lib.ExponentialMovingAverage([w], decay=0.5)
  w.assign([3.0, 4.0])
  swap = tf.function(ema.swap)
  swap()
  np.testing.assert_allclose(w.numpy(), [1.0, 2.0])
  np.testing.assert_allclose(ema.averages[0].numpy(), [3.0, 4.0])
  swap()
  np.testing.assert_allclose(w.numpy(), [3.0, 4.0])


def test_ema_copy_to_writes_the_averages_elsewhere():
  w = tf.Variable([1.0, 2.0])
  ema = ema_lib.ExponentialMovingAverage([w], decay=0.5)
  w.assign([3.0, 4.0])
  target = tf.Variable([0.0, 0.0])
  ema.copy_to([target])
  np.testing.assert_allclose(target.numpy(), [1.0, 2.0])
  np.testing.assert_allclose(w.numpy(), [3.0, 4.0])
  with pytest.raises(ValueError, match='1 averages but 2 variables'):
    ema.copy_to([target, target])


def test_ema_checkpoint_holds_only_the_averages_and_round_trips(tmp_path):
  w = tf.Variable([1.0, 2.0])
  ema = ema_lib.ExponentialMovingAverage([w], decay=0.5)
  w.assign([3.0, 4.0])
  ema.update(1000)
  path = tf.train.Checkpoint(ema=ema).save(str(tmp_path / 'ckpt'))
  keys = [name for name, _ in tf.train.list_variables(path)
          if name.startswith('ema/')]
  assert keys == ['ema/averages/0/.ATTRIBUTES/VARIABLE_VALUE']
  restored = ema_lib.ExponentialMovingAverage([tf.Variable([0.0, 0.0])], 0.5)
  tf.train.Checkpoint(ema=restored).restore(path).assert_consumed()
  np.testing.assert_allclose(restored.averages[0].numpy(), [2.0, 3.0])


def test_maybe_ema_is_none_without_decay_and_bad_decays_are_user_errors():
  w = tf.Variable(1.0)
  assert ema_lib.maybe_ema([w], 0.0) is None
  assert ema_lib.maybe_ema([w], -1.0) is None
  assert isinstance(ema_lib.maybe_ema([w], 0.9999),
                    ema_lib.ExponentialMovingAverage)
  with pytest.raises(UserError, match='Received: decay=1.0'):
    ema_lib.maybe_ema([w], 1.0)


def test_share_before_multiplies_the_decays_of_the_updates_between():
  ema = ema_lib.ExponentialMovingAverage([tf.Variable(0.0)], decay=0.99)
  # Updates 1 and 2 are in the warm-up: 2/11 and 3/12.
  assert ema.share_before(0, 2) == pytest.approx(2 / 11 * 3 / 12)
  assert ema.share_before(1000, 1040) == pytest.approx(0.99 ** 40)
  assert ema.share_before(5, 5) == 1.0


def test_share_before_is_what_is_left_of_the_old_value():
  w = tf.Variable(1.0)
  ema = ema_lib.ExponentialMovingAverage([w], decay=0.9)
  for step in range(1, 31):
    ema.update(step)
  w.assign(0.0)  # from here the variable adds nothing to the average
  for step in range(31, 61):
    ema.update(step)
  assert float(ema.averages[0]) == pytest.approx(ema.share_before(30, 60))
