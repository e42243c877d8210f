"""Published weights: where each lives and what its inputs must look like.

Every `(model, tag)` pair the original authors published is one
`PublishedWeights` entry: its URL, its classifier size, the top-1 they
report and, above all, its `InputContract`: how an evaluation image is
cropped, resized and normalised. The contract is the one the weights were
trained or fine-tuned with, so loading, serving and fine-tuning all read it
from here and nowhere else:

    >>> entry = published_weights('efficientnetv2-b0', 'imagenet')
    >>> entry.contract.normalization, entry.contract.resize
    ('imagenet', 'bicubic_tf1')
    >>> published_weights('efficientnetv2-s', 'imagenet21k-ft1k').contract.crop
    'none'

The three evaluation recipes of the original code, as contracts:

| recipe     | normalisation          | resize        | crop                      |
| ---------- | ---------------------- | ------------- | ------------------------- |
| `default`  | `(x - 128) / 128`      | bilinear      | centre, below 320 px only |
| `effnetv1` | ImageNet mean / std    | TF1 bicubic   | centre, always            |
| `ft`       | `(x / 255 - 0.5) / 0.5`| bilinear      | none (whole image)        |

A centre crop keeps `size / (size + 32)` of the short side. 'TF1 bicubic'
is `tf.compat.v1.image.resize_bicubic` (no half-pixel centres, a = -0.75),
which is what the V1 code resized with; TF2's bicubic differs from it.

Sources: V2 URLs, sizes and top-1 from google/automl `efficientnetv2/`
(README.md, effnetv2_configs.py, datasets.py); V1 from tensorflow/tpu
`models/official/efficientnet/README.md` (AdvProp + AutoAugment and
NoisyStudent + RandAugment rows).
"""
import dataclasses
import os
from typing import Dict, List, Mapping, Optional, Tuple

from hparams.errors import UserError
from hparams.registry import close_matches

# name -> (mean, stddev) per RGB channel, on 0-255 pixels.
NORMALIZATIONS: Dict[str, Tuple[Tuple[float, ...], Tuple[float, ...]]] = {
    'symmetric': ((128.0,) * 3, (128.0,) * 3),
    'inception': ((127.5,) * 3, (127.5,) * 3),
    'imagenet': ((0.485 * 255, 0.456 * 255, 0.406 * 255),
                 (0.229 * 255, 0.224 * 255, 0.225 * 255)),
}
RESIZES = ('bilinear', 'bicubic_tf1')
CROPS = ('below_320', 'always', 'none')
CROP_PADDING = 32
CENTRE_CROP_BELOW = 320


@dataclasses.dataclass(frozen=True)
class InputContract:
  """How to turn an image into a model input at evaluation.

  `crop`: 'below_320' centre-crops only images smaller than 320 px (the V2
  code's rule), 'always' always does (V1, offsets rounded up), 'none'
  resizes the whole image.
  """
  normalization: str
  resize: str
  crop: str
  image_size: int

  def __post_init__(self):
    for field, value, allowed in (
        ('normalization', self.normalization, tuple(NORMALIZATIONS)),
        ('resize', self.resize, RESIZES), ('crop', self.crop, CROPS)):
      if value not in allowed:
        raise UserError(f'{field} must be one of {", ".join(allowed)}; '
                        f'received: {value!r}')

  def describe(self) -> Dict[str, object]:
    mean, stddev = NORMALIZATIONS[self.normalization]
    return {**dataclasses.asdict(self), 'mean': list(mean),
            'stddev': list(stddev), 'crop_padding': CROP_PADDING}

  @classmethod
  def from_description(cls, described: Mapping[str, object]
                       ) -> 'InputContract':
    """The contract that `describe` gave (export.json's `preprocessing`)."""
    names = [f.name for f in dataclasses.fields(cls)]
    missing = [name for name in names if name not in described]
    if missing:
      raise UserError(f'the preprocessing description lacks '
                      f'{", ".join(missing)}; received: {dict(described)}')
    return cls(**{name: described[name] for name in names})


# The evaluation side of each preprocessing recipe (`Pipeline.path`).
RECIPE_CONTRACTS: Dict[str, Tuple[str, str, str]] = {
    'default': ('symmetric', 'bilinear', 'below_320'),
    'effnetv1': ('imagenet', 'bicubic_tf1', 'always'),
    'ft': ('inception', 'bilinear', 'none'),
}


