"""One interface to a classifier in TensorFlow, ONNX Runtime or LiteRT.

Every runtime takes what `model.tflite` and `model.onnx` take: float32
images `[n, size, size, 3]` in [0, 1] at the model's eval size, already
cropped and resized as its input contract says, and returns float32
probabilities `[n, num_classes]`:

    runtime = runtimes.load('export/model.onnx')  # or model.tflite, a Source
    probabilities = runtime.run(images)

`load` picks the runtime from the file's extension ('.onnx': onnxruntime,
'.tflite': litert) or from a loaded `Source` ('tf').

Images of another size are refused, not resized: the contract's crop rule
and resize method (`hparams.weights.InputContract`) decide how an image
becomes a model input, and a silent resize here would feed the model other
pixels than its evaluation did.

`benchmark` measures a runtime's throughput and latency by batch size, as
`benchmark.Result`s with the runtime's name.
"""
import abc
import importlib
import json
import os
from types import ModuleType
from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np
import tensorflow as tf

from efficientnetv2_tf import benchmark as benchmark_lib
from efficientnetv2_tf.source import probabilities_function
from efficientnetv2_tf.source import Source
from hparams.errors import UserError

RUNTIMES = ('tf', 'onnxruntime', 'litert')
FILE_RUNTIMES = {'.onnx': 'onnxruntime', '.tflite': 'litert'}
# The model file of an export that each file runtime runs.
FILE_NAMES = {'onnxruntime': 'model.onnx', 'litert': 'model.tflite'}
# Slices of a batch that the 'tf' runtime runs side by side on a CPU
# (`TFRuntime`); measured on 2 cores, where 2 and 4 ran alike.
CPU_PARTS = 2
# The pip requirement of each optional module, as tested.
PACKAGES = {
    'onnxruntime': 'onnxruntime==1.32.0',
    'ai_edge_litert': 'ai-edge-litert==2.3.0',
    'tf2onnx': 'tf2onnx==1.17.0',
}


def import_optional(module: str, purpose: str) -> ModuleType:
  """Imports an optional dependency, or says in one line what to install."""
  try:
    return importlib.import_module(module)
  except ImportError:
    package = PACKAGES[module.split('.')[0]]
    raise UserError(f'{purpose} needs the {package.split("==")[0]} package; '
                    f'install it with: pip install {package}') from None


def check_float(images: Any, name: str) -> np.ndarray:
  """`images` as an array, refused in one line unless floating point: 0-255
  integer pixels taken as they are would be 255 times too bright."""
  images = np.asarray(images)
  if not np.issubdtype(images.dtype, np.floating):
    raise UserError(f'{name} must be float32 in [0, 1]; received '
                    f'{images.dtype} (divide 0-255 pixels by 255)')
  return images


class Runtime(abc.ABC):
  """A loaded classifier: `run` maps [0, 1] images to probabilities.

  `name` is the runtime ('tf', 'onnxruntime', 'litert'), `model_name` what
  the model is called, `device` where it runs ('CPU' or 'GPU'),
  `jit_compile` whether XLA compiled it.
  """
  name: str
  model_name: str
  image_size: int
  device: str = 'CPU'
  jit_compile: bool = False

  def run(self, images: np.ndarray) -> np.ndarray:
    """Probabilities [n, num_classes] of float images [n, size, size, 3]."""
    images = np.asarray(check_float(images, 'images'), np.float32)
    size = self.image_size
    if images.ndim != 4 or images.shape[1:] != (size, size, 3):
      raise UserError(f'images must be [n, {size}, {size}, 3] in [0, 1] for '
                      f'this {size} px model; received shape {images.shape}; '
                      'crop and resize them as its input contract says')
    return np.asarray(self._run(images), np.float32)

  @abc.abstractmethod
  def _run(self, images: np.ndarray) -> np.ndarray:
    """`run` on checked images."""


