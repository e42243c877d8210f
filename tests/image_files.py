"""Writes real image files for tests: JPEG and PNG through TensorFlow's
encoders, BMP and GIF through Pillow's; class folders of them; and
TFRecord files of encoded images, ImageNet's among them; and small
checks that image-op tests share."""
import io
import os
from typing import Iterable, Mapping, Optional, Sequence, Tuple

import numpy as np
from PIL import Image
import tensorflow as tf


def pixels(height: int, width: int, channels: int = 3,
           seed: int = 0) -> np.ndarray:
  """A smooth random image, so that JPEG keeps it recognisable."""
  rng = np.random.default_rng(seed)
  coarse = rng.integers(0, 256, (4, 4, channels)).astype(np.float32)
  image = tf.image.resize(coarse, [height, width]).numpy()
  return np.clip(image, 0, 255).astype(np.uint8)


def encode(image: np.ndarray, fmt: str) -> bytes:
  """`image` [H, W, C] uint8 encoded as 'jpeg', 'png', 'bmp' or 'gif'."""
  if fmt == 'jpeg':
    return tf.io.encode_jpeg(image).numpy()
  if fmt == 'png':
    return tf.io.encode_png(image).numpy()
  mode = {1: 'L', 3: 'RGB', 4: 'RGBA'}[image.shape[-1]]
  picture = Image.fromarray(image.squeeze(-1) if mode == 'L' else image, mode)
  buffer = io.BytesIO()
  picture.save(buffer, format=fmt.upper())
  return buffer.getvalue()


def write(path: str, image: Optional[np.ndarray] = None, fmt: str = 'jpeg',
          data: Optional[bytes] = None) -> str:
  """Writes an encoded image (or raw `data`) to `path`, making folders."""
  os.makedirs(os.path.dirname(path), exist_ok=True)
  with open(path, 'wb') as f:
    f.write(encode(image, fmt) if data is None else data)
  return path


# (class, file name, format, height, width, channels) of one image file.
ImageFile = Tuple[str, str, str, int, int, int]


def write_classes(folder: str, files: Sequence[ImageFile],
                        seed: int = 0) -> None:
  """Writes each of `files` to folder/<class>/<file name>, each image drawn
  with its own seed from `seed` on."""
  for i, (label, name, fmt, height, width, channels) in enumerate(files):
    write(os.path.join(folder, label, name),
          pixels(height, width, channels, seed + i), fmt)


def bytes_feature(value: bytes) -> tf.train.Feature:
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def int64_feature(values: Sequence[int]) -> tf.train.Feature:
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def write_records(path: str,
                  examples: Iterable[Mapping[str, tf.train.Feature]]) -> None:
  """Writes one `tf.train.Example` of the given features per example."""
  with tf.io.TFRecordWriter(str(path)) as writer:
    for features in examples:
      writer.write(tf.train.Example(features=tf.train.Features(
          feature=features)).SerializeToString())


def write_imagenet(root: str) -> str:
  """ImageNet's TFRecord layout in small: 22 train files of 2 records and 2
  validation files of 3. Labels are 1-based and encode the file and record,
  so that splits can be told apart: train file i holds 1 + 2i and 2 + 2i,
  validation file i 900 + 3i to 902 + 3i."""
  jpeg = encode(pixels(20, 30), 'jpeg')
  for i in range(22):
    write_records(os.path.join(root, f'train-{i:05d}-of-00022'),
                  [{'image/encoded': bytes_feature(jpeg),
                    'image/class/label': int64_feature([1 + 2 * i + j])}
                   for j in range(2)])
  for i in range(2):
    write_records(os.path.join(root, f'validation-{i:05d}-of-00002'),
                  [{'image/encoded': bytes_feature(jpeg),
                    'image/class/label': int64_feature([900 + 3 * i + j])}
                   for j in range(3)])
  return str(root)


def random_image(height=32, width=32, low=20, high=200, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(low, high, (height, width, 3)).astype(np.uint8)


def run_in_map(fn, *elements):
  """Runs `fn(*elements)` inside `Dataset.map` with every dimension unknown
  but the channels of images; returns the output's spec and value."""
  def spec(element):
    shape = [None] * np.ndim(element)
    if len(shape) == 3:
      shape[-1] = np.shape(element)[-1]
    return tf.TensorSpec(shape, tf.as_dtype(np.asarray(element).dtype))
  signature = tuple(spec(e) for e in elements)
  dataset = tf.data.Dataset.from_generator(lambda: [elements],
                                           output_signature=signature)
  dataset = dataset.map(fn)
  return dataset.element_spec, next(iter(dataset))


def filled_box(mask):
  """The rows and columns `mask` covers; asserts they form a rectangle."""
  rows = np.flatnonzero(mask.any(axis=1))
  cols = np.flatnonzero(mask.any(axis=0))
  box = np.zeros_like(mask)
  box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
  np.testing.assert_array_equal(mask, box)
  return rows, cols


def write_predict_folder(root) -> None:
  """`a/one.jpg`, `b/two.PNG`, a corrupt `b/broken.jpg` and a text file:
  what predict reads, and what it must report rather than fail on."""
  write(os.path.join(root, 'a', 'one.jpg'), pixels(40, 30))
  write(os.path.join(root, 'b', 'two.PNG'), pixels(20, 20), 'png')
  write(os.path.join(root, 'b', 'broken.jpg'), data=b'not an image')
  with open(os.path.join(root, 'notes.txt'), 'w') as f:
    f.write('not an image')
