"""Dataset presets: the training recipe that goes with a dataset.

A preset is looked up case-insensitively by `--dataset_cfg`. It is applied
after the model preset and before the user's overrides. It names the
dataset (`data.dataset`); the number of classes comes from the dataset
itself when a run binds it, so presets never set `model.num_classes`.

The `*Ft` presets fine-tune a pretrained model, as the original's did:
few epochs, a constant small learning rate, the 'ft' preprocessing (no
random crop, cutout), no progressive stages and light regularisation.
"""
import copy
from typing import Any, Dict, List, Mapping

from hparams.registry import Registry

DATASET_PRESETS: Registry = Registry('dataset config')


def register_dataset_preset(name: str, overrides: Mapping[str, Any]) -> None:
  DATASET_PRESETS.add(name, copy.deepcopy(dict(overrides)))


def dataset_preset(name: str) -> Dict[str, Any]:
  return copy.deepcopy(DATASET_PRESETS.get(name))


def list_dataset_presets() -> List[str]:
  return DATASET_PRESETS.names()


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
              'lr_sched': 'cosine', 'label_smoothing': 0.0, 'isize': 224.0,
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
              'min_steps': 10000, 'isize': 1.0},
}

register_dataset_preset('ImageNet', IMAGENET)
register_dataset_preset('ImageNet21k', IMAGENET21K)
register_dataset_preset('ImagenetFt', IMAGENET_FT)
for _preset, _dataset, _extra in [
    ('Cifar10Ft', 'cifar10', {}),
    ('Cifar100Ft', 'cifar100', {}),
    ('FlowersFt', 'flowers', {}),
    ('TFFlowersFt', 'tf_flowers', {}),
    ('CarsFt', 'cars196', {}),
    ('FashionMnistFt', 'fashion_mnist', {}),
    ('MnistFt', 'mnist', {'flip': False}),  # a mirrored digit is another one
    ('BirdsFt', 'birds', {}),
    ('ImagenetteFt', 'imagenette', {}),
]:
  register_dataset_preset(
      _preset, _merged(IMAGENET_FT, data={'dataset': _dataset, **_extra}))

# The offline quick start: train from scratch on the 8x8 scikit-learn
# digits, upscaled, with progressive stages.
register_dataset_preset('Digits', {
    'model': {'dropout_rate': 0.2},
    'data': {'dataset': 'digits', 'augname': 'ft_none', 'flip': False,
             'ram': 5.0, 'ibase': 24, 'mixup_alpha': 0.0,
             'cutmix_alpha': 0.0},
    'train': {'epochs': 20, 'batch_size': 64, 'stages': 2, 'sched': True,
              'isize': 32.0, 'lr_base': 0.008, 'lr_sched': 'cosine',
              'lr_warmup_epoch': 1.0, 'ema_decay': 0.99,
              'label_smoothing': 0.1},
    'eval': {'batch_size': 120, 'isize': 32},
})
