"""ImageNet-1k and -21k from TFRecord files that the tests write."""
import numpy as np
import pytest
import tensorflow as tf

import datasets
from efficientnetv2_tf.preprocessing import Augmentation
from hparams.errors import UserError
from tests import image_files


def _bytes(value):
  return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value]))


def _ints(values):
  return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def _write(path, examples):
  with tf.io.TFRecordWriter(str(path)) as writer:
    for features in examples:
      writer.write(tf.train.Example(features=tf.train.Features(
          feature=features)).SerializeToString())


@pytest.fixture(scope='module')
def imagenet_dir(tmp_path_factory):
  """22 train files of 2 records and 2 validation files of 3; labels are
  1-based and encode the file and record, so splits can be told apart."""
  root = tmp_path_factory.mktemp('imagenet')
  jpeg = image_files.encode(image_files.pixels(20, 30), 'jpeg')
  for i in range(22):
    _write(root / f'train-{i:05d}-of-00022',
           [{'image/encoded': _bytes(jpeg),
             'image/class/label': _ints([1 + 2 * i + j])} for j in range(2)])
  for i in range(2):
    _write(root / f'validation-{i:05d}-of-00002',
           [{'image/encoded': _bytes(jpeg),
             'image/class/label': _ints([900 + 3 * i + j])} for j in range(3)])
  return str(root)


def _labels(dataset, split):
  return sorted(int(label) for _, label in dataset.source(split))


def test_minival_is_held_out_of_train(imagenet_dir):
  dataset = datasets.get_dataset('imagenet', imagenet_dir)
  train, minival = _labels(dataset, 'train'), _labels(dataset, 'minival')
  assert minival == list(range(40))  # the first 20 files, labels 1..40
  assert train == list(range(40, 44))
  assert not set(train) & set(minival)
  assert sorted(train + minival) == _labels(dataset, 'trainval')
  assert _labels(dataset, 'eval') == list(range(899, 905))


def test_sizes_are_counted_unless_the_files_are_the_standard_set(
    imagenet_dir):
  dataset = datasets.get_dataset('imagenet', imagenet_dir)
  assert [dataset.split_size(s) for s in ('train', 'minival', 'eval')] == [
      4, 40, 6]
  assert dataset.num_classes == 1000
  assert dataset.class_names[0] == 'n01440764'


def test_pipeline_decodes_and_one_hot_encodes(imagenet_dir):
  dataset = datasets.get_dataset('imagenet', imagenet_dir)
  images, labels = next(iter(dataset.pipeline(
      'eval', 6, training=False, image_size=32,
      augmentation=Augmentation('none'))))
  assert images.shape == (6, 32, 32, 3)
  np.testing.assert_array_equal(sorted(np.argmax(labels, 1)), range(899, 905))


def test_each_input_pipeline_reads_its_own_files(imagenet_dir):
  dataset = datasets.get_dataset('imagenet', imagenet_dir)
  shards = [sorted(int(l) for _, l in dataset.shard_source('minival', 4, i))
            for i in range(4)]
  assert sorted(sum(shards, [])) == list(range(40))
  assert shards[1] == [2, 3, 10, 11, 18, 19, 26, 27, 34, 35]


def test_missing_files_name_the_directory_and_pattern(tmp_path):
  dataset = datasets.get_dataset('imagenet', str(tmp_path))
  with pytest.raises(UserError, match=r"no TFRecord files for split 'eval' "
                     r"of dataset 'imagenet': 0 files match 'validation-\*' "
                     f"in '{tmp_path}'"):
    dataset.split_size('eval')
  with pytest.raises(UserError, match='pass --data_dir'):
    datasets.get_dataset('imagenet').split_size('eval')
  with pytest.raises(UserError, match="data_dir '/no/such' of dataset "
                     "'imagenet' does not exist"):
    datasets.get_dataset('imagenet', '/no/such').split_size('eval')


def test_imagenet21k_labels_are_multi_hot(tmp_path):
  jpeg = image_files.encode(image_files.pixels(16, 16), 'jpeg')
  for i in range(21):
    _write(tmp_path / f'imagenet21k-{i:05d}',
           [{'image': _bytes(jpeg), 'labels': _ints([i, 21842])}])
  dataset = datasets.get_dataset('imagenet21k', str(tmp_path))
  assert dataset.multi_label and dataset.num_classes == 21843
  _, labels = next(iter(dataset.pipeline(
      'train', 1, training=True, image_size=16, seed=0,
      augmentation=Augmentation('none'))))
  assert labels.shape == (1, 21843)
  np.testing.assert_array_equal(np.flatnonzero(labels[0]), [20, 21842])
  assert dataset.split_size('eval') == 16


def test_per_class_is_refused_for_multi_label_data(tmp_path):
  with pytest.raises(UserError, match='per_class does not apply to the '
                     "multi-label dataset 'imagenet21k'"):
    datasets.get_dataset('imagenet21k', str(tmp_path), per_class=5)
