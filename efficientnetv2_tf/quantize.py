"""Full-integer (int8) TFLite models, and how far they agree with float.

`int8_tflite(source, calibration_images)` quantises weights and
activations to int8 after training, calibrating each activation's range on
up to `MAX_CALIBRATION_IMAGES` images. Every operator runs in int8
(`check_integer` makes sure), so the model suits integer-only accelerators;
the input and output stay float32 (`[1, size, size, 3]` in [0, 1] ->
probabilities, as `model.tflite`): the model quantises its input and
dequantises its output itself, so every caller of `model.tflite` runs it
unchanged.

The int8 softmax steps in 1/256, so probabilities under about 0.4% read as
0: top-1 survives where the model is sure, but a model unsure among many
classes (such as untrained 1,000-class weights) returns all zeros, and
top-5 of 1,000 classes keeps only the classes above that step.

`top1_agreement` measures what quantisation costs on given images:

    quantized = runtimes.load('model_int8.tflite')
    print(top1_agreement(quantized, runtimes.load(source), images, labels))
"""
import dataclasses
import itertools
from typing import Iterable, List, Optional

import flatbuffers
import numpy as np
import tensorflow as tf
# TFLiteConverter's own calibrator, quantiser and model schema: its public
# API calibrates on the range over all images only.
from tensorflow.lite.python import convert as lite_convert
from tensorflow.lite.python import schema_py_generated as schema
from tensorflow.lite.python.optimize import calibrator as lite_calibrator

from efficientnetv2_tf import runtimes
from efficientnetv2_tf.source import Source
from efficientnetv2_tf.source import tflite_converter
from hparams.errors import UserError

MAX_CALIBRATION_IMAGES = 200
RANGE_GROUP = 5  # images whose activation ranges are taken together


def _calibration(images: Iterable[np.ndarray], image_size: int,
                 max_images: int) -> List[np.ndarray]:
  """Up to `max_images` images as float32 [1, size, size, 3], checked."""
  batches = []
  for image in itertools.islice(images, max_images):
    image = runtimes.check_float(image, 'calibration images').astype(
        np.float32)
    if image.shape != (image_size, image_size, 3):
      raise UserError(f'calibration images must be [{image_size}, '
                      f'{image_size}, 3] in [0, 1]; received shape '
                      f'{image.shape}')
    batches.append(image[None])
  if not batches:
    raise UserError('calibration_images is empty; int8 quantisation needs '
                    f'up to {max_images} images like those the model will '
                    'see, to calibrate its activation ranges')
  return batches


def int8_tflite(source: Source, calibration_images: Iterable[np.ndarray],
                max_images: int = MAX_CALIBRATION_IMAGES) -> bytes:
  """The model as full-integer TFLite, with float32 input and output.

  `calibration_images` yields float32 images [size, size, 3] in [0, 1] at
  the eval size (an array [n, size, size, 3] will do); the first
  `max_images` are used.

  Each activation's range is the mean of its ranges on groups of
  `RANGE_GROUP` images. TFLite's converter takes the range over all images
  at once, so the most unusual image sets it and the sample decides much
  of the result; the range on one image alone is too narrow for others.
  On the quick start's digits run (359 eval images, float top-1 0.9749),
  calibrated on three samples of 200 training images: int8 top-1 0.9610,
  0.9721, 0.9638 with ranges over all, 0.9749, 0.9749, 0.9694 over single
  images, 0.9721, 0.9749, 0.9749 over groups of 5 (agreement with float
  0.997, 1.0, 1.0); on the sample the export draws, 0.9582 over all and
  0.9694 over groups of 5. On the tiny model of tests/test_quantize.py
  single images lost 3-5 points of agreement; groups of 5 matched ranges
  over all.
  """
  batches = _calibration(calibration_images, source.image_size, max_images)
  float_model = lite_calibrator.add_intermediate_tensors(
      tflite_converter(source).convert())
  ranges = []
  for start in range(0, len(batches), RANGE_GROUP):
    group = batches[start:start + RANGE_GROUP]
    calibrated = lite_calibrator.Calibrator(float_model).calibrate(
        lambda group=group: ([batch] for batch in group))
    ranges.append(_ranges(calibrated))
  mean = np.mean(ranges, axis=0)  # NaN where nothing recorded a range
  model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(calibrated, 0))
  for tensor, (low, high) in zip(model.subgraphs[0].tensors, mean):
    if not np.isnan(low):
      tensor.quantization.min, tensor.quantization.max = [low], [high]
  builder = flatbuffers.Builder(len(float_model))
  builder.Finish(model.Pack(builder), file_identifier=b'TFL3')
  # What TFLiteConverter runs after its own calibration.
  return check_integer(lite_convert.mlir_quantize(
      bytes(builder.Output()), input_data_type=tf.float32,
      output_data_type=tf.float32))


