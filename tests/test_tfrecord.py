"""TFRecord datasets: files per split, counts and per-pipeline files."""
import os

import pytest
import tensorflow as tf

from datasets.tfrecord import Files
from datasets.tfrecord import TFRecordDataset
from hparams.errors import UserError
from tests import image_files

FEATURES = {
    'image/encoded': tf.io.FixedLenFeature([], tf.string),
    'image/class/label': tf.io.FixedLenFeature([], tf.int64),
}


class Records(TFRecordDataset):
  """ImageNet's layout (see `image_files.write_imagenet`), labels as
  stored; 'counted' and 'standard' differ only in the standard file count."""
  name = 'test-records'
  files = {
      'held': Files('train-*', 0, 20),
      'counted': Files('validation-*', 0, None, 3, 1000),
      'standard': Files('validation-*', 0, None, 2, 1000),
  }

  def load_class_names(self):
    return [str(label) for label in range(1000)]

  def parse(self, record):
    example = tf.io.parse_single_example(record, FEATURES)
    return example['image/encoded'], example['image/class/label']


@pytest.fixture(scope='module')
def records_dir(tmp_path_factory):
  return image_files.write_imagenet(str(tmp_path_factory.mktemp('records')))


def _labels(examples):
  return sorted(int(label) for _, label in examples)


def test_splits_are_the_keys_of_files():
  assert Records.splits == ('held', 'counted', 'standard')


def test_sizes_are_counted_unless_the_files_are_the_standard_set(
    records_dir):
  dataset = Records(records_dir)
  assert dataset.split_size('counted') == 6
  assert dataset.split_size('standard') == 1000


def test_each_input_pipeline_reads_its_own_files(records_dir):
  dataset = Records(records_dir)
  shards = [_labels(dataset.shard_source('held', 4, i)) for i in range(4)]
  assert sorted(sum(shards, [])) == list(range(1, 41))
  assert shards[1] == [3, 4, 11, 12, 19, 20, 27, 28, 35, 36]


def test_fewer_files_than_pipelines_are_shared_by_record(records_dir):
  dataset = Records(records_dir)
  shards = [_labels(dataset.shard_source('counted', 4, i)) for i in range(4)]
  assert sorted(sum(shards, [])) == _labels(dataset.source('counted'))
  assert [len(shard) for shard in shards] == [2, 2, 1, 1]


def test_a_data_dir_under_the_home_folder_may_start_with_a_tilde(
    records_dir, monkeypatch):
  home, folder = os.path.split(records_dir)
  monkeypatch.setenv('HOME', home)
  assert Records(os.path.join('~', folder)).split_size('counted') == 6


def test_missing_files_name_the_directory_and_pattern(tmp_path):
  with pytest.raises(UserError, match=r"no TFRecord files for split 'held' "
                     r"of dataset 'test-records': 0 files match 'train-\*' "
                     f"in '{tmp_path}' and it takes \\[0:20\\]"):
    Records(str(tmp_path)).split_size('held')
  with pytest.raises(UserError, match='pass data_dir'):
    Records().split_size('held')
  with pytest.raises(UserError, match="data_dir '/no/such' of dataset "
                     "'test-records' does not exist"):
    Records('/no/such').split_size('held')
