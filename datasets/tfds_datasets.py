"""Datasets read through TensorFlow Datasets (tfds).

tfds downloads and prepares a dataset the first time it is used, into
`--data_dir` (default `~/tensorflow_datasets`). Offline, a missing dataset
fails with a message that says how to prepare it elsewhere and pass
`--data_dir`. Split sizes and class names come from tfds.

    >>> class Pets(TfdsDataset):
    ...   name = 'doc-pets'
    ...   tfds_name = 'oxford_iiit_pet'
    ...   split_map = {'train': 'train', 'eval': 'test'}
    >>> Pets.splits
    ('train', 'eval')
"""
from typing import Any, ClassVar, List, Mapping, Optional

import tensorflow as tf
import tensorflow_datasets as tfds

from datasets.base import Dataset
from hparams.errors import UserError


class TfdsDataset(Dataset):
  """A tfds dataset; subclasses set `tfds_name` and `split_map`.

  `split_map` maps our split names to tfds split specs, which may slice
  ('train[:98%]') or join ('train+validation') tfds splits.
  """
  tfds_name: ClassVar[str] = ''
  split_map: ClassVar[Mapping[str, str]] = {}
  image_key: ClassVar[str] = 'image'
  label_key: ClassVar[str] = 'label'

  def __init_subclass__(cls, **kwargs):
    if 'split_map' in cls.__dict__:
      cls.splits = tuple(cls.split_map)
    super().__init_subclass__(**kwargs)

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    self._builder = None

  def builder(self):
    """The tfds builder, downloading and preparing the data if needed."""
    if self._builder is None:
      try:
        builder = tfds.builder(self.tfds_name, data_dir=self.data_dir)
      except Exception as e:  # pylint: disable=broad-except
        raise UserError(f'cannot open tfds dataset {self.tfds_name!r} in '
                        f'{self.data_dir or "~/tensorflow_datasets"}: {e}'
                        ) from e
      if not builder.info.splits:
        try:
          builder.download_and_prepare()
        except Exception as e:  # pylint: disable=broad-except
          raise UserError(
              f'could not download or prepare tfds dataset '
              f'{self.tfds_name!r} ({type(e).__name__}: '
              f'{str(e).splitlines()[0] if str(e) else ""}); on a machine '
              f'with internet run `tfds build {self.tfds_name} --data_dir=DIR`,'
              f' then pass data_dir=DIR') from e
      self._builder = builder
    return self._builder

  def load_class_names(self) -> List[str]:
    return list(self.builder().info.features[self.label_key].names)

  def source(self, split: str,
             input_context: Optional[tf.distribute.InputContext] = None
             ) -> tf.data.Dataset:
    read_config = tfds.ReadConfig(input_context=input_context)
    examples = self.builder().as_dataset(
        split=self.split_map[split], shuffle_files=False,
        read_config=read_config,
        decoders={self.image_key: tfds.decode.SkipDecoding()})
    # Images stay encoded until the parallel map decodes them; encoded
    # images are also what a cache should hold.
    return examples.map(lambda ex: (ex[self.image_key], ex[self.label_key]))

  def shard_source(self, split: str, num_shards: int,
                   index: int) -> tf.data.Dataset:
    if num_shards == 1:
      return self.source(split)
    context = tf.distribute.InputContext(num_shards, index)
    try:  # by file, when there are enough files
      return self.source(split, context)
    except ValueError:
      return self.source(split).shard(num_shards, index)

  def _split_info(self, split: str):
    try:
      return self.builder().info.splits[self.split_map[split]]
    except KeyError:  # no metadata, e.g. under tfds.testing.mock_data
      return None

  def count(self, split: str) -> int:
    info = self._split_info(split)
    return info.num_examples if info else super().count(split)

  def stored_bytes(self, split: str) -> Optional[int]:
    info = self._split_info(split)
    if not info or info.num_bytes:
      return info.num_bytes if info else None
    # A slice or union of splits ('train[:70%]') has no size of its own:
    # its examples at the dataset's mean example size.
    splits = list(self.builder().info.splits.values())
    stored = sum(whole.num_bytes for whole in splits)
    examples = sum(whole.num_examples for whole in splits)
    if not stored or not examples:
      return None
    return round(stored / examples * info.num_examples)


class Cifar10(TfdsDataset):
  name = 'cifar10'
  tfds_name = 'cifar10'
  num_classes = 10
  preset = 'Cifar10Ft'
  split_map = {'train': 'train', 'eval': 'test'}


class Cifar100(TfdsDataset):
  name = 'cifar100'
  tfds_name = 'cifar100'
  num_classes = 100
  preset = 'Cifar100Ft'
  split_map = {'train': 'train', 'eval': 'test'}


class Flowers(TfdsDataset):
  """Oxford Flowers 102; as in the original, training uses train+validation."""
  name = 'flowers'
  tfds_name = 'oxford_flowers102'
  num_classes = 102
  preset = 'FlowersFt'
  split_map = {'train': 'train+validation', 'minival': 'validation',
               'eval': 'test'}


class TFFlowers(TfdsDataset):
  """tf_flowers has one split: its last `val_fraction`, in whole percent,
  is held out for evaluation (30% in the `TFFlowersFt` preset, as in the
  original, whose eval slice overlapped training)."""
  name = 'tf_flowers'
  aliases = ('tfflowers',)
  tfds_name = 'tf_flowers'
  num_classes = 5
  preset = 'TFFlowersFt'
  split_map = {'train': 'train[:70%]', 'eval': 'train[70%:]'}

  def __init__(self, *args: Any, **kwargs: Any):
    super().__init__(*args, **kwargs)
    kept = round(100 * (1 - self.val_fraction))
    if not 0 < kept < 100:
      raise UserError(f'data.val_fraction={self.val_fraction} leaves no '
                      f'whole percent of {self.name} to one of its splits; '
                      'allowed: 0.01 to 0.99')
    self.split_map = {'train': f'train[:{kept}%]',
                      'eval': f'train[{kept}%:]'}


class Cars(TfdsDataset):
  name = 'cars196'
  aliases = ('cars',)
  tfds_name = 'cars196'
  num_classes = 196
  preset = 'CarsFt'
  split_map = {'train': 'train', 'eval': 'test'}


class ImageNetTfds(TfdsDataset):
  """ImageNet-1k through tfds (manual download); minival is held out."""
  name = 'imagenet2012'
  aliases = ('imagenet_tfds', 'imagenettfds')
  tfds_name = 'imagenet2012'
  num_classes = 1000
  preset = 'ImagenetFt'
  split_map = {'train': 'train[:98%]', 'minival': 'train[98%:]',
               'eval': 'validation', 'trainval': 'train'}


class FashionMnist(TfdsDataset):
  name = 'fashion_mnist'
  tfds_name = 'fashion_mnist'
  num_classes = 10
  preset = 'FashionMnistFt'
  split_map = {'train': 'train', 'eval': 'test'}


class Mnist(TfdsDataset):
  name = 'mnist'
  tfds_name = 'mnist'
  num_classes = 10
  preset = 'MnistFt'
  split_map = {'train': 'train', 'eval': 'test'}


class Imagenette(TfdsDataset):
  """The 10-class ImageNet subset, in its 160 px version."""
  name = 'imagenette'
  tfds_name = 'imagenette/160px-v2'
  num_classes = 10
  preset = 'ImagenetteFt'
  split_map = {'train': 'train', 'eval': 'validation'}
