"""The modes that use a trained model: export, predict and benchmark, with
what they print and the image files predict reads.

    source = inference.load_source('runs/b0-digits', 'efficientnetv2-b0')
    inference.run_predict(source, 'photos/', top_k=3, output='p.json')
"""
import glob
import json
import os
import random
import tempfile
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import tensorflow as tf

import datasets
from efficientnetv2_tf import benchmark as benchmark_lib
from efficientnetv2_tf import export as export_lib
from efficientnetv2_tf import onnx_export
from efficientnetv2_tf import predict as predict_lib
from efficientnetv2_tf import quantize
from efficientnetv2_tf import runtimes
from efficientnetv2_tf.preprocessing import model_file_pixels
from efficientnetv2_tf.preprocessing import IMAGE_EXTENSIONS
from efficientnetv2_tf.run_dir import RunDir
from hparams.errors import UserError
from hparams.weights import InputContract


def image_files(image_path: str, argument: str = 'image_path') -> List[str]:
  """The image files under a directory (recursively) or matching a glob;
  an error names the path as `argument`."""
  if os.path.isdir(image_path):
    found = [os.path.join(root, name)
             for root, _, names in os.walk(image_path) for name in names
             if name.lower().endswith(IMAGE_EXTENSIONS)]
  else:
    found = [path for path in glob.glob(image_path, recursive=True)
             if os.path.isfile(path)]
  if not found:
    raise UserError(f'{argument} {image_path!r} matches no image file; '
                    'pass a directory, a file or a glob such as '
                    f"'photos/*.jpg' (extensions {', '.join(IMAGE_EXTENSIONS)}"
                    ' in directories)')
  return sorted(found)


def describe(row: Dict[str, Any]) -> str:
  """One line for a row: the file, then label (probability) pairs."""
  if 'error' in row:
    return f'{row["file"]}: error: {row["error"]}'
  return f'{row["file"]}: ' + ', '.join(
      f'{p["label"]} ({p["probability"]:.3f})' for p in row['top_k'])


def load_source(model_dir: str, model_name: str,
                weights: Optional[str] = None,
                checkpoint: Optional[str] = None,
                model_config: Optional[Dict[str, Any]] = None
                ) -> export_lib.Source:
  """Published or given `weights` (a model built with `model_config`) when
  set, else the run in `model_dir`."""
  if weights:
    return export_lib.load_pretrained(model_name, weights, model_config)
  return export_lib.load_run(model_dir, checkpoint)


# The eval images an int8 export is reported on at most: held in memory
# as float32, an ImageNet eval split would not fit.
REPORT_IMAGES = 2000
# int8 calibration images are a seeded random sample: a folder's or a
# split's first images can be one class, or all alike, and the activation
# ranges follow what calibration saw. The training split is sampled from
# its first `CALIBRATION_POOL` examples, read (held encoded) but not decoded.
CALIBRATION_SEED = 0
CALIBRATION_POOL = 2000


def calibration_images(image_path: str, contract: InputContract,
                       limit: int = quantize.MAX_CALIBRATION_IMAGES
                       ) -> List[np.ndarray]:
  """Up to `limit` images of `image_path` drawn at random (seeded, so an
  export repeats), cropped and resized as the model's contract says, in
  [0, 1]: what int8 quantisation calibrates on. A file that is not a
  readable image is refused in one line."""
  files = image_files(image_path, 'calibration_images')
  images = []
  for path in random.Random(CALIBRATION_SEED).sample(files, min(limit,
                                                                len(files))):
    with open(path, 'rb') as f:
      try:
        pixels = model_file_pixels(tf.constant(f.read()), contract)
      except tf.errors.InvalidArgumentError as error:
        raise UserError(f'calibration image {path!r} cannot be read: '
                        f'{predict_lib.reason(error)}') from None
    images.append(pixels.numpy())
  return images


def split_images(dataset: datasets.Dataset, split: str,
                 contract: InputContract,
                 limit: Optional[int] = None, shuffled: bool = False
                 ) -> Tuple[np.ndarray, np.ndarray]:
  """Images of a dataset split as a model file takes them ([0, 1], cropped
  and resized as `contract` says) and their class ids, in the split's fixed
  order, or `shuffled` (seeded) within its first `CALIBRATION_POOL`; the
  first `limit` when given."""
  examples = dataset.examples(split)
  if shuffled:
    examples = examples.shuffle(CALIBRATION_POOL, seed=CALIBRATION_SEED)
  if limit is not None:
    examples = examples.take(limit)
  images, labels = [], []
  for image, label in examples:
    images.append(model_file_pixels(image, contract).numpy())
    labels.append(int(np.argmax(label)) if label.shape.rank else int(label))
  return np.array(images, np.float32), np.array(labels)


