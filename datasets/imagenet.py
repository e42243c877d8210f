"""ImageNet-1k and ImageNet-21k from TFRecord files.

ImageNet-1k records are those of the TPU tooling's `imagenet_to_gcs.py`:
an `image/encoded` JPEG and a 1-based `image/class/label`, in 1,024
`train-*` and 128 `validation-*` files. As in the original, the first 20
train files are held out as `minival` and `train` reads the other 1,004, so
the two never overlap; `trainval` reads all of them and `eval` the
validation files.

ImageNet-21k (fall 2011, 21,843 classes) records hold `image` and a list
of `labels`; it is multi-label (multi-hot labels; see `train.loss_type`).
Its first 16 files are `eval` and the next 4 `minival`.

Neither is downloaded: convert the data and pass `--data_dir`.
"""
from typing import ClassVar, Dict, List

import tensorflow as tf
import tensorflow_datasets as tfds

from datasets.tfrecord import Files
from datasets.tfrecord import TFRecordDataset


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
