"""Inference throughput and latency: the timing, `Result` and printed line
that `--mode=benchmark` uses for every runtime (see `runtimes.benchmark`),
and `benchmark` for any Keras model, such as a backbone or a model with
several outputs.

For each batch size, `benchmark` (the Keras model itself, not the
deployed computation that `--mode=benchmark` times) feeds one fixed random batch in [-1, 1],
already on the device, to `model(x, training=False)` compiled with
`tf.function` (and XLA with `jit_compile=True`). It measures the model, not
input loading. The first `warmup` calls are not timed: they trace the
function and, with XLA, compile it. The next `iterations` calls are timed one
by one, each waiting for the outputs to be copied back to the host, so the
latencies are per batch and throughput counts only images in timed calls.

`format_result` prints one `benchmark {json}` line per setting, for
`grep '^benchmark ' | cut -c11- | jq`:

    >>> import efficientnetv2_tf
    >>> model = efficientnetv2_tf.get_model(
    ...     'efficientnetv2-b0',
    ...     'width_coefficient=0.25,depth_coefficient=0.2,num_classes=10')
    >>> for result in benchmark(model, 32, [1, 4], warmup=1, iterations=2):
    ...   print(format_result(result))  # doctest: +ELLIPSIS
    benchmark {"batch_size": 1, ..., "model": "efficientnetv2-b0", ...}
    benchmark {"batch_size": 4, ..., "model": "efficientnetv2-b0", ...}
"""
import dataclasses
import json
import numbers
import time
from typing import Any, Callable, List, Sequence

import keras
import numpy as np
import tensorflow as tf

from hparams.errors import UserError


@dataclasses.dataclass(frozen=True)
class Result:
  """One setting's measurement; latencies are per batch, in milliseconds.

  `device` is where the outputs were computed: 'CPU', 'GPU' or 'TPU'.
  """
  model: str
  image_size: int
  batch_size: int
  jit_compile: bool
  iterations: int
  images_per_second: float
  latency_p50_ms: float
  latency_p95_ms: float
  device: str
  runtime: str = 'tf'


def _is_positive_int(value) -> bool:
  return (isinstance(value, numbers.Integral) and
          not isinstance(value, bool) and value > 0)


def check_settings(image_size: int, batch_sizes: Sequence[int],
                   warmup: int, iterations: int) -> None:
  """Raises `UserError` for a size, batch size or count out of range."""
  if not _is_positive_int(image_size):
    raise UserError(f'image_size must be a positive integer; '
                    f'received: {image_size!r}')
  if len(batch_sizes) == 0 or not all(map(_is_positive_int, batch_sizes)):
    raise UserError(f'batch_sizes must be positive integers; '
                    f'received: {list(batch_sizes)}')
  if not isinstance(warmup, numbers.Integral) or warmup < 0:
    raise UserError(f'warmup must be an integer >= 0; received: {warmup!r}')
  if not _is_positive_int(iterations):
    raise UserError(f'iterations must be an integer >= 1; '
                    f'received: {iterations!r}')


def time_calls(call: Callable[[], Any], warmup: int,
               iterations: int) -> List[float]:
  """Seconds of each of `iterations` calls, after `warmup` untimed ones."""
  for _ in range(warmup):
    call()
  latencies = []
  for _ in range(iterations):
    start = time.perf_counter()
    call()
    latencies.append(time.perf_counter() - start)
  return latencies


def result(model: str, image_size: int, batch_size: int,
           latencies: Sequence[float], device: str, runtime: str = 'tf',
           jit_compile: bool = False) -> Result:
  """The `Result` of timed calls on batches of `batch_size`."""
  return Result(
      model=model, image_size=int(image_size), batch_size=int(batch_size),
      jit_compile=bool(jit_compile), iterations=len(latencies),
      images_per_second=batch_size * len(latencies) / sum(latencies),
      latency_p50_ms=float(np.percentile(latencies, 50)) * 1000,
      latency_p95_ms=float(np.percentile(latencies, 95)) * 1000,
      device=device, runtime=runtime)


def _measure(model: keras.Model, image_size: int, batch_size: int,
             warmup: int, iterations: int, jit_compile: bool) -> Result:
  """Times `iterations` synchronised calls on one batch after `warmup`."""
  # A fresh function per batch size, so that each one's warmup pays for its
  # own tracing and compilation.
  predict = tf.function(lambda x: model(x, training=False),
                        jit_compile=jit_compile or None)
  images = tf.random.uniform((batch_size, image_size, image_size, 3), -1, 1)
  devices = []

  def call() -> None:
    outputs = tf.nest.flatten(predict(images))
    for output in outputs:
      keras.ops.convert_to_numpy(output)  # waits for the device
    devices[:] = [outputs[0].device]

  latencies = time_calls(call, warmup, iterations)
  return result(model.name, image_size, batch_size, latencies,
                tf.DeviceSpec.from_string(devices[0]).device_type,
                jit_compile=jit_compile)


def benchmark(model: keras.Model, image_size: int, batch_sizes: Sequence[int],
              warmup: int = 5, iterations: int = 20,
              jit_compile: bool = False) -> List[Result]:
  """Measures inference speed at each batch size, in the order given.

  Raises `UserError` for a size, batch size or count out of range.
  """
  check_settings(image_size, batch_sizes, warmup, iterations)
  return [_measure(model, image_size, batch_size, warmup, iterations,
                   jit_compile)
          for batch_size in batch_sizes]


def format_result(result: Result) -> str:
  """One line, 'benchmark ' then the result as JSON with rounded floats."""
  fields = {name: round(value, 3) if isinstance(value, float) else value
            for name, value in dataclasses.asdict(result).items()}
  return 'benchmark ' + json.dumps(fields, sort_keys=True)


def parse_batch_sizes(text: str) -> List[int]:
  """Parses a flag value such as '1,8,32' into [1, 8, 32]."""
  try:
    batch_sizes = [int(part) for part in text.split(',')]
  except ValueError:
    batch_sizes = []
  if not batch_sizes or min(batch_sizes) <= 0:
    raise UserError(f'batch_sizes must be comma-separated positive integers; '
                    f'received: {text!r}')
  return batch_sizes