def run_images(model_dir: str, data_dir: Optional[str],
               contract: InputContract
               ) -> Tuple[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
  """For int8 quantisation of a run: up to 200 images drawn at random from
  its training split to calibrate on, and up to `REPORT_IMAGES` of its
  eval split with their labels to report on, read through its dataset as
  training read them."""
  data = RunDir(model_dir).load_specs().data
  dataset = datasets.from_spec(data, data_dir)
  calibration, _ = split_images(dataset, data.train_split, contract,
                                quantize.MAX_CALIBRATION_IMAGES, shuffled=True)
  return calibration, split_images(dataset, data.eval_split, contract,
                                   REPORT_IMAGES)


def int8_report(export_dir: str, source: export_lib.Source,
                images: np.ndarray, labels: np.ndarray) -> quantize.Agreement:
  """How the export's int8 model.tflite does against the float model
  (`source` in TensorFlow, the same computation) on labelled images: top-1
  agreement and both accuracies."""
  quantized = os.path.join(export_dir, runtimes.FILE_NAMES['litert'])
  return quantize.top1_agreement(runtimes.load(quantized),
                                 runtimes.load(source), images, labels)


def run_export(source: export_lib.Source, export_dir: str, overwrite: bool,
               quantization: str, onnx_precision: Optional[str] = 'fp32',
               calibration: Optional[Sequence[np.ndarray]] = None
               ) -> Dict[str, Any]:
  """Exports `source`; int8 calibrates on `calibration`, images in [0, 1]
  at the eval size (`calibration_images`, `split_images`)."""
  info = export_lib.export(source, export_dir, overwrite=overwrite,
                           quantization=quantization,
                           onnx_precision=onnx_precision,
                           calibration_images=calibration)
  print(f'exported {source.model_name} (step {source.step}) to {export_dir}:')
  for name, size in info['files'].items():
    print(f'  {name:20s} {size / 2**20:8.2f} MiB')
  return info


def run_predict(source: Union[str, export_lib.Source], image_path: str,
                top_k: int, output: str,
                runtime: Optional[str] = None) -> List[Dict[str, Any]]:
  rows = predict_lib.predict(source, image_files(image_path), top_k, runtime)
  for row in rows:
    print(describe(row))
  with open(output, 'w') as f:
    json.dump(rows, f, indent=2)
  failed = sum('error' in row for row in rows)
  print(f'{len(rows) - failed} images classified, {failed} unreadable; '
        f'predictions: {output}')
  if rows and failed == len(rows):
    raise UserError(f'none of the {failed} image(s) of --image_path='
                    f'{image_path} could be read')
  return rows


def file_runtime(source: export_lib.Source, name: str,
                 directory: str) -> runtimes.Runtime:
  """`source` converted into `directory` for file runtime `name`, loaded."""
  path = os.path.join(directory, runtimes.FILE_NAMES[name])
  with open(path, 'wb') as f:
    f.write(onnx_export.onnx_model(source) if name == 'onnxruntime'
            else export_lib.tflite_model(source))
  runtime = runtimes.load(path, name)
  # A .tflite file does not record the model's name; the source does.
  runtime.model_name = source.model_name
  return runtime


def run_benchmark(source: export_lib.Source, image_size: Optional[int],
                  batch_sizes: str, iterations: int, jit_compile: bool,
                  runtime_names: str = 'tf') -> List[benchmark_lib.Result]:
  """Times the deployed computation ([0, 1] images to probabilities) at
  each batch size in each runtime of `runtime_names`
  ('tf,onnxruntime,litert'), at `image_size` (None: the eval size);
  `jit_compile` compiles the 'tf' one with XLA."""
  names = parse_runtimes(runtime_names)
  sizes = benchmark_lib.parse_batch_sizes(batch_sizes)
  source = source.at_size(image_size)
  benchmark_lib.check_settings(source.image_size, sizes, 0, iterations)
  results = []
  with tempfile.TemporaryDirectory() as directory:
    for name in names:
      runtime = (runtimes.TFRuntime(source, jit_compile) if name == 'tf'
                 else file_runtime(source, name, directory))
      try:
        found = runtimes.benchmark(runtime, sizes, iterations=iterations)
      except (MemoryError, tf.errors.ResourceExhaustedError):
        raise UserError(
            f'batches of {",".join(map(str, sizes))} images at '
            f'{source.image_size} px do not fit in memory; lower '
            '--batch_sizes or --image_size') from None
      for result in found:
        print(benchmark_lib.format_result(result))
      results += found
  return results


def parse_runtimes(text: str) -> List[str]:
  """'tf,onnxruntime' -> ['tf', 'onnxruntime'], each checked."""
  names = [name.strip() for name in text.split(',') if name.strip()]
  if not names:
    raise UserError(f'runtime must name one or more of '
                    f'{", ".join(runtimes.RUNTIMES)}; received: {text!r}')
  for name in names:
    runtimes.check_runtime(name)
  return names
