"""Exports a model for serving, for TF Hub, for TFLite and for ONNX.

`export(source, export_dir)` writes, from a `Source` (a trained run's EMA
weights, see `load_run`, or pretrained weights, see `load_pretrained`):

- `saved_model/`: for TF Serving and `saved_model_cli`. Signatures:
  `serving_default` takes float32 images `[batch, height, width, 3]` in
  [0, 1] at any size; `serving_bytes` takes a `[batch]` string tensor of
  encoded JPEG/PNG/BMP/GIF images. Both apply the evaluation preprocessing
  of training (centre crop where the recipe has one, resize to the eval
  size, normalise) and return `probabilities`, `top_k_ids`,
  `top_k_probabilities` and `top_k_names`.
- `hub_classification/` and `hub_feature_vector/`: reusable SavedModels in
  the TF Hub image-module convention: float32 `[batch, height, width, 3]`
  in [0, 1], no resizing inside, returning logits or pooled features.
  `__call__(images, training)` is traced for both values of `training`, and
  the objects carry `variables`, `trainable_variables` and
  `regularization_losses` (empty: add weight decay in your optimizer), so
  `hub.KerasLayer(path, trainable=True)` fine-tunes them. A
  `serving_default` signature (inference) serves `keras.layers.TFSMLayer`.
- `model.tflite`: float32 `[1, size, size, 3]` in [0, 1] at the eval size
  (crop and resize on the device) -> probabilities; optionally with
  dynamic-range, float16 or full-integer (int8, see `quantize`)
  quantisation.
- `model.onnx`: the same with a dynamic batch (see `onnx_export`).
- `labels.txt` (one class name per line) and `export.json` (model, eval
  size, preprocessing, source checkpoint and step, ONNX precision and
  opset, files).

Both model files hold `source.probabilities_function`, the one deployed
computation.

The export is written to a temporary sibling directory and moved into
place at the end, so an interrupted export leaves nothing half-written.
"""
import datetime
import json
import os
import shutil
from typing import Any, Dict, Iterable, Optional

import keras
import numpy as np
import tensorflow as tf

from efficientnetv2_tf import checkpoints
from efficientnetv2_tf import loading
from efficientnetv2_tf import onnx_export
from efficientnetv2_tf import quantize
from efficientnetv2_tf import runtimes
from efficientnetv2_tf.loading import weights_run
from efficientnetv2_tf.model import EfficientNet
from efficientnetv2_tf.preprocessing import Augmentation
from efficientnetv2_tf.preprocessing import Normalize
from efficientnetv2_tf.preprocessing import eval_image
from efficientnetv2_tf.run_dir import RunDir
# What a deployable model is, re-exported: callers build and read these
# from here.
from efficientnetv2_tf.source import default_labels
from efficientnetv2_tf.source import imagenet_labels
from efficientnetv2_tf.source import readable_labels
from efficientnetv2_tf.source import Source
from efficientnetv2_tf.source import tflite_converter
from hparams.errors import UserError

QUANTIZATIONS = ('none', 'dynamic', 'float16', 'int8')
TOP_K = 5


def load_run(model_dir: str, checkpoint: Optional[str] = None) -> Source:
  """The model of a training run, with the EMA weights of its latest (or the
  named) checkpoint, the evaluation contract of its recipe at its eval size,
  and its class names."""
  run = RunDir(model_dir)
  specs = run.load_specs()
  checkpoint = run.checkpoint(checkpoint)
  model = EfficientNet.from_spec(specs.model)
  loading.load_weights(model, checkpoint, specs.model.name, prefer_ema=True)
  labels = run.labels()
  labels = (readable_labels(labels) if labels is not None
            else default_labels(model.num_classes))
  contract = Augmentation.from_specs(specs).contract(
      specs.data.eval_image_size)
  return Source(model, specs.model.name, contract, labels, checkpoint,
                checkpoints.step_of(checkpoint))


def load_pretrained(model_name: str, weights: str,
                    model_config: Optional[str] = None,
                    normalization: Optional[str] = None) -> Source:
  """Published weights ('imagenet', ...) with their own input contract, or a
  checkpoint path, with the contract `loading.weights_contract` gives
  it (`normalization` changes that of an unpublished one); `model_config`
  as for `get_model`.

  A checkpoint of a training run, or the run's directory or checkpoints/,
  is that run's model, contract and labels: `load_run`, whose config.yaml
  decides over `model_name`, `model_config` and `normalization`.
  """
  run = weights_run(weights)
  if run:
    return load_run(*run)
  # Not frozen, as a run's model is not: the hub modules fine-tune it.
  model = loading.get_model(model_name, model_config, weights=weights)
  contract, name = loading.weights_contract(model.name, weights, normalization)
  return Source(model, model.name, contract,
                default_labels(model.num_classes), weights, weights=name)