class TFRuntime(Runtime):
  """A `Source` run by TensorFlow, with the same function as the exports;
  `jit_compile` compiles it with XLA.

  On a CPU a batch of two or more images runs as `CPU_PARTS` slices side by
  side (`probabilities_function`'s `parts`): one slice's ops wait for the
  previous op of the batch to finish on every core, two slices' ops can
  overlap. `bench/run_all.py`'s inference section measures both ('ours'
  and 'ours_one_slice'). `parts` overrides the number of slices.
  """
  name = 'tf'

  def __init__(self, source: Source, jit_compile: bool = False,
               parts: Optional[int] = None):
    self.model_name = source.model_name
    self.image_size = source.image_size
    self.jit_compile = jit_compile
    self.device = 'GPU' if tf.config.list_logical_devices('GPU') else 'CPU'
    if parts is None:
      parts = CPU_PARTS if self.device == 'CPU' else 1
    if parts < 1:
      raise UserError(f'parts must be 1 or more; received {parts}')
    self.parts = parts
    self._whole = probabilities_function(source, jit_compile=jit_compile)
    self._sliced = self._whole if parts == 1 else probabilities_function(
        source, jit_compile=jit_compile, parts=parts)

  def _run(self, images: np.ndarray) -> np.ndarray:
    function = self._sliced if len(images) >= self.parts else self._whole
    return function(tf.constant(images))['probabilities'].numpy()


def export_description(directory: str) -> Optional[Dict[str, Any]]:
  """The export.json of an export directory, None where it has none; one
  that is not a JSON object is refused in one line."""
  path = os.path.join(directory, 'export.json')
  if not os.path.isfile(path):
    return None
  with open(path) as f:
    try:
      description = json.load(f)
    except json.JSONDecodeError as e:
      raise UserError(f'{path!r} is not valid JSON: {e}') from None
  if not isinstance(description, dict):
    raise UserError(f'{path!r} must hold a JSON object')
  return description


def _described_name(path: str) -> str:
  """The model name in the export.json beside `path`, else the file stem."""
  description = export_description(os.path.dirname(path))
  if description is not None:
    return description.get('model_name') or 'model'
  return os.path.splitext(os.path.basename(path))[0]


class OnnxRuntime(Runtime):
  """A .onnx file run by ONNX Runtime: CUDA when available, else CPU.

  `providers` overrides the execution providers, in order of preference.
  """
  name = 'onnxruntime'

  def __init__(self, path: str, num_threads: Optional[int] = None,
               providers: Optional[Sequence[str]] = None):
    ort = import_optional('onnxruntime', "runtime='onnxruntime'")
    options = ort.SessionOptions()
    options.intra_op_num_threads = num_threads or 0  # 0: ORT's default
    if providers is None:
      providers = [p for p in ('CUDAExecutionProvider',
                               'CPUExecutionProvider')
                   if p in ort.get_available_providers()]
    state = import_optional('onnxruntime.capi.onnxruntime_pybind11_state',
                            "runtime='onnxruntime'")
    try:
      self._session = ort.InferenceSession(path, options,
                                           providers=list(providers))
    except (state.InvalidProtobuf, state.InvalidGraph, state.Fail) as error:
      reason = str(error).strip().splitlines()[0][:200]
      raise UserError(f'{path!r} is not an ONNX model that ONNX Runtime '
                      f'can load: {reason}') from None
    inputs = self._session.get_inputs()
    self._input = inputs[0].name
    self.image_size = int(inputs[0].shape[1])
    self.model_name = (self._session.get_modelmeta().custom_metadata_map
                       .get('model_name') or _described_name(path))
    self.device = ('GPU' if self._session.get_providers()[0] ==
                   'CUDAExecutionProvider' else 'CPU')

  def _run(self, images: np.ndarray) -> np.ndarray:
    return self._session.run(None, {self._input: images})[0]


class LiteRTRuntime(Runtime):
  """A .tflite file run by LiteRT, resized to each new batch size.

  The input and output must be float32 (int8 models quantise inside).
  """
  name = 'litert'

  def __init__(self, path: str, num_threads: Optional[int] = None):
    litert = import_optional('ai_edge_litert.interpreter',
                             "runtime='litert'")
    try:
      self._interpreter = litert.Interpreter(
          model_path=path, num_threads=num_threads or os.cpu_count())
    except ValueError:
      raise UserError(f'{path!r} is not a TFLite model') from None
    self._input = self._interpreter.get_input_details()[0]
    self._output = self._interpreter.get_output_details()[0]
    for detail in (self._input, self._output):
      if detail['dtype'] != np.float32:
        raise UserError(f'{path!r} has a {detail["dtype"].__name__} '
                        f'{detail["name"]!r}; this runtime takes models with '
                        'float32 inputs and outputs')
    self.image_size = int(self._input['shape'][1])
    self.model_name = _described_name(path)
    self._batch_size = None

  def _run(self, images: np.ndarray) -> np.ndarray:
    interpreter = self._interpreter
    if len(images) != self._batch_size:
      interpreter.resize_tensor_input(self._input['index'], images.shape)
      interpreter.allocate_tensors()
      self._batch_size = len(images)
    interpreter.set_tensor(self._input['index'], images)
    interpreter.invoke()
    return interpreter.get_tensor(self._output['index'])


