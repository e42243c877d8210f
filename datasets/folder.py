"""Folders of images, one sub-folder per class.

`image_folder` reads either of two layouts under `--data_dir`:

    data_dir/train/<class>/*.jpg     data_dir/<class>/*.jpg
    data_dir/val/<class>/*.jpg
    data_dir/test/<class>/*.jpg

Split folders may also be called `training`, `training_set`, `valid`,
`validation`, `validation_set` or `testing`, `test_set`. The `eval` split
is the validation folder, else the test folder; where there is neither (or
with the single-folder layout) a fixed `val_fraction` of each class is held
out of `train` for it. Class names are the training sub-folder names,
sorted; sub-folders of a class are searched too. JPEG, PNG, BMP and GIF
files are read, grayscale and RGBA alike.

Files are checked when listed: one that is empty, not an image or cut short
is skipped and counted, with a warning naming the first few, or, with
`strict=True`, fails the run naming it.

A folder dataset of your own is a subclass:

    >>> class Xrays(ImageFolder):
    ...   name = 'doc-xrays'
    ...   num_classes = 2
    >>> Xrays('/no/such/dir').class_names
    Traceback (most recent call last):
    ...
    hparams.errors.UserError: data_dir '/no/such/dir' of dataset 'doc-xrays' does not exist
"""
import concurrent.futures
import os
import struct
from typing import (BinaryIO, ClassVar, Dict, List, NamedTuple, Optional,
                    Sequence, Tuple)

from absl import logging
import numpy as np
import tensorflow as tf

from datasets.base import Dataset
from datasets.subsets import holdout
from efficientnetv2_tf.preprocessing import IMAGE_EXTENSIONS
from hparams.errors import UserError

SPLIT_FOLDERS = {
    'train': ('train', 'training', 'training_set', 'train_set'),
    'val': ('val', 'valid', 'validation', 'validation_set', 'val_set'),
    'test': ('test', 'testing', 'test_set'),
}
# How many unreadable files a warning names.
NAMED_IN_WARNING = 5
_SIGNATURES = {
    'jpeg': (b'\xff\xd8\xff',),
    'png': (b'\x89PNG\r\n\x1a\n',),
    'gif': (b'GIF87a', b'GIF89a'),
    'bmp': (b'BM',),
}


