"""Reporter: metrics.csv, TensorBoard scalars, curves.png, results.json."""
import csv
import json

import pytest
import tensorflow as tf

from efficientnetv2_tf import reporting


def test_rows_append_to_metrics_csv_with_one_header(tmp_path):
  reporter = reporting.Reporter(str(tmp_path))
  reporter.row({'epoch': 1.0, 'step': 5, 'train_loss': 2.123456789,
                'not_a_column': 'left out'})
  reporter.row({'epoch': 2.0, 'step': 10, 'eval_top1': 0.5})
  rows = list(csv.DictReader(open(tmp_path / 'metrics.csv')))
  assert list(rows[0]) == list(reporting.CSV_FIELDS)
  assert [r['step'] for r in rows] == ['5', '10']
  assert rows[0]['train_loss'] == '2.123457'  # floats kept short
  assert rows[1]['train_loss'] == '' and rows[1]['eval_top1'] == '0.5'
  assert reporter.rows() == rows


def test_a_disabled_reporter_writes_nothing(tmp_path):
  reporter = reporting.Reporter(str(tmp_path), enabled=False)
  reporter.scalars(1, {'train/loss': 1.0})
  reporter.row({'epoch': 1.0, 'step': 1})
  assert reporter.results({'step': 1}) is None
  assert reporter.plot([1.0]) is None
  assert not list(tmp_path.iterdir())


def test_scalars_are_written_for_tensorboard(tmp_path):
  reporter = reporting.Reporter(str(tmp_path))
  reporter.scalars(3, {'train/loss': 1.5, 'learning_rate': 0.1})
  (events,) = tf.io.gfile.glob(str(tmp_path / 'tensorboard' / 'events.*'))
  values = {}
  for record in tf.compat.v1.train.summary_iterator(events):
    for value in record.summary.value:
      values[value.tag] = (record.step, value.simple_value)
  assert values == {'train/loss': (3, 1.5),
                    'learning_rate': (3, pytest.approx(0.1))}


def test_plot_draws_the_curves_with_stage_boundaries(tmp_path):
  reporter = reporting.Reporter(str(tmp_path))
  for epoch in (1, 2):
    reporter.row({'epoch': float(epoch), 'step': epoch * 5,
                  'train_loss': 2.0 / epoch, 'train_top1': 0.2 * epoch,
                  'eval_loss': 2.5 / epoch, 'eval_top1': 0.1 * epoch})
  path = reporter.plot([1.0, 2.0])
  assert open(path, 'rb').read(8) == b'\x89PNG\r\n\x1a\n'


def test_results_are_written_whole(tmp_path):
  reporter = reporting.Reporter(str(tmp_path))
  path = reporter.results({'step': 10, 'eval_top1': 0.123456789,
                           'stages': ['stage 1/1']})
  assert json.load(open(path)) == {'step': 10, 'eval_top1': 0.123457,
                                   'stages': ['stage 1/1']}
  assert not (tmp_path / 'results.json.tmp').exists()


def test_epoch_progress_gives_the_mean_loss_per_step_and_the_top1():
  progress = reporting.EpochProgress(steps_per_epoch=4, global_batch=8,
                                     verbose=False)
  assert progress.metrics() == {'train_loss': 0.0, 'train_top1': 0.0}
  progress.update(done=2, steps=2, loss_sum=3.0, correct=4.0, seconds=1.0)
  progress.update(done=4, steps=2, loss_sum=1.0, correct=12.0, seconds=1.0)
  assert progress.metrics() == {'train_loss': 1.0, 'train_top1': 0.5}


def test_epoch_progress_logs_a_line_each_time_a_multiple_is_passed(capsys):
  progress = reporting.EpochProgress(steps_per_epoch=10, global_batch=4,
                                     log_every=3, first_step=10)
  for done in (2, 4, 6, 8, 10):  # steps 12 to 20, two per loop
    progress.update(done=done, steps=2, loss_sum=2.0 * done, correct=4.0,
                    seconds=0.5)
  assert capsys.readouterr().out.splitlines() == [
      'step 12: loss 2.0000, top-1 0.5000, 16.0 images/s',
      'step 16: loss 4.0000, top-1 0.5000, 16.0 images/s',
      'step 18: loss 5.0000, top-1 0.5000, 16.0 images/s']