def recipe_contract(path: str, image_size: int,
                    normalization: Optional[str] = None) -> InputContract:
  """The evaluation contract of a recipe, optionally renormalised."""
  default_norm, resize, crop = RECIPE_CONTRACTS[path]
  return InputContract(normalization or default_norm, resize, crop,
                       int(image_size))


def check_normalization(name: Optional[str], key: str) -> None:
  if name is not None and name not in NORMALIZATIONS:
    raise UserError(f'{key} must be one of {", ".join(NORMALIZATIONS)} (or '
                    f'unset); received: {name!r}')


@dataclasses.dataclass(frozen=True)
class PublishedWeights:
  """One published checkpoint. `recipe` is the augmentation (`data.augname`)
  it was trained or fine-tuned with; `top1` the ImageNet top-1 (%) its
  authors report, None where they report none."""
  model_name: str
  tag: str
  url: str
  num_classes: int
  contract: InputContract
  recipe: str
  top1: Optional[float]
  source: str

  @property
  def name(self) -> str:
    return f'{self.model_name}.{self.tag}'


_BUCKET = 'https://storage.googleapis.com/cloud-tpu-checkpoints/efficientnet/'
_AUTOML = 'google/automl efficientnetv2/README.md'
_TPU = 'tensorflow/tpu models/official/efficientnet/README.md'
IMAGENET21K_CLASSES = 21843

_REGISTRY: Dict[Tuple[str, str], PublishedWeights] = {}


def _add(model_name: str, tag: str, url: str, contract: Tuple[str, str, str],
         image_size: int, recipe: str, top1: Optional[float], source: str,
         num_classes: int = 1000) -> None:
  _REGISTRY[model_name, tag] = PublishedWeights(
      model_name, tag, url, num_classes, InputContract(*contract, image_size),
      recipe, top1, source)


# EfficientNetV2. name: (eval size, top-1 of 'imagenet', of '21k-ft1k').
_V2 = {
    'efficientnetv2-s': (384, 83.9, 84.9),
    'efficientnetv2-m': (480, 85.2, 86.2),  # the paper reports 85.1
    'efficientnetv2-l': (480, 85.7, 86.9),
    'efficientnetv2-xl': (512, None, 87.2),  # no ImageNet-1k-only weights
    'efficientnetv2-b0': (224, 78.7, None),
    'efficientnetv2-b1': (240, 79.8, None),
    'efficientnetv2-b2': (260, 80.5, None),
    'efficientnetv2-b3': (300, 82.1, None),
}
for _name, (_size, _top1, _ft_top1) in _V2.items():
  _url = f'{_BUCKET}v2/{_name}'
  _small = _name[-2] == 'b'  # B0-B3 were trained with the V1 recipe
  if _name != 'efficientnetv2-xl':
    _add(_name, 'imagenet', f'{_url}.tgz',
         RECIPE_CONTRACTS['effnetv1' if _small else 'default'], _size,
         'effnetv1_autoaug' if _small else 'randaug', _top1, _AUTOML)
  _add(_name, 'imagenet21k', f'{_url}-21k.tgz', RECIPE_CONTRACTS['default'],
       224, 'none', None, _AUTOML, IMAGENET21K_CLASSES)
  _add(_name, 'imagenet21k-ft1k', f'{_url}-21k-ft1k.tgz',
       RECIPE_CONTRACTS['ft'], _size, 'ft', _ft_top1, _AUTOML)

# EfficientNet V1. name: (eval size, AdvProp top-1, NoisyStudent top-1).
_V1 = {
    'efficientnet-b0': (224, 77.6, 78.8),
    'efficientnet-b1': (240, 79.6, 81.5),
    'efficientnet-b2': (260, 80.5, 82.4),
    'efficientnet-b3': (300, 81.9, 84.1),
    'efficientnet-b4': (380, 83.3, 85.3),
    'efficientnet-b5': (456, 84.3, 86.1),
    'efficientnet-b6': (528, 84.8, 86.4),
    'efficientnet-b7': (600, 85.2, 86.9),
    'efficientnet-b8': (672, 85.5, None),
}
# AdvProp weights (the original's 'imagenet' for V1) take inputs in
# [-1, 1], `x * 2 / 255 - 1`; NoisyStudent ('jft') ones ImageNet mean/std.
_ADVPROP = ('inception', 'bicubic_tf1', 'always')
for _name, (_size, _top1, _jft_top1) in _V1.items():
  _add(_name, 'imagenet', f'{_BUCKET}advprop/{_name}.tar.gz', _ADVPROP,
       _size, 'effnetv1_autoaug', _top1, _TPU)
  if _jft_top1 is not None:
    _add(_name, 'jft', f'{_BUCKET}noisystudent/noisy_student_{_name}.tar.gz',
         RECIPE_CONTRACTS['effnetv1'], _size, 'effnetv1_randaug', _jft_top1,
         _TPU)
