"""Images in TFRecord files, split by slices of their sorted file names.

A subclass names each split's files (`files`) and how to read a record
(`parse`); the splits are the keys of `files`:

    >>> class Scans(TFRecordDataset):
    ...   name = 'doc-scan-records'
    ...   files = {'train': Files('scans-*', 2), 'eval': Files('scans-*', 0, 2)}
    >>> Scans.splits
    ('train', 'eval')

Each input pipeline reads its own files when there are enough of them.
"""
import os
from typing import ClassVar, List, Mapping, NamedTuple, Optional

import tensorflow as tf

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
                      f'not downloaded; pass data_dir. {self.download_hint}')
    # `--data_dir=~/x` reaches us unexpanded: the shell expands `~` only at
    # the start of a word or of an assignment's value.
    root = os.path.expanduser(self.data_dir)
    if not tf.io.gfile.isdir(root):
      raise UserError(f'data_dir {self.data_dir!r} of dataset {self.name!r} '
                      f'does not exist')
    return sorted(tf.io.gfile.glob(os.path.join(root, spec.pattern)))

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
