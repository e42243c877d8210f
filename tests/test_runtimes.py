"""Each runtime gives a tiny model's probabilities, and bad input is refused."""
import json
import sys

import keras
import numpy as np
import pytest

from efficientnetv2_tf import benchmark
from efficientnetv2_tf import export
from efficientnetv2_tf import onnx_export
from efficientnetv2_tf import runtimes
from efficientnetv2_tf.model import EfficientNet
from hparams.errors import UserError
from hparams.models import V2_BASE_BLOCKS
from hparams.weights import InputContract

SIZE = 32
IMAGES = np.random.default_rng(0).uniform(0, 1, (5, SIZE, SIZE, 3)).astype(
    np.float32)


@pytest.fixture(scope='module')
def source():
  keras.utils.set_random_seed(0)
  model = EfficientNet(V2_BASE_BLOCKS, num_classes=10, width_coefficient=0.25,
                       depth_coefficient=0.2)
  return export.Source(model, 'efficientnetv2-b0',
                       InputContract('inception', 'bilinear', 'none', SIZE),
                       [str(i) for i in range(10)])


@pytest.fixture(scope='module')
def model_files(source, tmp_path_factory):
  """model.onnx and model.tflite, with an export.json naming the model."""
  directory = tmp_path_factory.mktemp('export')
  (directory / 'model.onnx').write_bytes(onnx_export.onnx_model(source))
  (directory / 'model.tflite').write_bytes(export.tflite_model(source))
  (directory / 'export.json').write_text(json.dumps(
      {'model_name': 'efficientnetv2-b0'}))
  return {'onnx': str(directory / 'model.onnx'),
          'tflite': str(directory / 'model.tflite'), 'tf': source}


def expected(source, images):
  """The Keras model's probabilities, normalised by hand as 'inception'
  says: `(x - 127.5) / 127.5` of 0-255 pixels."""
  logits = source.model((images * 255.0 - 127.5) / 127.5, training=False)
  return keras.ops.convert_to_numpy(keras.ops.softmax(logits))


@pytest.mark.parametrize('kind,name', [('tf', 'tf'), ('onnx', 'onnxruntime'),
                                       ('tflite', 'litert')])
def test_each_runtime_gives_the_models_probabilities_at_any_batch(
    source, model_files, kind, name):
  runtime = runtimes.load(model_files[kind])
  assert (runtime.name, runtime.image_size) == (name, SIZE)
  assert runtime.model_name == 'efficientnetv2-b0'
  for batch in (IMAGES, IMAGES[:1], IMAGES[:3]):
    np.testing.assert_allclose(runtime.run(batch), expected(source, batch),
                               atol=1e-5)


@pytest.mark.parametrize('parts', [2, 3])
def test_tf_runs_a_batch_in_slices_with_the_same_probabilities(source,
                                                               parts):
  runtime = runtimes.TFRuntime(source, parts=parts)
  # 5 images (as 2 + 3, or 1 + 2 + 2), exactly `parts` images, and fewer
  # images than slices, which run whole.
  for batch in (IMAGES, IMAGES[:parts], IMAGES[:parts - 1]):
    np.testing.assert_allclose(runtime.run(batch), expected(source, batch),
                               atol=1e-5)
  assert runtimes.TFRuntime(source).parts == runtimes.CPU_PARTS
  with pytest.raises(UserError, match='parts must be 1 or more; received 0'):
    runtimes.TFRuntime(source, parts=0)


def test_xla_and_another_size_give_the_same_probabilities(source):
  images = np.random.default_rng(1).uniform(0, 1, (2, 48, 48, 3)).astype(
      np.float32)
  runtime = runtimes.TFRuntime(source.at_size(48), jit_compile=True)
  assert (runtime.image_size, runtime.jit_compile) == (48, True)
  np.testing.assert_allclose(runtime.run(images), expected(source, images),
                             atol=1e-5)
  result, = runtimes.benchmark(runtime, [2], warmup=1, iterations=1)
  assert (result.image_size, result.jit_compile) == (48, True)
  assert source.at_size(None) is source and source.image_size == SIZE


def test_images_of_another_size_are_refused(model_files):
  runtime = runtimes.load(model_files['onnx'])
  with pytest.raises(UserError, match=r'\[n, 32, 32, 3\].*\(1, 64, 64, 3\)'):
    runtime.run(np.zeros((1, 64, 64, 3), np.float32))