def check_runtime(runtime: Optional[str]) -> None:
  """Refuses a runtime name other than None and those of `RUNTIMES`."""
  if runtime is not None and runtime not in RUNTIMES:
    raise UserError(f'runtime must be one of {", ".join(RUNTIMES)}; '
                    f'received: {runtime!r}')


def runtime_for(path: str) -> str:
  """The runtime of a model file, from its extension."""
  extension = os.path.splitext(path)[1].lower()
  if extension not in FILE_RUNTIMES:
    allowed = ', '.join(f'{e} ({r})' for e, r in FILE_RUNTIMES.items())
    raise UserError(f'cannot tell which runtime runs {path!r}; model files '
                    f'must end in {allowed}')
  return FILE_RUNTIMES[extension]


def load(model: Union[str, Source], runtime: Optional[str] = None,
         num_threads: Optional[int] = None) -> Runtime:
  """Loads a .onnx or .tflite file, or a `Source` for TensorFlow.

  `runtime`, if given, must be the one that runs that kind of model (one of
  `RUNTIMES`). `num_threads` does not apply to 'tf'; by default ONNX
  Runtime picks its own and LiteRT uses every core, as TensorFlow does.
  """
  check_runtime(runtime)
  if isinstance(model, Source):
    kind, described = 'tf', 'a loaded model'
  else:
    kind, described = runtime_for(model), repr(model)
  if runtime not in (None, kind):
    raise UserError(f"runtime {runtime!r} cannot run {described}; that "
                    f"takes runtime {kind!r}")
  if kind == 'tf':
    return TFRuntime(model)
  if not os.path.isfile(model):
    raise UserError(f'model file {model!r} does not exist')
  loaders: Dict[str, type] = {'onnxruntime': OnnxRuntime,
                              'litert': LiteRTRuntime}
  return loaders[kind](model, num_threads)


def _measure(runtime: Runtime, batch_size: int, warmup: int,
             iterations: int, seed: int) -> benchmark_lib.Result:
  """Times `iterations` calls on one batch after `warmup` calls."""
  size = runtime.image_size
  images = np.random.default_rng(seed).uniform(
      0, 1, (batch_size, size, size, 3)).astype(np.float32)
  latencies = benchmark_lib.time_calls(lambda: runtime.run(images), warmup,
                                       iterations)
  return benchmark_lib.result(runtime.model_name, size, batch_size,
                              latencies, runtime.device, runtime.name,
                              runtime.jit_compile)


def benchmark(runtime: Runtime, batch_sizes: Sequence[int],
              warmup: int = 5, iterations: int = 20,
              seed: int = 0) -> List[benchmark_lib.Result]:
  """Measures `runtime` at each batch size, in the order given.

  Each call gets one fixed random batch in [0, 1] from the host, so it
  includes any copy to and from the device, as a deployed model pays it.
  The first `warmup` calls are not timed; the next `iterations` are, one by
  one. Raises `UserError` for a batch size or count out of range.

      >>> import efficientnetv2_tf
      >>> from efficientnetv2_tf.source import Source
      >>> from hparams.weights import recipe_contract
      >>> model = efficientnetv2_tf.get_model(
      ...     'efficientnetv2-b0',
      ...     'width_coefficient=0.25,depth_coefficient=0.2,num_classes=10')
      >>> source = Source(model, 'efficientnetv2-b0',
      ...                 recipe_contract('default', 32),
      ...                 [str(i) for i in range(10)])
      >>> runtime = load(source)  # or 'model.onnx', 'model.tflite'
      >>> for result in benchmark(runtime, [1, 4], warmup=1, iterations=2):
      ...   print(benchmark_lib.format_result(result))  # doctest: +ELLIPSIS
      benchmark {"batch_size": 1, ..., "runtime": "tf"}
      benchmark {"batch_size": 4, ..., "runtime": "tf"}
  """
  benchmark_lib.check_settings(runtime.image_size, batch_sizes, warmup,
                               iterations)
  return [_measure(runtime, batch_size, warmup, iterations, seed)
          for batch_size in batch_sizes]
