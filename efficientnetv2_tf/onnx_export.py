"""Exports a model as ONNX, for ONNX Runtime and TensorRT.

`onnx_model(source)` gives the same contract as `model.tflite`, with a
dynamic batch: input `images`, float32 `[batch, size, size, 3]` in [0, 1]
at the eval size (crop and resize before), normalised inside as the
source's contract says; output `probabilities`, `[batch, num_classes]`.
The file carries `model_name`, `image_size`, `labels` (one per line) and
the preprocessing (JSON) as metadata.

    with open('model.onnx', 'wb') as f:
      f.write(onnx_model(source))

Opset 17: TensorRT 10 accepts opsets 9 to 20 and TensorRT 8.6 up to 17;
ONNX Runtime runs it since 1.13; and the model needs no newer operator, so
17 reaches the most runtimes.

`precision='fp16'` stores weights and computes in float16, keeping float32
input and output, with the float16 converter that ships inside
onnxruntime, so it needs that package and no other. It halves the file
and lets GPUs run in half precision; on a CPU ONNX Runtime casts back to
float32 around the nodes it has no float16 kernel for.
"""
import json

from efficientnetv2_tf import runtimes
from efficientnetv2_tf.source import probabilities_function
from efficientnetv2_tf.source import Source
from hparams.errors import UserError

OPSET = 17
PRECISIONS = ('fp32', 'fp16')


def _metadata(source: Source) -> dict:
  return {'model_name': source.model_name,
          'image_size': str(source.image_size),
          'labels': '\n'.join(source.labels),
          'preprocessing': json.dumps(source.contract.describe())}


def check_precision(precision: str) -> None:
  if precision not in PRECISIONS:
    raise UserError(f'onnx_precision must be one of '
                    f'{", ".join(PRECISIONS)}; received: {precision!r}')


def onnx_model(source: Source, precision: str = 'fp32') -> bytes:
  """The model as ONNX: [batch, size, size, 3] in [0, 1] -> probabilities.

  Raises `UserError` for an unknown `precision` or a missing converter.
  """
  check_precision(precision)
  tf2onnx = runtimes.import_optional('tf2onnx', 'ONNX export')
  if precision == 'fp16':
    float16 = runtimes.import_optional('onnxruntime.transformers.float16',
                                       "precision='fp16'")
  probabilities = probabilities_function(source)
  proto, _ = tf2onnx.convert.from_function(
      probabilities, input_signature=probabilities.input_signature,
      opset=OPSET)
  if precision == 'fp16':
    proto = float16.convert_float_to_float16(proto, keep_io_types=True)
  for key, value in _metadata(source).items():
    entry = proto.metadata_props.add()
    entry.key, entry.value = key, value
  return proto.SerializeToString()
