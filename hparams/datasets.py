"""Dataset presets: the training recipe that goes with a dataset.

A preset is looked up case-insensitively by `--dataset_cfg`. It is applied
after the model preset and before the user's overrides. It names the
dataset (`data.dataset`); the number of classes comes from the dataset
itself when a run binds it, so presets never set `model.num_classes`.

The `*Ft` presets fine-tune a pretrained model, as the original's did:
few epochs, a constant small learning rate, the 'ft' preprocessing (no
random crop, cutout), no progressive stages and light regularisation.

Every registered dataset's name is a dataset config too: the `datasets`
package calls `register_dataset_default` as it defines each dataset class,
so the config `image_folder` fine-tunes on a folder of images with the
`FINE_TUNE` recipe, and `mnist` is `MnistFt`. A preset of the same name
wins, case-insensitively (`imagenet` is `ImageNet`):

    >>> register_dataset_default('doc-scans', preset='Digits')
    >>> dataset_preset('DOC-SCANS')['data']['dataset']
    'doc-scans'
    >>> dataset_preset('digits') == dataset_preset('Digits')
    True
"""
import copy
from typing import Any, Dict, List, Mapping, Optional, Sequence

from hparams.errors import UserError
from hparams.registry import close_matches
from hparams.registry import Registry

DATASET_PRESETS: Registry = Registry('dataset config')
# The dataset config each registered dataset's name stands for, when no
# preset has that name.
DATASET_DEFAULTS: Registry = Registry('dataset')


def register_dataset_preset(name: str, overrides: Mapping[str, Any]) -> None:
  DATASET_PRESETS.add(name, copy.deepcopy(dict(overrides)))


def register_dataset_default(dataset: str, aliases: Sequence[str] = (),
                             preset: Optional[str] = None) -> None:
  """Makes the dataset's name and `aliases` dataset configs that train on it.

  They apply the preset named `preset` (a fine-tuning recipe, `FINE_TUNE`,
  when None) with `data.dataset` set to `dataset`. A name already
  registered as a dataset is an error, as it is for datasets themselves.
  """
  recipe = dataset_preset(preset) if preset else FINE_TUNE
  recipe = _merged(recipe, data={'dataset': dataset})
  for name in (dataset, *aliases):
    DATASET_DEFAULTS.add(name, recipe)


def dataset_preset(name: str) -> Dict[str, Any]:
  """The preset `name`, else the default recipe of the dataset `name`."""
  for registry in (DATASET_PRESETS, DATASET_DEFAULTS):
    if name in registry:
      return copy.deepcopy(registry.get(name))
  presets, datasets = DATASET_PRESETS.names(), DATASET_DEFAULTS.names()
  hint = close_matches(str(name), presets + datasets)
  did_you_mean = f"; did you mean '{hint[0]}'?" if hint else ''
  # Datasets register their names when the `datasets` package is imported.
  known = ', '.join(datasets) or 'none registered (import datasets first)'
  raise UserError(f'unknown dataset config {name!r}{did_you_mean} Presets: '
                  f'{", ".join(presets)}. Datasets: {known}')


def list_dataset_presets() -> List[str]:
  """The explicit presets, without the datasets' own names."""
  return DATASET_PRESETS.names()


def list_dataset_configs() -> List[str]:
  """Every name `dataset_preset` accepts: presets and dataset names."""
  return sorted({*DATASET_PRESETS.names(), *DATASET_DEFAULTS.names()})


def _merged(base: Mapping[str, Any], **sections: Mapping[str, Any]):
  merged = copy.deepcopy(dict(base))
  for section, values in sections.items():
    merged[section] = {**merged.get(section, {}), **values}
  return merged


