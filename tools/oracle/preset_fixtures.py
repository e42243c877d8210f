"""Writes `tests/fixtures/presets.json`: the original's resolved config for
every model preset with every dataset preset, to test `hparams` against.

    python tools/oracle/preset_fixtures.py \
        --automl_dir=/tmp/automl/efficientnetv2

takes about 10 s on two CPU cores and writes about 50 kB.

Each config is built as the original's `main.py` builds it: a copy of
`hparams.base_config`, then `effnetv2_configs.get_model_config(model)`,
then `datasets.get_dataset_config(dataset_cfg)`. Keys:

- `keys`: the original's config keys recorded (`section.key`);
- `configs`: `'<model> <dataset_cfg>'` -> the values of `keys`, then the
  training image size `main.py` derives from `train.isize` and
  `eval.isize`;
- `blocks`: model -> its decoded block arguments, one dict per stage;
- `datasets`: dataset_cfg -> the `num_classes` and `multiclass` of the
  dataset class it reads.
"""
import copy
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import original  # pylint: disable=g-import-not-at-top,wrong-import-position

DATASET_CFGS = ('ImageNet', 'ImageNet21k', 'ImagenetFt', 'Cifar10Ft',
                'Cifar100Ft', 'FlowersFt', 'TFFlowersFt', 'CarsFt')
KEYS = (
    'model.dropout_rate', 'model.survival_prob', 'model.width_coefficient',
    'model.depth_coefficient', 'model.feature_size', 'model.depth_divisor',
    'model.min_depth', 'model.act_fn', 'model.bn_momentum',
    'model.bn_epsilon', 'model.conv_dropout', 'model.headbias',
    'train.stages', 'train.sched', 'train.epochs', 'train.min_steps',
    'train.optimizer', 'train.lr_sched', 'train.lr_base',
    'train.lr_decay_epoch', 'train.lr_decay_factor', 'train.lr_warmup_epoch',
    'train.lr_min', 'train.ema_decay', 'train.weight_decay',
    'train.weight_decay_inc', 'train.weight_decay_exclude',
    'train.label_smoothing', 'train.gclip', 'train.batch_size',
    'train.ft_init_ema', 'eval.batch_size', 'eval.isize', 'data.augname',
    'data.ra_num_layers', 'data.ram', 'data.mixup_alpha',
    'data.cutmix_alpha', 'data.ibase')


def train_image_size(cfg) -> int:
  """`main.py`'s rule: a `train.isize` <= 16 is a share of the eval size."""
  size = cfg.train.isize
  if size <= 16.:
    size = int(cfg.eval.isize * size) // 16 * 16
  return int(size)


def resolved(hparams, effnetv2_configs, datasets, model, dataset_cfg):
  cfg = copy.deepcopy(hparams.base_config)
  cfg.override(effnetv2_configs.get_model_config(model))
  cfg.override(datasets.get_dataset_config(dataset_cfg))
  values = []
  for key in KEYS:
    section, leaf = key.split('.')
    value = cfg[section][leaf]
    values.append(value.item() if hasattr(value, 'item') else value)
  return values + [train_image_size(cfg)]


def main() -> None:
  args = original.start(__doc__, 'presets.json')
  # pylint: disable=g-import-not-at-top
  import datasets
  import effnetv2_configs
  import hparams
  # pylint: enable=g-import-not-at-top
  models = (sorted(effnetv2_configs.efficientnetv1_params) +
            sorted(effnetv2_configs.efficientnetv2_params))
  configs = {f'{m} {d}': resolved(hparams, effnetv2_configs, datasets, m, d)
             for m in models for d in DATASET_CFGS}
  blocks = {m: [b.as_dict() for b in
                effnetv2_configs.get_model_config(m).model.blocks_args]
            for m in models}
  classes = {}
  for name in DATASET_CFGS:
    ds_name = datasets.get_dataset_config(name).data.ds_name
    data = datasets.get_dataset_class(ds_name).cfg
    classes[name] = [data.num_classes, data.multiclass]
  fixture = {'commit': original.ORIGINAL_COMMIT, 'keys': list(KEYS),
             'configs': configs, 'blocks': blocks, 'datasets': classes}
  original.save(args, fixture)


if __name__ == '__main__':
  main()
