"""Writes real image files for tests: JPEG and PNG through TensorFlow's
encoders, BMP and GIF through Pillow's."""
import io
import os
from typing import Optional

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
