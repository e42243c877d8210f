"""ImageNet-1k and -21k from TFRecord files that the tests write: their
splits, labels and class lists."""
import numpy as np
import pytest

import datasets
from efficientnetv2_tf.preprocessing import Augmentation
from hparams.errors import UserError
from tests import image_files


@pytest.fixture(scope='module')
def imagenet_dir(tmp_path_factory):
  return image_files.write_imagenet(str(tmp_path_factory.mktemp('imagenet')))


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


def test_imagenet21k_labels_are_multi_hot(tmp_path):
  jpeg = image_files.encode(image_files.pixels(16, 16), 'jpeg')
  for i in range(21):
    image_files.write_records(
        str(tmp_path / f'imagenet21k-{i:05d}'),
        [{'image': image_files.bytes_feature(jpeg),
          'labels': image_files.int64_feature([i, 21842])}])
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