def _check_images(images: tf.Tensor) -> tf.Tensor:
  """Fails with a readable message unless `images` is [batch, h, w, 3]."""
  message = 'images must be a float32 tensor [batch, height, width, 3]'
  rank = tf.debugging.assert_equal(tf.rank(images), 4, message=message)
  with tf.control_dependencies([rank]):
    channels = tf.debugging.assert_equal(tf.shape(images)[-1], 3,
                                         message=message)
  with tf.control_dependencies([channels]):
    images = tf.identity(images)
  return tf.ensure_shape(images, [None, None, None, 3])


class ServingModule(tf.Module):
  """The serving SavedModel: the model, its preprocessing and labels."""

  def __init__(self, source: Source):
    super().__init__()
    self.model = source.model
    self.labels = tf.constant(source.labels)
    self._contract = source.contract
    self._top_k = min(TOP_K, len(source.labels))

  def _eval_image(self, image: tf.Tensor) -> tf.Tensor:
    return eval_image(image, self._contract)

  def _outputs(self, inputs: tf.Tensor) -> Dict[str, tf.Tensor]:
    probabilities = tf.nn.softmax(self.model(inputs, training=False))
    top = tf.math.top_k(probabilities, self._top_k)
    return {'probabilities': probabilities, 'top_k_ids': top.indices,
            'top_k_probabilities': top.values,
            'top_k_names': tf.gather(self.labels, top.indices)}

  @tf.function(input_signature=[tf.TensorSpec(None, tf.float32)])
  def serving_default(self, images):
    images = _check_images(images)
    # Training saw 8-bit pixels; quantising here gives the same inputs.
    pixels = tf.cast(tf.round(tf.clip_by_value(images, 0.0, 1.0) * 255.0),
                     tf.uint8)
    inputs = tf.map_fn(self._eval_image, pixels,
                       fn_output_signature=tf.float32)
    return self._outputs(inputs)

  @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
  def serving_bytes(self, images):
    inputs = tf.map_fn(self._eval_image, images,
                       fn_output_signature=tf.float32)
    return self._outputs(inputs)


class HubModule(tf.Module):
  """A TF Hub reusable SavedModel around a model: [0, 1] images in."""

  # The reusable SavedModel convention reads these as saved attributes.
  # tf.Module computes them on access, which a SavedModel does not keep, so
  # plain attributes, set in __init__, replace its properties.
  variables = None
  trainable_variables = None

  def __init__(self, model: keras.Model, normalization: str):
    super().__init__()
    self.model = model
    self.normalize = Normalize(normalization)
    self.variables = list(model.variables)
    self.trainable_variables = list(model.trainable_variables)
    self.regularization_losses = []

  @tf.function
  def __call__(self, images, training=False):
    return self.model(self.normalize(images * 255.0), training=training)

  @tf.function(input_signature=[
      tf.TensorSpec([None, None, None, 3], tf.float32)])
  def serve(self, images):
    return {'outputs': self(images, training=False)}

  def save(self, path: str) -> None:
    spec = tf.TensorSpec([None, None, None, 3], tf.float32)
    for training in (False, True):
      self.__call__.get_concrete_function(spec, training)
    tf.saved_model.save(self, path, signatures={'serving_default':
                                                self.serve})


def feature_model(model: EfficientNet) -> keras.Model:
  """The model up to its pooled features, sharing its weights."""
  return keras.Model(model.input, model.backbone_layers()[-1].output,
                     name=f'{model.name}_features')


def tflite_model(source: Source, quantization: str = 'none',
                 calibration_images: Optional[Iterable[np.ndarray]] = None
                 ) -> bytes:
  """The model as TFLite: [1, size, size, 3] in [0, 1] -> probabilities.

  'int8' is full-integer quantisation calibrated on `calibration_images`
  (see `quantize`); 'dynamic' and 'float16' quantise the weights only.
  """
  check_quantization(quantization)
  if quantization == 'int8':
    return quantize.int8_tflite(
        source, [] if calibration_images is None else calibration_images)
  converter = tflite_converter(source)
  if quantization != 'none':
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if quantization == 'float16':
    converter.target_spec.supported_types = [tf.float16]
  return converter.convert()


def _directory_size(path: str) -> int:
  return sum(os.path.getsize(os.path.join(root, name))
             for root, _, names in os.walk(path) for name in names)


def check_quantization(quantization: str) -> None:
  if quantization not in QUANTIZATIONS:
    raise UserError(f'unknown TFLite quantization {quantization!r}; '
                    f'allowed: {", ".join(QUANTIZATIONS)}')


