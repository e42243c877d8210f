"""Evaluator: metrics on the eval split, with the EMA weights."""
import logging

import numpy as np
import pytest
import tensorflow as tf

import datasets
import hparams
from efficientnetv2_tf import distribute
from efficientnetv2_tf import ema as ema_lib
from efficientnetv2_tf import evaluator as evaluator_lib
from efficientnetv2_tf import reporting
from efficientnetv2_tf.model import EfficientNet

TINY_RUN = ('model.width_coefficient=0.25,model.depth_coefficient=0.2,'
            'data.per_class=4,eval.isize=32,eval.batch_size=120')


@pytest.fixture(scope='module')
def parts():
  """A tiny model whose raw weights have moved away from their EMA."""
  cfg = hparams.get_config('efficientnetv2-b0', 'digits', TINY_RUN)
  dataset = datasets.bind(cfg)
  specs = hparams.build_specs(cfg)
  model = EfficientNet.from_spec(specs.model)
  model(tf.zeros((1, 32, 32, 3)), training=False)
  ema = ema_lib.maybe_ema(ema_lib.ema_variables(model), 0.9)
  for variable in model.trainable_variables:
    variable.assign_add(tf.fill(variable.shape, 0.05))
  return specs, dataset, model, ema


def test_evaluation_uses_the_ema_and_leaves_the_raw_weights(parts,
                                                            tmp_path):
  specs, dataset, model, ema = parts
  strategy = distribute.get_strategy('cpu')
  reporter = reporting.Reporter(str(tmp_path))
  evaluator = evaluator_lib.Evaluator(specs, dataset, model, ema, strategy,
                                      reporter)
  raw = [v.numpy() for v in model.trainable_variables]
  metrics = evaluator.evaluate(step=3)
  for before, after in zip(raw, model.trainable_variables):
    np.testing.assert_array_equal(before, after.numpy())
  by_hand = evaluator_lib.Evaluator(specs, dataset, model, None, strategy)
  with ema.applied():
    averaged = by_hand.evaluate(step=3)
  unaveraged = by_hand.evaluate(step=3)
  assert metrics['eval_loss'] == pytest.approx(averaged['eval_loss'],
                                               rel=1e-5)
  assert metrics['eval_loss'] != pytest.approx(unaveraged['eval_loss'],
                                               rel=1e-5)
  assert (metrics['step'], metrics['eval_images']) == (3, 359)
  assert 0 <= metrics['eval_top1'] <= metrics['eval_top5'] <= 1
  assert evaluator.seconds > 0
  assert tf.io.gfile.listdir(str(tmp_path / 'tensorboard'))


def test_images_that_fail_to_decode_are_counted_in_a_warning(
    parts, monkeypatch, caplog):
  # The listing says one image more than decoding yields, as when a file
  # is damaged where no listing check looks.
  specs, dataset, model, _ = parts
  evaluator = evaluator_lib.Evaluator(specs, dataset, model, None,
                                      distribute.get_strategy('cpu'))
  listed = dataset.split_size(specs.data.eval_split)
  monkeypatch.setattr(dataset, 'split_size', lambda split: listed + 1)
  with caplog.at_level(logging.WARNING):
    assert evaluator.evaluate(step=0)['eval_images'] == listed
  assert (f"1 of the {listed + 1} images of split 'eval' could not be "
          'decoded') in caplog.text
