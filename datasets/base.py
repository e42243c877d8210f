"""The dataset base class and the `tf.data` pipeline every dataset shares.

A dataset is a subclass of `Dataset`. Defining one with a `name` registers
it; nothing else is edited:

    >>> import numpy as np
    >>> class Squares(Dataset):
    ...   name = 'doc-squares'
    ...   splits = ('train', 'eval')
    ...   def load_class_names(self):
    ...     return ['dark', 'light']
    ...   def source(self, split):
    ...     images = np.repeat([0, 255], 4).astype('uint8').reshape(-1, 1, 1, 1)
    ...     labels = np.repeat([0, 1], 4)
    ...     return tf.data.Dataset.from_tensor_slices((images, labels))
    >>> dataset = get_dataset('doc-squares')
    >>> dataset.num_classes, dataset.split_size('train')
    (2, 8)
    >>> images, labels = next(iter(dataset.pipeline(
    ...     'eval', batch_size=4, training=False, image_size=8,
    ...     augmentation=Augmentation('ft_none'))))
    >>> images.shape, labels.shape
    (TensorShape([4, 8, 8, 3]), TensorShape([4, 2]))

A subclass says where its examples come from (`source`), what the classes
are called (`load_class_names`) and which splits it has; the base class
takes subsets (`per_class`, `fraction`), shards, caches, shuffles,
preprocesses, batches and mixes.
"""
import random
from typing import Any, Callable, ClassVar, Dict, List, Optional, Sequence

import tensorflow as tf

from datasets import steps
from datasets.subsets import cap_per_class
from datasets.subsets import checked_label
from datasets.subsets import Subset
from datasets.subsets import take_spread
from efficientnetv2_tf.preprocessing import Augmentation
from efficientnetv2_tf.preprocessing import preprocess_image
from hparams.datasets import register_dataset_default
from hparams.errors import UserError
from hparams.registry import Registry
from hparams.specs import build_specs
from hparams.specs import DataSpec

DATASETS: Registry = Registry('dataset')

# `cache='auto'` keeps a split in memory when its stored size is below this.
AUTO_CACHE_BYTES = 2 * 1024**3
CACHE_MODES = ('auto', 'memory', 'none')