def check_options(export_dir: str, overwrite: bool,
                  quantization: str = 'none',
                  onnx_precision: str = 'fp32') -> None:
  """Refuses a non-empty `export_dir` (unless `overwrite`), an unknown
  quantization or ONNX precision, before any work."""
  check_quantization(quantization)
  onnx_export.check_precision(onnx_precision)
  if os.path.isdir(export_dir) and os.listdir(export_dir):
    if not overwrite:
      raise UserError(f'export_dir {export_dir!r} exists and is not empty; '
                      'pass overwrite=True to replace it, or choose a new '
                      'one')
    # Replacing it deletes it: a run's folder, say, must not go.
    if not os.path.isfile(os.path.join(export_dir, 'export.json')):
      raise UserError(f'export_dir {export_dir!r} is not an earlier export '
                      '(it has no export.json), so overwrite will not '
                      'delete it; choose a new or empty directory')
  if os.path.exists(export_dir) and not os.path.isdir(export_dir):
    raise UserError(f'export_dir {export_dir!r} is a file, not a directory')
  ancestor = os.path.dirname(os.path.abspath(export_dir))
  while not os.path.exists(ancestor):
    ancestor = os.path.dirname(ancestor)
  if not os.path.isdir(ancestor):
    raise UserError(f'export_dir {export_dir!r} cannot be made: {ancestor!r} '
                    'is a file, not a directory')


def _write_models(source: Source, staging: str, tflite: bool,
                  quantization: str, onnx_precision: Optional[str],
                  calibration_images: Optional[Iterable[np.ndarray]]
                  ) -> None:
  serving = ServingModule(source)
  tf.saved_model.save(serving, os.path.join(staging, 'saved_model'),
                      signatures={'serving_default': serving.serving_default,
                                  'serving_bytes': serving.serving_bytes})
  HubModule(source.model, source.normalization).save(
      os.path.join(staging, 'hub_classification'))
  HubModule(feature_model(source.model), source.normalization).save(
      os.path.join(staging, 'hub_feature_vector'))
  if tflite:
    with open(os.path.join(staging, runtimes.FILE_NAMES['litert']),
              'wb') as f:
      f.write(tflite_model(source, quantization, calibration_images))
  if onnx_precision:
    with open(os.path.join(staging, runtimes.FILE_NAMES['onnxruntime']),
              'wb') as f:
      f.write(onnx_export.onnx_model(source, onnx_precision))
  with open(os.path.join(staging, 'labels.txt'), 'w') as f:
    f.write('\n'.join(source.labels) + '\n')


def _description(source: Source, staging: str, quantization: Optional[str],
                 onnx_precision: Optional[str]) -> Dict[str, Any]:
  """export.json: what was exported, from what, and how to feed it."""
  files = {}
  for name in sorted(os.listdir(staging)):
    path = os.path.join(staging, name)
    files[name] = (_directory_size(path) if os.path.isdir(path)
                   else os.path.getsize(path))
  return {
      'model_name': source.model_name,
      'num_classes': source.model.num_classes,
      'image_size': source.image_size,
      'weights': source.weights,
      'preprocessing': {
          **source.contract.describe(),
          'input': 'float32 RGB in [0, 1] (serving_default, hub, tflite, '
                   'onnx) or encoded images (serving_bytes)'},
      'checkpoint': source.checkpoint,
      'step': source.step,
      'tflite_quantization': quantization,
      'onnx_precision': onnx_precision,
      'onnx_opset': onnx_export.OPSET if onnx_precision else None,
      'tensorflow': tf.__version__,
      'created': datetime.datetime.now(datetime.timezone.utc).isoformat(
          timespec='seconds'),
      'files': files,
  }


def export(source: Source, export_dir: str, overwrite: bool = False,
           tflite: bool = True, quantization: str = 'none',
           onnx_precision: Optional[str] = 'fp32',
           calibration_images: Optional[Iterable[np.ndarray]] = None
           ) -> Dict[str, Any]:
  """Writes every export of `source` into `export_dir`; returns export.json.

  `export_dir` must be new or empty unless `overwrite`. `onnx_precision`
  None leaves model.onnx out; `quantization='int8'` needs
  `calibration_images` (see `quantize.int8_tflite`).
  """
  check_options(export_dir, overwrite, quantization,
                onnx_precision or 'fp32')
  if tflite and quantization == 'int8' and calibration_images is None:
    raise UserError("quantization='int8' needs calibration_images: images "
                    'like those the model will see, to calibrate it')
  staging = export_dir.rstrip(os.sep) + f'.tmp-{os.getpid()}'
  shutil.rmtree(staging, ignore_errors=True)
  os.makedirs(staging)
  try:
    _write_models(source, staging, tflite, quantization, onnx_precision,
                  calibration_images)
    info = _description(source, staging, quantization if tflite else None,
                        onnx_precision)
    with open(os.path.join(staging, 'export.json'), 'w') as f:
      json.dump(info, f, indent=2)
  except BaseException:
    shutil.rmtree(staging, ignore_errors=True)
    raise
  if os.path.isdir(export_dir):
    shutil.rmtree(export_dir)
  os.replace(staging, export_dir)
  return info
