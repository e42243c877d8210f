"""Command-line entry point: flags, then the config, then one library call.

    python main.py --model_name=efficientnetv2-s --dataset_cfg=cifar10ft \
        --hparam_str='model.dropout_rate=0.3' --data_dir=~/tensorflow_datasets

Resolves the run config (base, model preset, dataset preset, overrides),
binds the dataset (which fixes the number of classes), builds the model,
optionally loads `--weights`, prints what it built and saves the resolved
config as `<model_dir>/config.yaml`.

Bad input ends with a one-line `error: ...` on stderr and exit status 2.
"""
import importlib.util
import os
import sys

from absl import app
from absl import flags

os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '2')

import hparams  # pylint: disable=g-import-not-at-top
from hparams.errors import UserError  # pylint: disable=g-import-not-at-top

FLAGS = flags.FLAGS
flags.DEFINE_string('model_name', 'efficientnetv2-b0',
                    'One of efficientnetv2_tf.list_models().')
flags.DEFINE_string('dataset_cfg', 'digits',
                    'Dataset preset, matched case-insensitively.')
flags.DEFINE_string('hparam_str', '',
                    "Overrides: 'section.key=value,...' or a YAML file.")
flags.DEFINE_string('data_dir', None,
                    'Where the dataset is (or tfds puts it); overrides '
                    'data.data_dir.')
flags.DEFINE_string('dataset_module', None,
                    'A Python file to import first, e.g. one that defines a '
                    'Dataset subclass.')
flags.DEFINE_string('model_dir', None,
                    'Where to write the resolved config.yaml.')
flags.DEFINE_string('weights', None,
                    "None, 'imagenet', 'imagenet21k', 'imagenet21k-ft1k', "
                    "'jft', or a checkpoint path.")


def import_file(path: str) -> None:
  if not os.path.isfile(path):
    raise UserError(f'--dataset_module {path!r} is not a file')
  spec = importlib.util.spec_from_file_location(
      os.path.splitext(os.path.basename(path))[0], path)
  spec.loader.exec_module(importlib.util.module_from_spec(spec))


def run() -> None:
  import datasets  # pylint: disable=g-import-not-at-top
  import efficientnetv2_tf  # pylint: disable=g-import-not-at-top
  if FLAGS.dataset_module:
    import_file(FLAGS.dataset_module)
  cfg = hparams.get_config(FLAGS.model_name, FLAGS.dataset_cfg,
                           FLAGS.hparam_str)
  dataset = datasets.bind(cfg, FLAGS.data_dir)
  sizes = ', '.join(f'{split} {dataset.split_size(split):,}'
                    for split in (cfg.data.train_split, cfg.data.eval_split))
  print(f'dataset {dataset.name}: {dataset.num_classes} classes; {sizes}')
  model = efficientnetv2_tf.get_model(cfg.model.model_name, cfg.model.to_dict(),
                                      weights=FLAGS.weights)
  print(f'{model.name}: {model.count_params():,} parameters, '
        f'{len([l for l in model.layers if l.name.startswith("blocks_")])} '
        f'blocks, {model.num_classes} classes, train size '
        f'{hparams.train_image_size(cfg)}, eval size {cfg.eval.isize}')
  if FLAGS.model_dir:
    os.makedirs(FLAGS.model_dir, exist_ok=True)
    path = os.path.join(FLAGS.model_dir, 'config.yaml')
    hparams.save_yaml(cfg, path)
    print(f'config: {path}')


def main(argv) -> None:
  if len(argv) > 1:
    raise app.UsageError(f'unexpected arguments: {" ".join(argv[1:])}')
  try:
    run()
  except UserError as e:
    print(f'error: {e}', file=sys.stderr)
    sys.exit(2)
  except OSError as e:
    detail = f'{e.strerror}: {e.filename}' if e.strerror else str(e)
    print(f'error: {detail}', file=sys.stderr)
    sys.exit(2)


if __name__ == '__main__':
  app.run(main)