class Dataset:
  """A labelled image dataset; subclasses register themselves by `name`.

  Class attributes a subclass sets:
    name: the registry name; a subclass without one is an abstract base.
    aliases: further names it is registered under.
    splits: the split names it serves, e.g. ('train', 'minival', 'eval').
    num_classes: the number of classes, where it is known in advance; it is
      checked against the source's class names. Otherwise it is the number
      of class names the source has.
    multi_label: True when an image has several labels;
      `source` then yields multi-hot label vectors.
    download_hint: how to get the data when it is missing.
    preset: the dataset preset that this dataset's name and aliases stand
      for as dataset configs, with `data.dataset` set to this dataset;
      None: the fine-tuning recipe `hparams.datasets.FINE_TUNE`.

  Constructor arguments: `data_dir` where the data is; `per_class` and
  `fraction` take a subset of the `subset_splits` (the training split), so
  that evaluation still sees every image; `strict` fails on an unreadable
  image instead of skipping it; `cache` is 'auto' (in memory when the split
  is under 2 GiB), 'memory' or 'none'; `val_fraction` is the share of each
  class held out for evaluation by sources that have no evaluation split.

  Subclasses implement `load_class_names()` and `source(split)`, and may
  override `count(split)` and `stored_bytes(split)` when the source knows
  them without a pass over the data.
  """
  name: ClassVar[Optional[str]] = None
  aliases: ClassVar[Sequence[str]] = ()
  splits: ClassVar[Sequence[str]] = ('train', 'eval')
  multi_label: ClassVar[bool] = False
  download_hint: ClassVar[str] = ''
  preset: ClassVar[Optional[str]] = None

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    if cls.__dict__.get('name'):
      aliases = tuple(cls.__dict__.get('aliases', ()))
      # First, so that an unknown preset leaves no dataset registered.
      register_dataset_default(cls.name, aliases, cls.preset)
      for name in (cls.name, *aliases):
        DATASETS.add(name, cls)

  def __init__(self, data_dir: Optional[str] = None, *,
               per_class: Optional[int] = None, fraction: float = 1.0,
               strict: bool = False, cache: str = 'auto',
               shuffle_buffer: int = 16384, val_fraction: float = 0.2,
               subset_splits: Sequence[str] = ('train',)):
    if cache not in CACHE_MODES:
      raise UserError(f'data.cache must be one of {", ".join(CACHE_MODES)}; '
                      f'received: {cache!r}')
    self.data_dir = data_dir
    self.subset = Subset(per_class, fraction)
    self.subset_splits = tuple(subset_splits)
    if self.multi_label and per_class is not None:
      raise UserError(f'data.per_class does not apply to the multi-label '
                      f'dataset {self.name!r}; use data.fraction')
    if not isinstance(val_fraction, (int, float)) or not (
        0 < val_fraction < 1):
      raise UserError(f'data.val_fraction must be in (0, 1); received: '
                      f'{val_fraction!r}')
    self.strict = strict
    self.val_fraction = val_fraction
    self.cache = cache
    self.shuffle_buffer = shuffle_buffer
    self._class_names: Optional[List[str]] = None
    self._sizes: Dict[str, int] = {}

  # What a subclass provides. ------------------------------------------------

  def load_class_names(self) -> List[str]:
    raise NotImplementedError

  def source(self, split: str) -> tf.data.Dataset:
    """(image, label) pairs of a whole split in a fixed order.

    An image is encoded bytes or uint8 pixels [H, W, C] with C in 1..4; a
    label is an integer class id, or a multi-hot vector if `multi_label`.
    """
    raise NotImplementedError

  def count(self, split: str) -> int:
    """The number of examples in a whole split; by default, counted."""
    return int(self.source(split).reduce(0, lambda n, _: n + 1))

  def stored_bytes(self, split: str) -> Optional[int]:
    """About how many bytes a split's source takes, if known cheaply."""
    del split
    return None

  def shard_source(self, split: str, num_shards: int,
                   index: int) -> tf.data.Dataset:
    """One shard of a whole split; sources with files shard by file."""
    return self.source(split).shard(num_shards, index)

  # What every dataset gets. -------------------------------------------------

  @property
  def class_names(self) -> List[str]:
    if self._class_names is None:
      names = list(self.load_class_names())
      expected = type(self).num_classes  # an int where a subclass declares it
      if isinstance(expected, int) and len(names) != expected:
        raise UserError(f'dataset {self.name!r} should have {expected} '
                        f'classes but {self.where()} has {len(names)}')
      self._class_names = names
    return self._class_names

  @property
  def num_classes(self) -> int:
    """Subclasses that know their number of classes declare it instead."""
    return len(self.class_names)

  def where(self) -> str:
    return repr(self.data_dir) if self.data_dir else 'its source'

  def check_split(self, split: str) -> None:
    if split not in self.splits:
      raise UserError(f'dataset {self.name!r} has no split {split!r}; '
                      f'it has: {", ".join(self.splits)}')

  def examples(self, split: str) -> tf.data.Dataset:
    """The split after `per_class` and `fraction`, in a fixed order."""
    self.check_split(split)
    examples = self.source(split)
    if split not in self.subset_splits:
      return examples
    if self.subset.fraction < 1:
      total = self.count(split)
      examples = take_spread(examples, total, self.subset.kept(total))
    if self.subset.per_class is not None:
      examples = cap_per_class(examples, self.num_classes,
                               self.subset.per_class, self.name)
    return examples

  def split_size(self, split: str) -> int:
    """The number of examples `pipeline` draws from per epoch."""
    self.check_split(split)
    if split not in self._sizes:
      if split not in self.subset_splits:
        size = self.count(split)
      elif self.subset.per_class is not None:
        size = self._count_capped(split)
      elif self.subset.fraction < 1:
        size = self.subset.kept(self.count(split))
      else:
        size = self.count(split)
      if size == 0:
        raise UserError(f'split {split!r} of dataset {self.name!r} in '
                        f'{self.where()} has no images')
      self._sizes[split] = size
    return self._sizes[split]

  def _count_capped(self, split: str) -> int:
    labels = self.examples(split).map(lambda image, label: label)
    return int(labels.reduce(0, lambda n, _: n + 1))

  def pipeline(self,
               split: str,
               batch_size: int,
               *,
               training: bool,
               image_size: int,
               augmentation: Augmentation,
               seed: Optional[int] = None,
               input_context: Optional[tf.distribute.InputContext] = None,
               repeat: Optional[bool] = None,
               drop_remainder: Optional[bool] = None,
               dtype: tf.DType = tf.float32) -> tf.data.Dataset:
    """Batches of (images [B, size, size, 3], soft labels [B, classes]).

    Args:
      split: one of `splits`.
      batch_size: the global batch size; with `input_context`, each
        pipeline yields the per-replica share of it.
      training: shuffle, repeat, augment and mix; otherwise one ordered pass.
      image_size: the output height and width.
      augmentation: the run's recipe: how to augment in training, and how
        to crop, resize and normalise at evaluation (its `contract`).
      seed: makes the order and the augmentation repeatable; without it,
        training order is non-deterministic, which is faster.
      input_context: from `strategy.distribute_datasets_from_function`;
        each input pipeline reads its own shard.
      repeat, drop_remainder: default to `training`.
      dtype: of the images, e.g. tf.bfloat16 for mixed precision.
    """
    self.check_split(split)
    repeat = training if repeat is None else repeat
    drop_remainder = training if drop_remainder is None else drop_remainder
    num_shards, index, batch_size = steps.shard_of(input_context, batch_size)
    num_classes = len(self.class_names)  # also checks a declared count
    examples = self._read(split, num_shards, index)
    seeds = steps.Seeds(random.randrange(2**31) if seed is None else seed,
                        index)
    if training:
      examples = examples.shuffle(self.shuffle_buffer, seed=seeds.shuffle,
                                  reshuffle_each_iteration=True)
    if repeat:
      examples = examples.repeat()
    deterministic = not training or seed is not None

    def preprocess(position, image):
      return preprocess_image(image, image_size, training, augmentation,
                              seeds.element(position), dtype)

    prepared = self._prepared(examples, preprocess, augmentation.reads_bytes,
                              deterministic, num_classes)
    batches = prepared.batch(batch_size, drop_remainder=drop_remainder,
                             num_parallel_calls=tf.data.AUTOTUNE)
    if training and (augmentation.mixup_alpha or augmentation.cutmix_alpha):
      batches = steps.mix(batches, augmentation, seeds)
    return steps.tuned(batches, deterministic)

  def _prepared(self, examples: tf.data.Dataset,
                preprocess: Callable[[tf.Tensor, tf.Tensor], tf.Tensor],
                reads_bytes: bool, deterministic: bool,
                num_classes: int) -> tf.data.Dataset:
    """(image, soft label) of each example, its image decoded, then
    preprocessed by `preprocess(position, image)`; a recipe that reads the
    bytes (V1's) preprocesses in the decoding step instead."""
    decoded = steps.decode(examples, deterministic, not self.strict,
                           preprocess if reads_bytes else None)

    def prepare(position, image, label):
      if not reads_bytes:
        image = preprocess(position, image)
      return image, self._soft_label(label, num_classes)

    return decoded.map(prepare, num_parallel_calls=tf.data.AUTOTUNE,
                       deterministic=deterministic)

  def distribute_fn(
      self, split: str, batch_size: int, **kwargs: Any
  ) -> Callable[[tf.distribute.InputContext], tf.data.Dataset]:
    """A `dataset_fn` for `strategy.distribute_datasets_from_function`."""
    return lambda context: self.pipeline(split, batch_size,
                                         input_context=context, **kwargs)

  def _read(self, split: str, num_shards: int,
            index: int) -> tf.data.Dataset:
    """One input pipeline's shard of a split, subset and maybe cached."""
    if self.subset.everything or split not in self.subset_splits:
      examples = self.shard_source(split, num_shards, index)
    else:
      examples = self.examples(split).shard(num_shards, index)
    if self._should_cache(split):
      examples = examples.cache()
    return examples

  def _soft_label(self, label: tf.Tensor, num_classes: int) -> tf.Tensor:
    if self.multi_label:
      return tf.cast(label, tf.float32)
    return tf.one_hot(checked_label(label, num_classes, self.name),
                      num_classes)

  def _should_cache(self, split: str) -> bool:
    if self.cache != 'auto':
      return self.cache == 'memory'
    stored = self.stored_bytes(split)
    return stored is not None and stored < AUTO_CACHE_BYTES


