"""What a run leaves in its model_dir besides checkpoints.

- `metrics.csv`: one row per epoch (and per evaluation), appended as the run
  goes, so that a killed run keeps its history;
- `tensorboard/`: the same scalars, plus learning rate, image size, dropout
  and RandAugment magnitude per step;
- `curves.png`: train and eval loss and top-1 per epoch, with the
  progressive stage boundaries marked;
- `results.json`: the final metrics, step, wall time and training speed.

`EpochProgress` sums an epoch's training loss and top-1 for metrics.csv
and shows them on the console as they go.
"""
import csv
import json
import os
from typing import Any, Dict, List, Mapping, Optional, Sequence

import keras
import tensorflow as tf

from efficientnetv2_tf.run_dir import RunDir

CSV_FIELDS = ('epoch', 'step', 'stage', 'image_size', 'learning_rate',
              'train_loss', 'train_top1', 'eval_loss', 'eval_top1',
              'eval_top5', 'images_per_second', 'wall_seconds',
              'eval_image_size')
# What results.json says of the training itself.
TRAINING_RESULTS = ('train_loss', 'train_top1', 'wall_seconds',
                    'train_images_per_second')


class Reporter:
  """Writes metrics.csv, TensorBoard scalars and the curves of one run.

  Only the chief writes (`enabled=False` on other workers).
  """

  def __init__(self, model_dir: str, enabled: bool = True):
    self.run = RunDir(model_dir)
    self.enabled = enabled
    self.csv_path = self.run.metrics
    self._writer = None
    if enabled:
      self._writer = tf.summary.create_file_writer(self.run.tensorboard)

  def scalars(self, step: int, values: Mapping[str, float]) -> None:
    if not self._writer:
      return
    # Written as classic `simple_value` summaries, which TensorBoard shows as
    # scalars, so that writing them needs no tensorboard package.
    summary = tf.compat.v1.Summary(value=[
        tf.compat.v1.Summary.Value(tag=name, simple_value=float(value))
        for name, value in values.items()])
    with self._writer.as_default():
      tf.summary.experimental.write_raw_pb(summary.SerializeToString(),
                                           step=step)
    self._writer.flush()

  def row(self, values: Mapping[str, Any]) -> None:
    """Appends one row to metrics.csv."""
    if not self.enabled:
      return
    new = not os.path.exists(self.csv_path)
    with open(self.csv_path, 'a', newline='') as f:
      writer = csv.DictWriter(f, CSV_FIELDS, extrasaction='ignore')
      if new:
        writer.writeheader()
      writer.writerow({k: _short(v) for k, v in values.items()})

  def rows(self) -> List[Dict[str, str]]:
    if not os.path.exists(self.csv_path):
      return []
    with open(self.csv_path, newline='') as f:
      return list(csv.DictReader(f))

  def plot(self, stage_epochs: Sequence[float]) -> Optional[str]:
    """Draws curves.png from metrics.csv; returns its path."""
    rows = self.rows()
    if not self.enabled or not rows:
      return None
    import matplotlib  # pylint: disable=g-import-not-at-top
    matplotlib.use('Agg')
    from matplotlib import pyplot  # pylint: disable=g-import-not-at-top
    figure, (loss_axes, top1_axes) = pyplot.subplots(1, 2, figsize=(10, 4))
    for axes, metric in ((loss_axes, 'loss'), (top1_axes, 'top1')):
      for split in ('train', 'eval'):
        points = [(float(r['epoch']), float(r[f'{split}_{metric}']))
                  for r in rows if r.get(f'{split}_{metric}')]
        if points:
          axes.plot(*zip(*points), marker='.', label=split)
      for boundary in stage_epochs[:-1]:
        axes.axvline(boundary, color='grey', linestyle=':', linewidth=1)
      axes.set_xlabel('epoch')
      axes.set_title(metric)
      axes.legend()
    # Early eval losses of a model trained from scratch can be 100 times
    # the later ones; on a log scale the later ones stay readable.
    loss_axes.set_yscale('log')
    figure.suptitle('dotted lines: progressive stage boundaries'
                    if len(stage_epochs) > 1 else '')
    # Fixed margins: `tight_layout` measured every label and doubled the
    # time of a redraw, which training waits for after each epoch.
    figure.subplots_adjust(left=0.07, right=0.98, bottom=0.12, top=0.86,
                           wspace=0.2)
    path = self.run.curves
    figure.savefig(path, dpi=80)
    pyplot.close(figure)
    return path

  def previous_results(self) -> Dict[str, Any]:
    """What results.json holds, or {} when there is none to read."""
    try:
      with open(self.run.results) as f:
        previous = json.load(f)
    except (OSError, ValueError):
      return {}
    return previous if isinstance(previous, dict) else {}

  def results(self, values: Mapping[str, Any]) -> Optional[str]:
    """Writes results.json atomically; returns its path."""
    if not self.enabled:
      return None
    path = self.run.results
    with open(path + '.tmp', 'w') as f:
      json.dump({k: _short(v) for k, v in values.items()}, f, indent=2)
    os.replace(path + '.tmp', path)
    return path


class EpochProgress:
  """One epoch's training loss and top-1 so far, on a progress bar, or
  with `log_every` > 0 in a line every `log_every` steps (counted from the
  run's first, `first_step` being the epoch's)."""

  def __init__(self, steps_per_epoch: int, global_batch: int,
               verbose: bool = True, log_every: int = 0,
               first_step: int = 0):
    self._bar = keras.utils.Progbar(
        steps_per_epoch, stateful_metrics=['loss', 'top1', 'img/s'],
        verbose=1 if verbose and not log_every else 0)
    self._log_every = log_every if verbose else 0
    self._first_step = first_step
    self._global_batch = global_batch
    self._loss_sum = self._correct = self._images = 0.0
    self._done, self._steps = 0, steps_per_epoch

  def break_line(self) -> None:
    """Ends the line of a bar that is part way, so that what is printed
    next, such as a new stage inside the epoch, starts a line of its own."""
    if self._bar.verbose and 0 < self._done < self._steps:
      print(flush=True)

  def update(self, done: int, steps: int, loss_sum: float, correct: float,
             seconds: float) -> None:
    """Adds `steps` steps' summed loss and correct predictions, `done`
    steps of the epoch having run."""
    images = steps * self._global_batch
    self._loss_sum += loss_sum
    self._correct += correct
    self._images += images
    values = [('loss', self._loss_sum / (self._images / self._global_batch)),
              ('top1', self._correct / self._images),
              ('img/s', images / seconds)]
    self._bar.update(done, values)
    self._done = done
    step = self._first_step + done
    if self._log_every and step // self._log_every > (
        step - steps) // self._log_every:
      (_, loss), (_, top1), (_, rate) = values
      print(f'step {step}: loss {loss:.4f}, top-1 {top1:.4f}, '
            f'{rate:.1f} images/s', flush=True)

  def metrics(self) -> Dict[str, float]:
    """The mean loss per step and the top-1 so far."""
    return {
        'train_loss': self._loss_sum / max(self._images / self._global_batch,
                                           1),
        'train_top1': self._correct / max(self._images, 1)}


def _short(value: Any) -> Any:
  if isinstance(value, float):
    return round(value, 6)
  return value