def check_integer(model: bytes) -> bytes:
  """`model`, once no tensor but its graph's input and output is float:
  the quantiser leaves an operator without an int8 kernel in float32, which
  would put the model off integer-only accelerators."""
  graph = schema.Model.GetRootAsModel(model, 0).Subgraphs(0)
  ends = {*graph.InputsAsNumpy(), *graph.OutputsAsNumpy()}
  left = [graph.Tensors(i).Name().decode() for i in range(graph.TensorsLength())
          if graph.Tensors(i).Type() == schema.TensorType.FLOAT32
          and i not in ends]
  if left:
    raise UserError(f'int8 quantisation left {len(left)} float32 tensors, '
                    f'such as {left[0]!r}: an operator of this model has no '
                    'int8 kernel; quantise it as dynamic or float16 instead')
  return model


def _ranges(calibrated: bytes) -> np.ndarray:
  """[tensors, 2]: the (min, max) a calibrated model recorded for each
  tensor of its graph; NaN where it recorded none."""
  graph = schema.Model.GetRootAsModel(calibrated, 0).Subgraphs(0)
  ranges = np.full([graph.TensorsLength(), 2], np.nan)
  for index in range(graph.TensorsLength()):
    recorded = graph.Tensors(index).Quantization()
    if recorded is not None and recorded.MinLength() == 1:
      ranges[index] = recorded.Min(0), recorded.Max(0)
  return ranges


@dataclasses.dataclass(frozen=True)
class Agreement:
  """How often a model's top-1 class is the reference's, and each one's
  accuracy when labels are given (else None)."""
  images: int
  top1_agreement: float
  accuracy: Optional[float]
  reference_accuracy: Optional[float]


def top1_agreement(model: runtimes.Runtime, reference: runtimes.Runtime,
                   images: np.ndarray, labels: Optional[np.ndarray] = None,
                   batch_size: int = 32) -> Agreement:
  """Compares `model`'s top-1 classes with `reference`'s (and `labels`)
  on float images [n, size, size, 3] in [0, 1], `batch_size` at a time."""
  if len(images) == 0:
    raise UserError('images is empty; pass at least one image')
  if labels is not None and len(labels) != len(images):
    raise UserError(f'{len(labels)} labels for {len(images)} images')
  if batch_size < 1:
    raise UserError(f'batch_size must be >= 1; received: {batch_size}')
  top1 = {'model': [], 'reference': []}
  for start in range(0, len(images), batch_size):
    batch = images[start:start + batch_size]
    top1['model'].append(model.run(batch).argmax(-1))
    top1['reference'].append(reference.run(batch).argmax(-1))
  ours, theirs = (np.concatenate(top1[key]) for key in ('model', 'reference'))

  def accuracy(predicted: np.ndarray) -> Optional[float]:
    return None if labels is None else float(np.mean(predicted == labels))

  return Agreement(len(images), float(np.mean(ours == theirs)),
                   accuracy(ours), accuracy(theirs))