@pytest.mark.parametrize('kind', ['tf', 'onnx', 'tflite'])
def test_integer_pixels_are_refused_not_taken_as_0_to_1(model_files, kind):
  # uint8 0-255 pixels cast as they are would read 255 times too bright.
  runtime = runtimes.load(model_files[kind])
  pixels = np.round(IMAGES[:2] * 255).astype(np.uint8)
  with pytest.raises(UserError, match=r'^images must be float32 in \[0, '
                     r'1\]; received uint8 \(divide 0-255 pixels by 255\)$'):
    runtime.run(pixels)


def test_a_runtime_that_cannot_run_the_model_is_refused(model_files):
  with pytest.raises(UserError, match="runtime 'litert' cannot run .*model."
                     "onnx'; that takes runtime 'onnxruntime'"):
    runtimes.load(model_files['onnx'], runtime='litert')
  with pytest.raises(UserError, match="runtime 'onnxruntime' cannot run a "
                     "loaded model"):
    runtimes.load(model_files['tf'], runtime='onnxruntime')


@pytest.mark.parametrize('model,runtime,message', [
    ('model.pb', None, r"runs 'model.pb'; model files must end in \.onnx "
     r'\(onnxruntime\), \.tflite \(litert\)'),
    ('model.onnx', 'tensorrt', "runtime must be one of tf, onnxruntime, "
     "litert; received: 'tensorrt'"),
    ('missing.tflite', None, "model file 'missing.tflite' does not exist"),
])
def test_bad_models_and_runtimes_get_one_line_errors(model, runtime,
                                                     message):
  with pytest.raises(UserError, match=message):
    runtimes.load(model, runtime)


@pytest.mark.parametrize('name,message', [
    ('model.onnx', "'.*model.onnx' is not an ONNX model"),
    ('model.tflite', "'.*model.tflite' is not a TFLite model"),
])
def test_a_file_of_another_kind_is_refused(tmp_path, name, message):
  path = tmp_path / name
  path.write_bytes(b'not a model')
  with pytest.raises(UserError, match=message):
    runtimes.load(str(path))


def test_a_missing_runtime_package_says_what_to_install(model_files,
                                                        monkeypatch):
  monkeypatch.setitem(sys.modules, 'onnxruntime', None)
  with pytest.raises(UserError) as error:
    runtimes.load(model_files['onnx'], runtime='onnxruntime')
  assert str(error.value) == (
      "runtime='onnxruntime' needs the onnxruntime package; install it "
      'with: pip install onnxruntime==1.32.0')


def test_benchmark_prints_one_line_per_batch_size(model_files):
  runtime = runtimes.load(model_files['tflite'])
  results = runtimes.benchmark(runtime, [1, 2], warmup=1, iterations=3)
  assert [r.batch_size for r in results] == [1, 2]
  line = benchmark.format_result(results[1])
  assert line.startswith('benchmark {')
  fields = json.loads(line[len('benchmark '):])
  assert fields['runtime'] == 'litert' and fields['image_size'] == SIZE
  assert fields['model'] == 'efficientnetv2-b0' and fields['device'] == 'CPU'
  assert fields['iterations'] == 3
  assert 0 < fields['latency_p50_ms'] <= fields['latency_p95_ms']
  assert fields['images_per_second'] > 0


@pytest.mark.parametrize('batch_sizes,warmup,iterations,message', [
    ([], 5, 20, r'batch_sizes must be positive integers; received: \[\]'),
    ([1, 0], 5, 20, r'received: \[1, 0\]'),
    ([1], -1, 20, 'warmup must be an integer >= 0; received: -1'),
    ([1], 5, 0, 'iterations must be an integer >= 1; received: 0'),
])
def test_benchmark_refuses_settings_out_of_range(model_files, batch_sizes,
                                                 warmup, iterations, message):
  runtime = runtimes.load(model_files['tflite'])
  with pytest.raises(UserError, match=message):
    runtimes.benchmark(runtime, batch_sizes, warmup, iterations)


def test_model_name_falls_back_to_the_file_name(model_files, tmp_path):
  path = tmp_path / 'b0_int8.tflite'
  path.write_bytes(open(model_files['tflite'], 'rb').read())
  assert runtimes.load(str(path)).model_name == 'b0_int8'