def get_dataset(name: str, data_dir: Optional[str] = None,
                **kwargs: Any) -> Dataset:
  """The registered dataset `name`, reading from `data_dir` if given."""
  return DATASETS.get(name)(data_dir, **kwargs)


def list_datasets() -> List[str]:
  return DATASETS.names()


def from_spec(data: DataSpec, data_dir: Optional[str] = None) -> Dataset:
  """The dataset a run's data spec names.

  `data_dir` (the `--data_dir` flag) wins over `data.data_dir`.
  """
  return get_dataset(data.dataset, data_dir or data.data_dir,
                     per_class=data.per_class, fraction=data.fraction,
                     strict=data.strict, cache=data.cache,
                     shuffle_buffer=data.shuffle_buffer,
                     val_fraction=data.val_fraction,
                     subset_splits=(data.train_split,))


def bind(cfg: Any, data_dir: Optional[str] = None) -> Dataset:
  """The dataset a run config names; also sets `model.num_classes` from it,
  the last step of the config chain before a run builds its specs.

  A `model.num_classes` the user set must agree with the dataset. Every
  value and the augmentation recipe are checked first, so that bad ones
  fail before any data is read.
  """
  specs = build_specs(cfg)
  Augmentation.from_specs(specs)
  dataset = from_spec(specs.data, data_dir)
  if cfg.model.num_classes is None:
    cfg.model.num_classes = dataset.num_classes
  elif cfg.model.num_classes != dataset.num_classes:
    raise UserError(f'model.num_classes={cfg.model.num_classes} but dataset '
                    f'{dataset.name!r} has {dataset.num_classes} classes; '
                    f'leave model.num_classes unset to take the dataset\'s')
  return dataset
