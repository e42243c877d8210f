"""What every benchmark shares: the machine, interleaved timing, FLOPs.

Benchmarks here compare settings in one process and one run: the settings
take turns (A B, B A, A B, ...) and each one's figure is the median of its
turns, so that a slower or busier moment of the machine falls on all of
them alike. Compare the ratios; absolute figures depend on the machine.
"""
import datetime
import os
import platform
import resource
import statistics
import sys
import time
from typing import Callable, Dict, List, Mapping

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import keras  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import tensorflow as tf  # pylint: disable=g-import-not-at-top
from tensorflow.python.framework import convert_to_constants  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
from tensorflow.python.profiler import model_analyzer  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import
from tensorflow.python.profiler import option_builder  # pylint: disable=g-import-not-at-top,g-direct-tensorflow-import


def cpu_name() -> str:
  try:
    with open('/proc/cpuinfo') as f:
      for line in f:
        if line.startswith('model name'):
          return line.split(':', 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def machine() -> Dict[str, str]:
  """The machine and versions a set of figures belongs to."""
  gpus = tf.config.list_physical_devices('GPU')
  return {
      'date': datetime.date.today().isoformat(),
      'cpu': cpu_name(),
      'cores': str(os.cpu_count()),
      'accelerators': ', '.join(d.name for d in gpus) or 'none',
      'os': f'{platform.system()} {platform.release()}',
      'python': platform.python_version(),
      'tensorflow': tf.__version__,
      'keras': keras.__version__,
  }


def interleaved(settings: Mapping[str, Callable[[], float]],
                repeats: int) -> Dict[str, List[float]]:
  """Calls each setting `repeats` times, taking turns, and returns every
  figure it gave; the order reverses on each round."""
  names = list(settings)
  figures: Dict[str, List[float]] = {name: [] for name in names}
  for round_index in range(repeats):
    for name in names if round_index % 2 == 0 else reversed(names):
      figures[name].append(settings[name]())
  return figures


def median(values: List[float]) -> float:
  return float(statistics.median(values))


def rate(run: Callable[[], None], images: int) -> float:
  """Images per second of one call of `run`, which handles `images`."""
  started = time.perf_counter()
  run()
  return images / (time.perf_counter() - started)


def matmul_gflops(size: int = 2048, calls: int = 10) -> float:
  """GFLOP/s of a float32 `size` x `size` matmul: the machine's practical
  limit for dense float32 arithmetic, measured rather than looked up."""
  a = tf.random.uniform((size, size))
  b = tf.random.uniform((size, size))
  multiply = tf.function(lambda x, y: tf.reduce_sum(tf.matmul(x, y)))
  multiply(a, b).numpy()
  seconds = []
  for _ in range(calls):
    started = time.perf_counter()
    multiply(a, b).numpy()
    seconds.append(time.perf_counter() - started)
  return 2 * size**3 / min(seconds) / 1e9


def forward_flops(model: keras.Model, image_size: int) -> float:
  """Floating-point operations of one image's inference pass, as counted
  by TensorFlow's profiler on the frozen graph (a multiply-add is two)."""
  function = tf.function(lambda x: model(x, training=False))
  concrete = function.get_concrete_function(
      tf.TensorSpec([1, image_size, image_size, 3], tf.float32))
  frozen = convert_to_constants.convert_variables_to_constants_v2(concrete)
  options = option_builder.ProfileOptionBuilder.float_operation()
  options['output'] = 'none'
  profile = model_analyzer.profile(frozen.graph, options=options)
  return float(profile.total_float_ops)


def peak_rss_mb() -> float:
  """This process's peak resident memory so far, in MiB.

  Linux's `VmHWM` is read first: `ru_maxrss` survives `exec`, so a child
  of a large process would report its parent's peak.
  """
  try:
    with open('/proc/self/status') as f:
      for line in f:
        if line.startswith('VmHWM:'):
          return int(line.split()[1]) / 1024
  except OSError:
    pass
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def write_jpegs(folder: str, count: int, classes: int = 10) -> None:
  """Writes `count` JPEGs of 200-500 px a side (smooth random colour
  fields, about the size of ImageNet's) into class sub-folders."""
  rng = np.random.default_rng(0)
  for i in range(count):
    height, width = rng.integers(200, 500, size=2)
    coarse = rng.integers(0, 256, (8, 8, 3)).astype(np.float32)
    image = tf.cast(tf.image.resize(coarse, [height, width]), tf.uint8)
    path = os.path.join(folder, f'class_{i % classes}', f'{i:05d}.jpg')
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tf.io.write_file(path, tf.io.encode_jpeg(image, quality=90))
