"""Top-k predictions for image files, from a run directory or an export.

    rows = predict('runs/b0-digits', ['cat.jpg', 'dog.png'], top_k=3)

Each row holds the file and either its `top_k` list of (label, id,
probability) or the `error` that kept it from being read: a corrupt file
is reported and the others still go through.
"""
import os
import re
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

from efficientnetv2_tf import export
from efficientnetv2_tf import runtimes
from efficientnetv2_tf.preprocessing import model_file_pixels
from efficientnetv2_tf.run_dir import RunDir
from hparams.errors import UserError
from hparams.weights import InputContract


Classify = Callable[[tf.Tensor], Dict[str, Any]]


def _read_labels(directory: str) -> List[str]:
  with open(os.path.join(directory, 'labels.txt')) as f:
    return f.read().splitlines()


def _file_classifier(path: str, runtime: Optional[str]
                     ) -> Tuple[Classify, List[str]]:
  """A .onnx or .tflite file of an export, run by `runtime`, fed as the
  export's contract (export.json beside it) says."""
  directory = os.path.dirname(path)
  description = runtimes.export_description(directory)
  if description is None:
    raise UserError(f'{path!r} has no export.json beside it, which says '
                    'how to crop, resize and normalise its images; use a '
                    'model file from an export directory')
  contract = InputContract.from_description(
      description.get('preprocessing', {}))
  model = runtimes.load(path, runtime)

  def classify(images: tf.Tensor) -> Dict[str, Any]:
    pixels = model_file_pixels(images[0], contract)
    return {'probabilities': model.run(pixels.numpy()[None])}
  return classify, _read_labels(directory)


def classifier(source: Union[str, export.Source],
               runtime: Optional[str] = None) -> Tuple[Classify, List[str]]:
  """A function from encoded images to probabilities, and the class names:
  of a .onnx or .tflite file, an export directory (its SavedModel, or its
  model file of `runtime`), a run directory's latest checkpoint, or a
  loaded `export.Source` (such as published weights, served with their own
  input contract). `runtime` None: TensorFlow, or what runs the file."""
  runtimes.check_runtime(runtime)
  if isinstance(source, str) and os.path.isfile(source):
    return _file_classifier(source, runtime)
  if runtime in runtimes.FILE_NAMES:
    if isinstance(source, str) and os.path.isdir(
        os.path.join(source, 'saved_model')):
      return _file_classifier(
          os.path.join(source, runtimes.FILE_NAMES[runtime]), runtime)
    raise UserError(f'runtime {runtime!r} runs exported model files; pass '
                    'an export directory or a model file, not '
                    f'{source if isinstance(source, str) else "a model"!r}')
  if isinstance(source, export.Source):
    module = export.ServingModule(source)
    return lambda images: module.serving_bytes(images), source.labels
  if os.path.isdir(os.path.join(source, 'saved_model')):
    signature = tf.saved_model.load(os.path.join(
        source, 'saved_model')).signatures['serving_bytes']
    return signature, _read_labels(source)
  if RunDir(source).exists():
    run = export.load_run(source)
    module = export.ServingModule(run)  # the closure keeps it alive
    return lambda images: module.serving_bytes(images), run.labels
  raise UserError(f'{source!r} is neither an export (no saved_model/) nor a '
                  'run directory (no config.yaml)')


def predict(source: Union[str, export.Source], files: Sequence[str],
            top_k: int = 5,
            runtime: Optional[str] = None) -> List[Dict[str, Any]]:
  """Classifies every image file of `files` with the model at `source`
  (see `classifier`)."""
  if top_k < 1:
    raise UserError(f'top_k must be >= 1; received: {top_k}')
  classify, labels = classifier(source, runtime)
  rows = []
  for path in files:
    try:
      with open(path, 'rb') as f:
        probabilities = classify(tf.constant([f.read()]))['probabilities']
    except (OSError, tf.errors.InvalidArgumentError) as e:
      rows.append({'file': path, 'error': f'unreadable image: {reason(e)}'})
      continue
    probabilities = np.asarray(probabilities)[0]
    if len(labels) != len(probabilities):
      raise UserError(f'the model gives {len(probabilities)} classes and its '
                      f'labels.txt names {len(labels)}')
    best = np.argsort(-probabilities, kind='stable')[:top_k]
    rows.append({'file': path, 'top_k': [
        {'label': labels[i], 'id': int(i),
         'probability': round(float(probabilities[i]), 6)} for i in best]})
  return rows


def reason(error: Exception) -> str:
  """The line of a TensorFlow error that says what went wrong, without
  the frames of where the op was traced or TensorFlow's node names."""
  noise = ('Graph execution error', 'Detected at node', '<stack', '[[',
           'File "')
  lines = [line.strip() for line in str(error).splitlines()
           if line.strip() and not line.strip().startswith(noise)]
  if not lines:
    return type(error).__name__
  line = re.sub(r'^\{\{function_node [^}]*\}\}\s*', '', lines[0])
  return re.sub(r'\s*(\[\[.*|\[Op:.*)$', '', line) or type(error).__name__
