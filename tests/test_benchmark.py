import doctest
import json
import types

import keras
import pytest
import tensorflow as tf

import efficientnetv2_tf
from efficientnetv2_tf import benchmark as benchmark_lib
from hparams.errors import UserError
from tests.conftest import TINY

IMAGE_SIZE = 32
DEVICE = 'GPU' if tf.config.list_logical_devices('GPU') else 'CPU'


@pytest.fixture(scope='module')
def model():
  return efficientnetv2_tf.get_model('efficientnetv2-b0', TINY)


def run(model, batch_sizes, **kwargs):
  return benchmark_lib.benchmark(model, IMAGE_SIZE, batch_sizes, warmup=1,
                                 iterations=3, **kwargs)


def test_one_result_per_batch_size_in_order(model):
  results = run(model, [2, 1])
  assert [r.batch_size for r in results] == [2, 1]
  for result in results:
    assert result.images_per_second > 0
    assert result.latency_p95_ms >= result.latency_p50_ms > 0
    assert (result.model, result.image_size, result.iterations,
            result.jit_compile, result.device) == (
                'efficientnetv2-b0', IMAGE_SIZE, 3, False, DEVICE)


def test_statistics_come_from_the_timed_calls(model, monkeypatch):
  # A clock under which the three timed calls take 10, 20 and 60 ms.
  ticks = iter([0.0, 0.01, 1.0, 1.02, 2.0, 2.06])
  monkeypatch.setattr(benchmark_lib, 'time',
                      types.SimpleNamespace(perf_counter=lambda: next(ticks)))
  result, = run(model, [4])
  assert result.images_per_second == pytest.approx(4 * 3 / 0.09)
  assert result.latency_p50_ms == pytest.approx(20)
  assert result.latency_p95_ms == pytest.approx(56)  # 20 + 0.9 * (60 - 20)


class CountCalls(keras.layers.Layer):
  """Counts the calls of the compiled function in a variable."""

  def build(self, input_shape):
    self.calls = self.add_weight(shape=(), initializer='zeros',
                                 trainable=False)

  def call(self, inputs):
    self.calls.assign_add(1.0)
    return inputs


def test_warmup_and_timed_calls_are_made():
  counter = CountCalls()
  model = keras.Sequential([keras.Input((IMAGE_SIZE, IMAGE_SIZE, 3)), counter])
  benchmark_lib.benchmark(model, IMAGE_SIZE, [1, 2], warmup=2, iterations=3)
  assert float(counter.calls.numpy()) == 2 * (2 + 3)


def test_format_result_is_one_json_line(model):
  result, = run(model, [2])
  line = benchmark_lib.format_result(result)
  assert '\n' not in line and line.startswith('benchmark ')
  fields = json.loads(line[len('benchmark '):])
  assert sorted(fields) == [
      'batch_size', 'device', 'image_size', 'images_per_second', 'iterations',
      'jit_compile', 'latency_p50_ms', 'latency_p95_ms', 'model', 'runtime']
  assert (fields['batch_size'], fields['runtime']) == (2, 'tf')
  assert fields['image_size'] == IMAGE_SIZE
  assert fields['jit_compile'] is False
  assert fields['model'] == 'efficientnetv2-b0'
  assert fields['latency_p50_ms'] == round(result.latency_p50_ms, 3)


def test_jit_compile_runs_with_xla_and_is_recorded(model):
  result, = run(model, [2], jit_compile=True)
  assert result.jit_compile is True
  assert result.latency_p95_ms >= result.latency_p50_ms > 0
  assert '"jit_compile": true' in benchmark_lib.format_result(result)


def test_models_with_several_outputs_are_measured():
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', TINY,
                                      with_endpoints=True)
  result, = run(model, [1])
  assert result.images_per_second > 0


@pytest.mark.parametrize('batch_sizes', [[0, 8], [2, -1], [], [1.5]])
def test_bad_batch_sizes_are_rejected(model, batch_sizes):
  with pytest.raises(UserError, match='batch_sizes must be positive') as error:
    run(model, batch_sizes)
  assert str(list(batch_sizes)) in str(error.value)


@pytest.mark.parametrize('keyword, value, message', [
    ('iterations', 0, 'iterations must be an integer >= 1; received: 0'),
    ('warmup', -1, 'warmup must be an integer >= 0; received: -1'),
    ('image_size', 0, 'image_size must be a positive integer; received: 0'),
])
def test_bad_counts_are_rejected(model, keyword, value, message):
  kwargs = {'image_size': IMAGE_SIZE, 'batch_sizes': [1], 'warmup': 1,
            'iterations': 3, keyword: value}
  with pytest.raises(UserError) as error:
    benchmark_lib.benchmark(model, **kwargs)
  assert str(error.value) == message


def test_parse_batch_sizes():
  assert benchmark_lib.parse_batch_sizes('1,8,32') == [1, 8, 32]
  assert benchmark_lib.parse_batch_sizes('4') == [4]


@pytest.mark.parametrize('text', ['a,2', '', '1,,2', '0,8', '2.5'])
def test_parse_batch_sizes_rejects_junk(text):
  with pytest.raises(UserError) as error:
    benchmark_lib.parse_batch_sizes(text)
  assert 'comma-separated positive integers' in str(error.value)
  assert repr(text) in str(error.value)


def test_docstring_example():
  result = doctest.testmod(benchmark_lib, optionflags=doctest.ELLIPSIS)
  assert result.attempted > 0
  assert result.failed == 0
