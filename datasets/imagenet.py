"""ImageNet-1k and ImageNet-21k from TFRecord files.

ImageNet-1k records are those of the TPU tooling's `imagenet_to_gcs.py`:
an `image/encoded` JPEG and a 1-based `image/class/label`, in 1,024
`train-*` and 128 `validation-*` files. As in the original, the first 20
train files are held out as `minival` and `train` reads the other 1,004, so
the two never overlap; `trainval` reads all of them and `eval` the
validation files.

ImageNet-21k (fall 2011, 21,843 classes) records hold `image` and a list
of `labels`; it is multi-label (multi-hot labels; see `train.loss_type`). Its first 16 files
are `eval` and the next 4 `minival`.

Neither is downloaded: convert the data and pass `--data_dir`.
"""
import os
from typing import ClassVar, Dict, List, Mapping, NamedTuple, Optional

import tensorflow as tf
import tensorflow_datasets as tfds

from datasets.base import Dataset
from hparams.errors import UserError


class Files(NamedTuple):
  """A split as a file pattern and a slice of its sorted matches; and, for
  the standard conversion, how many files match and how many examples the
  slice holds."""
  pattern: str
  start: int = 0
  stop: Optional[int] = None
  standard_matches: int = 0
  standard_examples: int = 0


class TFRecordDataset(Dataset):
  """Images in TFRecord files; subclasses set `files` and `parse`."""
  files: ClassVar[Mapping[str, Files]] = {}

  def __init_subclass__(cls, **kwargs):
    if 'files' in cls.__dict__:
      cls.splits = tuple(cls.files)
    super().__init_subclass__(**kwargs)

  def parse(self, record: tf.Tensor):
    raise NotImplementedError

  def _matches(self, split: str) -> List[str]:
    spec = self.files[split]
    if not self.data_dir:
      raise UserError(f'dataset {self.name!r} reads TFRecord files and is '
                      f'not downloaded; pass --data_dir. {self.download_hint}')
    if not tf.io.gfile.isdir(self.data_dir):
      raise UserError(f'data_dir {self.data_dir!r} of dataset {self.name!r} '
                      f'does not exist')
    return sorted(tf.io.gfile.glob(os.path.join(self.data_dir,
                                                spec.pattern)))

  def filenames(self, split: str) -> List[str]:
    spec = self.files[split]
    matches = self._matches(split)
    names = matches[spec.start:spec.stop]
    if not names:
      raise UserError(f'no TFRecord files for split {split!r} of dataset '
                      f'{self.name!r}: {len(matches)} files match '
                      f'{spec.pattern!r} in {self.data_dir!r} and it takes '
                      f'[{spec.start}:{spec.stop or ""}] of them')
    return names

  def _records(self, names: List[str]) -> tf.data.Dataset:
    records = tf.data.Dataset.from_tensor_slices(names).interleave(
        lambda name: tf.data.TFRecordDataset(name, buffer_size=8 << 20),
        cycle_length=16, num_parallel_calls=tf.data.AUTOTUNE,
        deterministic=True)
    return records.map(self.parse, num_parallel_calls=tf.data.AUTOTUNE)

  def source(self, split: str) -> tf.data.Dataset:
    return self._records(self.filenames(split))

  def shard_source(self, split: str, num_shards: int,
                   index: int) -> tf.data.Dataset:
    names = self.filenames(split)
    if len(names) >= num_shards:  # each pipeline reads its own files
      return self._records(names[index::num_shards])
    return self._records(names).shard(num_shards, index)

  def count(self, split: str) -> int:
    spec = self.files[split]
    if spec.standard_matches and len(self._matches(split)) == \
        spec.standard_matches:
      return spec.standard_examples
    records = tf.data.TFRecordDataset(self.filenames(split))
    return int(records.reduce(0, lambda n, _: n + 1))

  def stored_bytes(self, split: str) -> int:
    return sum(tf.io.gfile.stat(name).length
               for name in self.filenames(split))


class ImageNet(TFRecordDataset):
  name = 'imagenet'
  num_classes = 1000
  download_hint = ('Convert ImageNet with imagenet_to_gcs.py from '
                   'github.com/tensorflow/tpu (tools/datasets), or use '
                   '--dataset_cfg with data.dataset=imagenet2012 for tfds.')
  files = {
      'train': Files('train-*', 20, None, 1024, 1_256_144),
      'minival': Files('train-*', 0, 20, 1024, 25_021),
      'eval': Files('validation-*', 0, None, 128, 50_000),
      'trainval': Files('train-*', 0, None, 1024, 1_281_167),
  }
  _FEATURES: ClassVar[Dict[str, tf.io.FixedLenFeature]] = {
      'image/encoded': tf.io.FixedLenFeature([], tf.string),
      'image/class/label': tf.io.FixedLenFeature([], tf.int64),
  }

  def load_class_names(self) -> List[str]:
    # WordNet ids in label order, as tfds's imagenet2012 lists them.
    return list(tfds.builder('imagenet2012').info.features['label'].names)

  def parse(self, record):
    example = tf.io.parse_single_example(record, self._FEATURES)
    # Labels are 1-based; 0 was reserved for a background class.
    return example['image/encoded'], example['image/class/label'] - 1


class ImageNet21k(TFRecordDataset):
  name = 'imagenet21k'
  num_classes = 21_843
  multi_label = True
  download_hint = 'Convert ImageNet-21k (fall 2011) to TFRecord files.'
  files = {
      'train': Files('imagenet21k*', 20, None),
      'minival': Files('imagenet21k*', 16, 20),
      'eval': Files('imagenet21k*', 0, 16),
  }
  _FEATURES: ClassVar[Dict[str, tf.io.FixedLenFeature]] = {
      'image': tf.io.FixedLenFeature([], tf.string),
      'labels': tf.io.FixedLenSequenceFeature([], tf.int64,
                                              allow_missing=True),
  }

  def load_class_names(self) -> List[str]:
    return [str(label) for label in range(self.num_classes)]

  def parse(self, record):
    example = tf.io.parse_single_example(record, self._FEATURES)
    hot = tf.scatter_nd(example['labels'][:, None],
                        tf.ones_like(example['labels'], tf.float32),
                        [self.num_classes])
    return example['image'], tf.minimum(hot, 1.0)