def _bmp_problem(f: BinaryIO) -> Optional[str]:
  """What TensorFlow's BMP decoder would get wrong in the open BMP `f`.

  It reads 24- and 32-bit pixels, and 8-bit ones as grey levels: right
  only where the palette is the grey ramp. It cannot read other depths.
  """
  f.seek(10)
  header = f.read(20)
  if len(header) < 20:
    return 'truncated or damaged'
  pixels, header_size = struct.unpack('<II', header[:8])
  bits = struct.unpack('<H', header[18:20])[0]
  if bits in (24, 32):
    return None
  if bits == 8:
    f.seek(14 + header_size)
    palette = f.read(min(1024, max(0, pixels - 14 - header_size)))
    ramp = b''.join(bytes((i, i, i, 0)) for i in range(len(palette) // 4))
    if palette and palette[:len(ramp)] == ramp:
      return None
    return ('an 8-bit BMP with a colour palette, which TensorFlow would '
            'read as grey levels; save it as PNG')
  return (f'a {bits}-bit BMP, which TensorFlow cannot read (it reads 24- '
          'and 32-bit ones); save it as PNG')


def image_problem(path: str) -> Optional[str]:
  """Why the file at `path` is not a whole image, or None if it looks whole.

  Reads the first and last bytes: the format's signature and its end
  marker. A file whose end looks wrong is decoded to decide, since some
  writers append data after the image.
  """
  try:
    size = os.path.getsize(path)
    with open(path, 'rb') as f:
      head = f.read(16)
      bmp_problem = _bmp_problem(f) if head.startswith(b'BM') else None
      f.seek(max(0, size - 16))
      tail = f.read()
  except OSError as e:
    return f'unreadable ({e.strerror})'
  if not size:
    return 'empty'
  kind = next((kind for kind, signatures in _SIGNATURES.items()
               if head.startswith(signatures)), None)
  if kind is None:
    return 'not a JPEG, PNG, BMP or GIF image'
  if bmp_problem:
    return bmp_problem
  whole = {
      'jpeg': tail.rstrip(b'\0').endswith(b'\xff\xd9'),
      'png': b'IEND' in tail,
      'gif': tail.endswith(b';'),
      'bmp': int.from_bytes(head[2:6], 'little') <= size,
  }[kind]
  if whole:
    return None
  try:
    tf.io.decode_image(tf.io.read_file(path), channels=3,
                       expand_animations=False)
  except (tf.errors.InvalidArgumentError, tf.errors.DataLossError):
    return 'truncated or damaged'
  return None


class Listing(NamedTuple):
  paths: List[str]
  labels: np.ndarray
  num_bytes: int


class ImageFolder(Dataset):
  """Images in class sub-folders; see the module docstring."""
  name = 'image_folder'
  splits = ('train', 'eval', 'test')
  download_hint = 'Pass data_dir=PATH of the folder with the images.'

  # Subclasses may name the folders their data comes in.
  split_folders: ClassVar[Dict[str, Sequence[str]]] = SPLIT_FOLDERS

  def __init__(self, *args, **kwargs):
    super().__init__(*args, **kwargs)
    self._listings: Dict[str, Listing] = {}
    self._folders: Dict[str, Tuple[List[str], np.ndarray, int]] = {}
    self._layout: Optional[Dict[str, str]] = None
    self.skipped = 0  # unreadable files left out, over all listed splits

  # The layout. --------------------------------------------------------------

  def root(self) -> str:
    if not self.data_dir:
      raise UserError(f'dataset {self.name!r} needs data_dir. '
                      f'{self.download_hint}')
    root = os.path.expanduser(self.data_dir)
    if not os.path.isdir(root):
      raise UserError(f'data_dir {self.data_dir!r} of dataset {self.name!r} '
                      f'does not exist')
    return root

  def layout(self) -> Dict[str, str]:
    """Maps 'train', 'val' and 'test' to the folders found for them."""
    if self._layout is None:
      root = _unwrap(self.root())
      found = {}
      entries = {entry.lower(): entry for entry in _subfolders(root)}
      for role, names in self.split_folders.items():
        match = next((entries[name] for name in names if name in entries),
                     None)
        if match:
          found[role] = _unwrap(os.path.join(root, match), names)
      if found and 'train' not in found:
        raise UserError(f'{root!r} has {", ".join(sorted(found.values()))} '
                        f'but no training folder; name it one of '
                        f'{", ".join(self.split_folders["train"])}')
      self._layout = found or {'train': root}
    return self._layout

  def load_class_names(self) -> List[str]:
    folder = self.layout()['train']
    names = _subfolders(folder)
    if not names:
      loose = [n for n in os.listdir(folder) if _is_image_name(n)]
      detail = (f'it holds {len(loose)} images directly' if loose else
                'it is empty')
      raise UserError(f'{folder!r} has no class sub-folders ({detail}); '
                      f'put each class in its own sub-folder')
    return names

  # The files. ---------------------------------------------------------------

  def _folder_of(self, split: str) -> Tuple[str, bool]:
    """The folder a split reads, and whether it is carved out of train."""
    layout = self.layout()
    if split == 'train':
      return layout['train'], 'val' not in layout and 'test' not in layout
    if split == 'eval':
      for role in ('val', 'test'):
        if role in layout:
          return layout[role], False
      return layout['train'], True
    if 'test' not in layout:
      raise UserError(f'dataset {self.name!r} has no test folder in '
                      f'{self.root()!r}; name it one of '
                      f'{", ".join(self.split_folders["test"])}')
    return layout['test'], False

  def listing(self, split: str) -> Listing:
    self.check_split(split)
    if split not in self._listings:
      folder, carved = self._folder_of(split)
      if folder not in self._folders:  # train and eval may share one
        self._folders[folder] = self._list(folder)
      paths, labels, num_bytes = self._folders[folder]
      if carved:
        evaluation = holdout(labels, self.val_fraction)
        keep = evaluation if split == 'eval' else ~evaluation
        paths = [path for path, k in zip(paths, keep) if k]
        labels = labels[keep]
        num_bytes = int(num_bytes * keep.mean())
      self._listings[split] = Listing(paths, labels, num_bytes)
    return self._listings[split]

  def _list(self, folder: str) -> Tuple[List[str], np.ndarray, int]:
    classes = self.class_names
    index = {name: i for i, name in enumerate(classes)}
    present = _subfolders(folder)
    unknown = [name for name in present if name not in index]
    if unknown:
      raise UserError(f'{os.path.join(folder, unknown[0])!r} is not one of '
                      f'the {len(classes)} training classes')
    candidates, labels = [], []
    for name in present:
      files = _image_files(os.path.join(folder, name))
      if not files:
        raise UserError(f'class folder {os.path.join(folder, name)!r} has '
                        f'no images ({", ".join(IMAGE_EXTENSIONS)})')
      candidates += files
      labels += [index[name]] * len(files)
    if not candidates:
      raise UserError(f'{folder!r} has no images')
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
      problems = list(pool.map(image_problem, candidates))
    bad = [(path, problem) for path, problem in zip(candidates, problems)
           if problem]
    if bad and self.strict:
      raise UserError(f'unreadable image {bad[0][0]!r}: {bad[0][1]} '
                      f'(data.strict=true; set it false to skip such files)')
    if bad:
      named = '; '.join(f'{path} ({problem})'
                        for path, problem in bad[:NAMED_IN_WARNING])
      logging.warning('skipped %d unreadable image(s) of %d in %s: %s%s',
                      len(bad), len(candidates), folder, named,
                      ' ...' if len(bad) > NAMED_IN_WARNING else '')
    good = [i for i, problem in enumerate(problems) if not problem]
    self.skipped += len(bad)
    # A fixed shuffle mixes the classes, so that `fraction` and `per_class`
    # take a spread of images rather than the first folders.
    order = np.random.default_rng(0).permutation(good)
    paths = [candidates[i] for i in order]
    return (paths, np.asarray(labels, np.int32)[order],
            sum(os.path.getsize(path) for path in paths))

  # The dataset interface. ---------------------------------------------------

  def source(self, split: str) -> tf.data.Dataset:
    return _read(self._files(split))

  def shard_source(self, split: str, num_shards: int,
                   index: int) -> tf.data.Dataset:
    # The list is sharded, so that each input pipeline reads its own files.
    return _read(self._files(split).shard(num_shards, index))

  def _files(self, split: str) -> tf.data.Dataset:
    listing = self.listing(split)
    return tf.data.Dataset.from_tensor_slices((listing.paths,
                                               listing.labels))

  def count(self, split: str) -> int:
    return len(self.listing(split).paths)

  def stored_bytes(self, split: str) -> int:
    return self.listing(split).num_bytes


def _read(files: tf.data.Dataset) -> tf.data.Dataset:
  """(bytes, label) for each (path, label)."""
  return files.map(lambda path, label: (tf.io.read_file(path), label),
                   num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)


def _is_image_name(name: str) -> bool:
  return name.lower().endswith(IMAGE_EXTENSIONS) and not name.startswith('.')


def _subfolders(folder: str) -> List[str]:
  return sorted(entry.name for entry in os.scandir(folder)
                if entry.is_dir() and not entry.name.startswith('.'))


def _unwrap(folder: str, names: Optional[Sequence[str]] = None) -> str:
  """Descends through folders that hold nothing but one folder (named one
  of `names`, if given), as archives often wrap their content
  (`birds/birds/train`, `train/train/<class>`)."""
  while True:
    entries = [entry for entry in os.scandir(folder)
               if not entry.name.startswith('.')]
    if len(entries) != 1 or not entries[0].is_dir() or (
        names is not None and entries[0].name.lower() not in names):
      return folder
    folder = entries[0].path


def _image_files(folder: str) -> List[str]:
  found = []
  for parent, dirs, names in os.walk(folder):
    dirs[:] = sorted(d for d in dirs if not d.startswith('.'))
    found += [os.path.join(parent, n) for n in sorted(names)
              if _is_image_name(n)]
  return found
