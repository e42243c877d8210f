"""Top-k predictions for image files, from a run directory or an export.

    rows = predict('runs/b0-digits', ['cat.jpg', 'dog.png'], top_k=3)

Each row holds the file and either its `top_k` list of (label, id,
probability) or the `error` that kept it from being read: a corrupt file
is reported and the others still go through.
"""
import os
from typing import Any, Callable, Dict, List, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from efficientnetv2_tf import export
from efficientnetv2_tf.run_dir import RunDir
from hparams.errors import UserError


def classifier(source: Union[str, export.Source]
               ) -> Tuple[Callable[[tf.Tensor], Dict[str, tf.Tensor]],
                          List[str]]:
  """`serving_bytes` and the class names of an export directory, of a run
  directory's latest checkpoint, or of a loaded `export.Source` (such as
  published weights, served with their own input contract)."""
  if isinstance(source, export.Source):
    module = export.ServingModule(source)
    return lambda images: module.serving_bytes(images), source.labels
  saved_model = os.path.join(source, 'saved_model')
  if os.path.isdir(saved_model):
    with open(os.path.join(source, 'labels.txt')) as f:
      labels = f.read().splitlines()
    return tf.saved_model.load(saved_model).signatures['serving_bytes'], labels
  if RunDir(source).exists():
    run = export.load_run(source)
    module = export.ServingModule(run)  # the closure keeps it alive
    return lambda images: module.serving_bytes(images), run.labels
  raise UserError(f'{source!r} is neither an export (no saved_model/) nor a '
                  'run directory (no config.yaml)')


def predict(source: Union[str, export.Source], files: Sequence[str],
            top_k: int = 5) -> List[Dict[str, Any]]:
  """Classifies every image file of `files` with the model at `source`."""
  if top_k < 1:
    raise UserError(f'top_k must be >= 1; received: {top_k}')
  classify, labels = classifier(source)
  rows = []
  for path in files:
    try:
      with open(path, 'rb') as f:
        probabilities = classify(tf.constant([f.read()]))['probabilities']
    except (OSError, tf.errors.InvalidArgumentError) as e:
      rows.append({'file': path, 'error': f'unreadable image: {_reason(e)}'})
      continue
    probabilities = probabilities.numpy()[0]
    best = np.argsort(-probabilities, kind='stable')[:top_k]
    rows.append({'file': path, 'top_k': [
        {'label': labels[i], 'id': int(i),
         'probability': round(float(probabilities[i]), 6)} for i in best]})
  return rows


def _reason(error: Exception) -> str:
  """The line of a TensorFlow error that says what went wrong."""
  noise = ('Graph execution error', 'Detected at node', '<stack', '[[')
  lines = [line.strip() for line in str(error).splitlines()
           if line.strip() and not line.strip().startswith(noise)]
  return lines[0] if lines else type(error).__name__
