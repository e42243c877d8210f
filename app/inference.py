"""The modes that use a trained model: export, predict and benchmark, with
what they print and the image files predict reads.

    source = inference.load_source('runs/b0-digits', 'efficientnetv2-b0')
    inference.run_predict(source, 'photos/', top_k=3, output='p.json')
"""
import glob
import json
import os
from typing import Any, Dict, List, Optional, Union

from efficientnetv2_tf import benchmark as benchmark_lib
from efficientnetv2_tf import export as export_lib
from efficientnetv2_tf import predict as predict_lib
from efficientnetv2_tf.preprocessing import IMAGE_EXTENSIONS
from hparams.errors import UserError


def image_files(image_path: str) -> List[str]:
  """The image files under a directory (recursively) or matching a glob."""
  if os.path.isdir(image_path):
    found = [os.path.join(root, name)
             for root, _, names in os.walk(image_path) for name in names
             if name.lower().endswith(IMAGE_EXTENSIONS)]
  else:
    found = [path for path in glob.glob(image_path, recursive=True)
             if os.path.isfile(path)]
  if not found:
    raise UserError(f'image_path {image_path!r} matches no image file; '
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


def run_export(source: export_lib.Source, export_dir: str, overwrite: bool,
               quantization: str) -> Dict[str, Any]:
  info = export_lib.export(source, export_dir, overwrite=overwrite,
                           quantization=quantization)
  print(f'exported {source.model_name} (step {source.step}) to {export_dir}:')
  for name, size in info['files'].items():
    print(f'  {name:20s} {size / 2**20:8.2f} MiB')
  return info


def run_predict(source: Union[str, export_lib.Source], image_path: str,
                top_k: int,
                output: str) -> List[Dict[str, Any]]:
  rows = predict_lib.predict(source, image_files(image_path), top_k)
  for row in rows:
    print(describe(row))
  with open(output, 'w') as f:
    json.dump(rows, f, indent=2)
  failed = sum('error' in row for row in rows)
  print(f'{len(rows) - failed} images classified, {failed} unreadable; '
        f'predictions: {output}')
  return rows


def run_benchmark(source: export_lib.Source, image_size: Optional[int],
                  batch_sizes: str, iterations: int,
                  jit_compile: bool) -> List[benchmark_lib.Result]:
  results = benchmark_lib.benchmark(
      source.model, image_size or source.image_size,
      benchmark_lib.parse_batch_sizes(batch_sizes), iterations=iterations,
      jit_compile=jit_compile)
  for result in results:
    print(benchmark_lib.format_result(result))
  return results