IMAGENET = {
    'data': {'dataset': 'imagenet'},
    'train': {'epochs': 350, 'lr_base': 0.016, 'lr_warmup_epoch': 5.0,
              'lr_sched': 'exponential', 'label_smoothing': 0.1},
    'eval': {'batch_size': 8},
}
IMAGENET21K = {
    'model': {'dropout_rate': 0.000001, 'survival_prob': 1.0},
    'data': {'dataset': 'imagenet21k', 'augname': 'none', 'mixup_alpha': 0.0,
             'cutmix_alpha': 0.0},
    'train': {'epochs': 60, 'lr_base': 0.008, 'lr_warmup_epoch': 1.0,
              'lr_sched': 'cosine', 'label_smoothing': 0.0, 'image_size': 224,
              'stages': 0, 'sched': False},
    'eval': {'batch_size': 128, 'isize': 224},
}
IMAGENET_FT = {
    'model': {'dropout_rate': 0.000001, 'survival_prob': 0.8},
    'data': {'dataset': 'imagenet2012', 'augname': 'ft', 'mixup_alpha': 0.0,
             'cutmix_alpha': 0.0},
    'train': {'batch_size': 512, 'stages': 0, 'epochs': 15,
              'optimizer': 'rmsprop', 'lr_sched': 'constant',
              'lr_base': 0.0005, 'lr_warmup_epoch': 1.0, 'ema_decay': 0.9996,
              'weight_decay': 1e-5, 'label_smoothing': 0.1,
              'min_steps': 10000, 'image_size_ratio': 1.0},
}
# Fine-tuning for a dataset without a preset of its own, such as a folder
# of a few hundred images: the recipe above at a batch that such a folder
# fills, for its epochs alone. A batch of 512 can be more than the whole
# folder, and 10,000 steps of 64 are 320 epochs of 2,000 images.
FINE_TUNE = _merged(IMAGENET_FT, train={'batch_size': 64, 'min_steps': 0})
del FINE_TUNE['data']['dataset']  # each dataset puts its own

register_dataset_preset('ImageNet', IMAGENET)
register_dataset_preset('ImageNet21k', IMAGENET21K)
register_dataset_preset('ImagenetFt', IMAGENET_FT)
for _preset, _dataset, _extra in [
    ('Cifar10Ft', 'cifar10', {}),
    ('Cifar100Ft', 'cifar100', {}),
    ('FlowersFt', 'flowers', {}),
    ('TFFlowersFt', 'tf_flowers', {'val_fraction': 0.3}),
    ('CarsFt', 'cars196', {}),
    ('FashionMnistFt', 'fashion_mnist', {}),
    ('MnistFt', 'mnist', {'flip': False}),  # a mirrored digit is another one
    ('BirdsFt', 'birds', {}),
    ('ImagenetteFt', 'imagenette', {}),
]:
  register_dataset_preset(
      _preset, _merged(IMAGENET_FT, data={'dataset': _dataset, **_extra}))

# The offline quick start: train from scratch on the 8x8 scikit-learn
# digits, upscaled, with progressive stages. A fixed seed makes it
# repeatable, so that it prints what the README shows. RMSProp at lr_base
# 0.008 (0.002 at batch 64) could diverge in the first stage: one run fell
# to 0.2 training top-1 and ended at 0.86 eval top-1. Half that, reached
# over two epochs, trained steadily, and 24 epochs rather than 20 leave 12
# at the final size: four seeds ended at 0.969-0.978.
register_dataset_preset('Digits', {
    'model': {'dropout_rate': 0.2},
    'data': {'dataset': 'digits', 'augname': 'ft_none', 'flip': False,
             'ram': 5.0, 'ibase': 24, 'mixup_alpha': 0.0,
             'cutmix_alpha': 0.0, 'seed': 0},
    'train': {'epochs': 24, 'batch_size': 64, 'stages': 2, 'sched': True,
              'image_size': 32, 'lr_base': 0.004, 'lr_sched': 'cosine',
              'lr_warmup_epoch': 2.0, 'ema_decay': 0.99,
              'label_smoothing': 0.1},
    'eval': {'batch_size': 120, 'isize': 32},
})