# L2 was published at two input sizes.
for _tag, _suffix, _size, _top1 in (('jft', '', 800, 88.4),
                                    ('jft-475', '_475', 475, 88.2)):
  _add('efficientnet-l2', _tag,
       f'{_BUCKET}noisystudent/noisy_student_efficientnet-l2{_suffix}.tar.gz',
       RECIPE_CONTRACTS['effnetv1'], _size, 'effnetv1_randaug', _top1, _TPU)

TAGS = tuple(sorted({tag for _, tag in _REGISTRY}))


def tags(model_name: str) -> List[str]:
  """The tags published for a model, e.g. ['imagenet', 'imagenet21k', ...]."""
  return sorted(tag for name, tag in _REGISTRY if name == model_name)


def published_weights(model_name: str, tag: str) -> PublishedWeights:
  """The entry of one published checkpoint; UserError listing the model's
  tags if there is none."""
  entry = _REGISTRY.get((model_name, tag))
  if entry is None:
    available = tags(model_name)
    if not available:
      raise UserError(f'no weights are published for {model_name!r}')
    hint = close_matches(tag, available)
    hint = f' (did you mean {hint[0]!r}?)' if hint else ''
    raise UserError(f'no {tag!r} weights are published for {model_name}'
                    f'{hint}; available: {", ".join(available)}')
  return entry


def archive_folder(entry: PublishedWeights) -> str:
  """The folder a published archive unpacks into ('efficientnetv2-b0-21k')."""
  name = os.path.basename(entry.url)
  return name[:name.index('.')]


def published_at(model_name: str, path: str) -> Optional[PublishedWeights]:
  """The published weights of `model_name` that `path` is an unpacked
  archive of, told by its folder's name (Keras caches an archive unpacked
  in '<folder>_extracted'); None if no folder says so unambiguously. The
  folder of V1 'imagenet' (AdvProp) and of V2 'imagenet' is the model's
  own name, which a checkpoint trained with the model's preset may carry
  too, so it names nothing.
  """
  folders = set(os.path.normpath(os.path.abspath(path)).split(os.sep))
  for tag in tags(model_name):
    entry = _REGISTRY[model_name, tag]
    folder = archive_folder(entry)
    if folder != model_name and (folder in folders or
                                 folder + '_extracted' in folders):
      return entry
  return None


def named_weights(model_name: str,
                  weights: Optional[str]) -> Optional[PublishedWeights]:
  """The published weights of `model_name` that `weights` names: by tag (a
  `UserError` where the model has none under it), or as the folder their
  archive unpacked into (`published_at`); None for other paths and None."""
  if not weights:
    return None
  if weights in TAGS:
    return published_weights(model_name, weights)
  return published_at(model_name, weights)


def list_published() -> List[str]:
  """Every published checkpoint as 'model.tag'."""
  return sorted(entry.name for entry in _REGISTRY.values())


def all_published() -> List[PublishedWeights]:
  return [_REGISTRY[key] for key in sorted(_REGISTRY)]


_DESCRIBED = {
    'symmetric': '(x - 128) / 128', 'inception': '(x - 127.5) / 127.5',
    'imagenet': 'ImageNet mean / std', 'bilinear': 'bilinear',
    'bicubic_tf1': 'TF1 bicubic', 'below_320': 'centre, below 320 px',
    'always': 'centre', 'none': 'none',
}


def markdown_table() -> str:
  """The registry as the README shows it."""
  rows = ['| model | tag | normalisation | resize | crop | eval size | '
          'top-1 (%) |', '| --- | --- | --- | --- | --- | ---: | ---: |']
  for entry in all_published():
    c = entry.contract
    top1 = f'{entry.top1:.1f}' if entry.top1 is not None else '-'
    rows.append(f'| {entry.model_name} | {entry.tag} | '
                f'{_DESCRIBED[c.normalization]} | {_DESCRIBED[c.resize]} | '
                f'{_DESCRIBED[c.crop]} | {c.image_size} | {top1} |')
  return '\n'.join(rows) + '\n'
