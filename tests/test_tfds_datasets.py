"""tfds-backed datasets, through `tfds.testing.mock_data` (no download)."""
import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import datasets
import hparams
from datasets.tfds_datasets import TfdsDataset
from efficientnetv2_tf.preprocessing import Augmentation
from hparams.errors import UserError

TFDS_DATASETS = {
    'cifar10': 10, 'cifar100': 100, 'flowers': 102, 'tf_flowers': 5,
    'cars196': 196, 'imagenet2012': 1000, 'fashion_mnist': 10, 'mnist': 10,
    'imagenette': 10,
}


def _encoded_examples(self, *args, **kwargs):
  """Stands in for tfds's random examples where those are invalid (the
  mock draws cars196 boxes with min > max)."""
  del self, args, kwargs
  jpeg = tf.io.encode_jpeg(tf.zeros([12, 16, 3], tf.uint8))
  return tf.data.Dataset.from_tensors(
      {'image': jpeg, 'label': tf.constant(3, tf.int64)}).repeat(6)


@pytest.mark.parametrize('name, num_classes', sorted(TFDS_DATASETS.items()))
def test_tfds_dataset_yields_batches(name, num_classes, tmp_path):
  mock = {'as_dataset_fn': _encoded_examples} if name == 'cars196' else {}
  with tfds.testing.mock_data(num_examples=6, **mock):
    dataset = datasets.get_dataset(name, str(tmp_path))
    assert dataset.num_classes == num_classes
    assert dataset.split_size('train') == 6  # counted: mocks have no metadata
    images, labels = next(iter(dataset.pipeline(
        'train', 4, training=True, image_size=32, seed=0,
        augmentation=Augmentation('none'))))
  assert images.shape == (4, 32, 32, 3) and labels.shape == (4, num_classes)
  assert float(tf.reduce_max(tf.abs(images))) <= 1.0 + 1e-6


def test_grayscale_fashion_mnist_becomes_rgb(tmp_path):
  with tfds.testing.mock_data(num_examples=3):
    dataset = datasets.get_dataset('fashion_mnist', str(tmp_path))
    image, _ = next(iter(dataset.source('train')))
    assert image.dtype == tf.string  # decoded later, in parallel
    assert tf.io.decode_png(image).shape[-1] == 1
    images, _ = next(iter(dataset.pipeline(
        'eval', 3, training=False, image_size=28,
        augmentation=Augmentation('none'))))
  np.testing.assert_array_equal(images[..., 0], images[..., 2])


def test_split_sizes_come_from_tfds_metadata(monkeypatch):
  class Info:
    splits = {'train': type('Split', (), {'num_examples': 123,
                                          'num_bytes': 456})()}
  dataset = datasets.get_dataset('cifar10')
  monkeypatch.setattr(dataset, 'builder',
                      lambda: type('Builder', (), {'info': Info})())
  assert dataset.split_size('train') == 123
  assert dataset.stored_bytes('train') == 456


def test_a_slice_of_a_split_is_sized_for_the_cache(monkeypatch, tmp_path):
  # tfds gives a slice such as tf_flowers' 'train[:80%]' 0 bytes; at its
  # share of the split's bytes it is small enough to cache.
  template = tfds.core.ShardedFileTemplate(
      data_dir=str(tmp_path), dataset_name='tf_flowers', split='train',
      filetype_suffix='tfrecord')
  splits = tfds.core.SplitDict([tfds.core.SplitInfo(
      name='train', shard_lengths=[3670], num_bytes=228_000_000,
      filename_template=template)])
  assert splits['train[:80%]'].num_bytes == 0
  dataset = datasets.get_dataset('tf_flowers')
  info = type('Info', (), {'splits': splits})
  monkeypatch.setattr(dataset, 'builder',
                      lambda: type('Builder', (), {'info': info})())
  assert dataset.count('train') == 2936
  assert dataset.stored_bytes('train') == round(228_000_000 * 2936 / 3670)
  assert dataset.stored_bytes('eval') == round(228_000_000 * 734 / 3670)
  assert dataset._should_cache('train')


@pytest.mark.parametrize('name, train, held_out', [
    ('tf_flowers', 'train[:70%]', {'eval': 'train[70%:]'}),
    ('imagenet2012', 'train[:98%]', {'minival': 'train[98%:]'}),
])
def test_held_out_slices_do_not_overlap_training(name, train, held_out):
  split_map = datasets.DATASETS.get(name).split_map
  assert split_map['train'] == train
  assert {k: split_map[k] for k in held_out} == held_out


def test_tf_flowers_holds_out_its_val_fraction():
  flowers = datasets.DATASETS.get('tf_flowers')
  assert flowers(val_fraction=0.25).split_map == {
      'train': 'train[:75%]', 'eval': 'train[75%:]'}
  cfg = hparams.get_config('efficientnetv2-b0', 'tf_flowers')
  assert datasets.bind(cfg).split_map == {'train': 'train[:70%]',
                                          'eval': 'train[70%:]'}
  with pytest.raises(UserError, match=r'data.val_fraction=0.001 leaves no '
                     'whole percent of tf_flowers'):
    flowers(val_fraction=0.001)


def test_offline_download_failure_says_how_to_pass_a_local_copy(
    monkeypatch, tmp_path):
  def offline(*args, **kwargs):
    raise ConnectionError('name resolution failed')
  monkeypatch.setattr(tfds.core.DatasetBuilder, 'download_and_prepare',
                      offline)
  dataset = datasets.get_dataset('mnist', str(tmp_path))
  with pytest.raises(UserError, match=r"could not download or prepare tfds "
                     r"dataset 'mnist' \(ConnectionError: name resolution "
                     r"failed\).*tfds build mnist --data_dir=DIR.*"
                     r"pass data_dir=DIR"):
    dataset.class_names  # pylint: disable=pointless-statement


def test_a_new_tfds_dataset_is_one_subclass(tmp_path):
  class Beans(TfdsDataset):
    name = 'test-beans'
    tfds_name = 'beans'
    split_map = {'train': 'train', 'eval': 'validation', 'test': 'test'}
  assert Beans.splits == ('train', 'eval', 'test')
  with tfds.testing.mock_data(num_examples=4):
    dataset = datasets.get_dataset('test-beans', str(tmp_path))
    assert dataset.num_classes == 3
    assert dataset.split_size('test') == 4
