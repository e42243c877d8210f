"""Dataset registration, subsets, splits and the tf.data pipeline."""
import collections
import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

import datasets
import hparams
from datasets import base
from datasets.subsets import Subset
from efficientnetv2_tf.dataset_protocol import DatasetSource
from efficientnetv2_tf.preprocessing import Augmentation
from hparams.errors import UserError
import main
from tests import image_files

# The recipe the digits preset trains with: the whole 8 px image, resized.
FT_NONE = Augmentation('ft_none')


class Stripes(datasets.Dataset):
  """A dataset defined outside the package: registered by being defined."""
  name = 'test-stripes'
  splits = ('train', 'eval')

  def load_class_names(self):
    return ['vertical', 'horizontal', 'plain']

  def source(self, split):
    count = 12 if split == 'train' else 6
    labels = np.arange(count) % 3
    images = np.zeros([count, 10, 10, 3], np.uint8)
    images[labels == 0, :, ::2] = 255
    images[labels == 1, ::2, :] = 255
    return tf.data.Dataset.from_tensor_slices((images, labels))


def test_subclass_is_registered_and_usable():
  dataset = datasets.get_dataset('Test-Stripes')
  assert isinstance(dataset, Stripes)
  assert dataset.num_classes == 3 and dataset.split_size('train') == 12
  images, labels = next(iter(dataset.pipeline(
      'eval', 6, training=False, image_size=16,
      augmentation=Augmentation('none'))))
  assert images.shape == (6, 16, 16, 3) and labels.shape == (6, 3)
  np.testing.assert_array_equal(np.argmax(labels, 1), np.arange(6) % 3)


def test_duplicate_name_raises():
  with pytest.raises(ValueError, match='already registered'):
    type('Again', (datasets.Dataset,), {'name': 'test-stripes'})


def test_unknown_name_lists_known_ones():
  with pytest.raises(UserError, match=r"unknown dataset 'cifar11'; did you "
                     r"mean 'cifar10'\? Known: .*digits"):
    datasets.get_dataset('cifar11')


def test_declared_class_count_is_checked():
  class Wrong(Stripes):
    name = 'test-wrong-count'
    num_classes = 5
  with pytest.raises(UserError, match='should have 5 classes .* has 3'):
    Wrong().class_names


def test_per_class_caps_every_class():
  dataset = datasets.get_dataset('digits', per_class=7)
  labels = [int(label) for _, label in dataset.examples('train')]
  assert collections.Counter(labels) == {c: 7 for c in range(10)}
  assert dataset.split_size('train') == 70


def test_fraction_takes_a_share_of_the_split():
  dataset = datasets.get_dataset('digits', fraction=0.1)
  full = datasets.get_dataset('digits').split_size('train')
  assert dataset.split_size('train') == math.ceil(full * 0.1)
  assert len(list(dataset.examples('train'))) == dataset.split_size('train')


class Sorted(datasets.Dataset):
  """A source sorted by class, as one built from per-class lists is."""
  name = 'test-sorted'

  def load_class_names(self):
    return ['dark', 'light']

  def source(self, split):
    labels = np.repeat([0, 1], 8 if split == 'train' else 2)
    images = (labels * 255).astype(np.uint8).reshape(-1, 1, 1, 1)
    return tf.data.Dataset.from_tensor_slices((images, labels))


def test_fraction_of_a_source_sorted_by_class_keeps_every_class():
  dataset = datasets.get_dataset('test-sorted', fraction=0.5)
  labels = [int(label) for _, label in dataset.examples('train')]
  assert collections.Counter(labels) == {0: 4, 1: 4}
  assert dataset.split_size('train') == len(labels)


def _eval_labels(dataset):
  batches = dataset.pipeline('eval', 4, training=False, image_size=8,
                             augmentation=FT_NONE)
  return np.concatenate([labels for _, labels in batches])


def test_a_label_outside_the_classes_is_an_error_not_a_zero_row():
  class OneBased(Sorted):
    name = 'test-one-based'

    def source(self, split):
      return super().source(split).map(lambda image, label: (image,
                                                              label + 1))
  np.testing.assert_array_equal(_eval_labels(Sorted()).sum(1), np.ones(4))
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    _eval_labels(OneBased())
  # main.py reports it in one line.
  assert main.data_error(raised.value) == (
      'dataset test-one-based has a label outside 0..1: 2')
  assert main.data_error(ValueError('another fault')) is None
  with pytest.raises(tf.errors.InvalidArgumentError) as raised:
    OneBased(per_class=1).split_size('train')  # counts by class
  assert main.data_error(raised.value) == (
      'dataset test-one-based has a label outside 0..1: 2')


def test_float_pixels_are_refused_rather_than_floored_to_black():
  class Floats(Sorted):
    name = 'test-float-pixels'

    def source(self, split):
      return super().source(split).map(
          lambda image, label: (tf.cast(image, tf.float32) / 255, label))
  with pytest.raises(UserError, match='uint8 pixels 0-255; received: '
                     'float32'):
    _eval_labels(Floats())


@pytest.mark.parametrize('kwargs, message', [
    ({'per_class': 0}, r'data.per_class must be a positive integer .*: 0'),
    ({'per_class': -3}, r'data.per_class .*: -3'),
    ({'fraction': 0.0}, r'data.fraction must be in \(0, 1\]; received: 0.0'),
    ({'fraction': 1.5}, r'data.fraction .*: 1.5'),
    ({'val_fraction': 1.0}, r'data.val_fraction must be in \(0, 1\)'),
    ({'cache': 'disk'}, r"data.cache must be one of auto, memory, none; "
                        r"received: 'disk'"),
])
def test_bad_subset_settings_are_rejected(kwargs, message):
  with pytest.raises(UserError, match=message):
    datasets.get_dataset('digits', **kwargs)


def test_unknown_split_is_rejected():
  with pytest.raises(UserError, match="no split 'minival'; it has: train, "
                     'eval, trainval'):
    datasets.get_dataset('digits').split_size('minival')


def _batches(dataset, count, **kwargs):
  pipeline = dataset.pipeline('train', 16, training=True, image_size=32,
                              **kwargs)
  return [b for b in pipeline.take(count).as_numpy_iterator()]


def test_seed_repeats_order_and_augmentation():
  dataset = datasets.get_dataset('digits', per_class=10)
  augmentation = Augmentation('randaug', 2, 10.0, flip=True)
  first = _batches(dataset, 3, seed=7, augmentation=augmentation)
  again = _batches(dataset, 3, seed=7, augmentation=augmentation)
  other = _batches(dataset, 3, seed=8, augmentation=augmentation)
  for (x1, y1), (x2, y2) in zip(first, again):
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
  assert not np.array_equal(first[0][0], other[0][0])


def test_training_order_is_nondeterministic_without_a_seed():
  dataset = datasets.get_dataset('digits')
  options = dataset.pipeline('train', 8, training=True, image_size=16,
                             augmentation=FT_NONE).options()
  assert options.deterministic is False
  seeded = dataset.pipeline('train', 8, training=True, image_size=16, seed=1,
                            augmentation=FT_NONE)
  assert seeded.options().deterministic is True


def test_training_pipeline_repeats_and_evaluation_covers_each_image_once():
  dataset = datasets.get_dataset('digits', per_class=3)  # 30 images
  train = dataset.pipeline('train', 16, training=True, image_size=16, seed=0,
                           augmentation=FT_NONE)
  assert len(list(train.take(5))) == 5  # more than one epoch
  evaluation = dataset.pipeline('train', 16, training=False, image_size=16,
                                augmentation=FT_NONE)
  sizes = [len(labels) for _, labels in evaluation]
  assert sizes == [16, 14]


def test_eval_batches_are_normalised_and_one_hot():
  dataset = datasets.get_dataset('digits')
  images, labels = next(iter(dataset.pipeline('eval', 32, training=False,
                                              image_size=24,
                                              augmentation=FT_NONE)))
  assert images.dtype == tf.float32 and images.shape == (32, 24, 24, 3)
  assert -1.0 <= float(tf.reduce_min(images)) < -0.9
  assert 0.9 < float(tf.reduce_max(images)) <= 1.0
  np.testing.assert_array_equal(tf.reduce_sum(labels, 1), np.ones(32))


def test_bfloat16_images():
  dataset = datasets.get_dataset('digits', per_class=2)
  images, _ = next(iter(dataset.pipeline('train', 4, training=True,
                                         image_size=16, augmentation=FT_NONE,
                                         dtype=tf.bfloat16)))
  assert images.dtype == tf.bfloat16


def test_mixing_gives_soft_labels_that_sum_to_one():
  dataset = datasets.get_dataset('digits')
  augmentation = Augmentation('none', mixup_alpha=0.4, cutmix_alpha=1.0)
  (images, labels), = _batches(dataset, 1, seed=3, augmentation=augmentation)
  np.testing.assert_allclose(labels.sum(1), np.ones(16), rtol=1e-5)
  assert (labels.max(1) < 1).any()  # some rows are mixed
  assert images.shape == (16, 32, 32, 3)


def test_input_context_shards_and_splits_the_batch():
  dataset = datasets.get_dataset('digits', per_class=4)  # 40 images
  shards = []
  for index in range(2):
    context = tf.distribute.InputContext(num_input_pipelines=2,
                                         input_pipeline_id=index,
                                         num_replicas_in_sync=2)
    pipeline = dataset.pipeline('train', 8, training=False, image_size=8,
                                augmentation=FT_NONE, input_context=context)
    batches = list(pipeline.as_numpy_iterator())
    assert batches[0][0].shape[0] == 4  # the per-replica share of 8
    shards.append(np.concatenate([images for images, _ in batches]))
  assert len(shards[0]) + len(shards[1]) == 40
  whole = np.concatenate(
      [images for images, _ in dataset.pipeline(
          'train', 40, training=False, image_size=8,
          augmentation=FT_NONE).as_numpy_iterator()])
  np.testing.assert_array_equal(whole[0::2], shards[0])
  np.testing.assert_array_equal(whole[1::2], shards[1])


def test_batch_not_divisible_by_replicas_is_rejected():
  context = tf.distribute.InputContext(1, 0, num_replicas_in_sync=3)
  with pytest.raises(UserError, match='batch size 8 is not divisible by '
                     'the 3 replicas'):
    datasets.get_dataset('digits').pipeline('train', 8, training=True,
                                            image_size=8,
                                            augmentation=FT_NONE,
                                            input_context=context)


def test_small_splits_are_cached_in_memory():
  dataset = datasets.get_dataset('digits')
  assert dataset._should_cache('train')
  assert not datasets.get_dataset('digits', cache='none')._should_cache(
      'train')
  assert base.AUTO_CACHE_BYTES > dataset.stored_bytes('train')


def test_every_preset_names_a_registered_dataset():
  for preset in hparams.list_dataset_presets():
    cfg = hparams.get_config('efficientnetv2-b0', preset)
    assert cfg.data.dataset in datasets.DATASETS, preset


def test_every_dataset_name_is_a_dataset_config_that_trains_on_it():
  for name in datasets.list_datasets():
    cfg = hparams.get_config('efficientnetv2-b0', name)
    assert datasets.DATASETS.get(cfg.data.dataset) is datasets.DATASETS.get(
        name), name


@pytest.mark.parametrize('name, preset', [
    ('digits', 'Digits'), ('Mnist', 'MnistFt'), ('cars', 'CarsFt'),
    ('imagenet_tfds', 'ImagenetFt'), ('imagenet', 'ImageNet'),
    ('imagenet21k', 'ImageNet21k'), ('birds', 'BirdsFt')])
def test_a_dataset_with_a_preset_trains_with_that_preset(name, preset):
  assert (hparams.get_config('efficientnetv2-b0', name) ==
          hparams.get_config('efficientnetv2-b0', preset))


def test_image_folder_as_a_dataset_config_fine_tunes():
  cfg = hparams.get_config('efficientnetv2-b0', 'image_folder')
  fine_tuning = hparams.get_config('efficientnetv2-b0', 'ImagenetFt')
  assert cfg.data.dataset == 'image_folder' and cfg.data.augname == 'ft'
  assert cfg.train.lr_base == fine_tuning.train.lr_base
  assert cfg.train.lr_sched == 'constant' and cfg.train.stages == 0
  assert cfg.train.batch_size == 64 and cfg.train.min_steps == 0


def test_a_new_dataset_class_is_a_dataset_config_of_its_own():
  cfg = hparams.get_config('efficientnetv2-b0', 'TEST-STRIPES')
  assert cfg.data.dataset == 'test-stripes' and cfg.data.augname == 'ft'

  class Scans(Stripes):
    name = 'test-scans'
    aliases = ('test-scans-2',)
    preset = 'Digits'
  cfg = hparams.get_config('efficientnetv2-b0', 'test-scans-2')
  digits = hparams.get_config('efficientnetv2-b0', 'digits')
  assert cfg.data.dataset == 'test-scans'
  assert cfg.train.to_dict() == digits.train.to_dict()


def test_a_dataset_naming_an_unknown_preset_is_refused():
  with pytest.raises(UserError, match="unknown dataset config 'Scanz'"):
    type('Scans', (Stripes,), {'name': 'test-unknown-preset',
                               'preset': 'Scanz'})
  assert 'test-unknown-preset' not in datasets.DATASETS


def test_presets_are_found_case_insensitively_and_bind_their_dataset():
  dataset = datasets.from_spec(
      hparams.get_specs('efficientnetv2-b0', 'DIGITS').data)
  assert isinstance(dataset, datasets.Digits)
  cfg = hparams.get_config('efficientnetv2-s', 'cifar10ft')
  assert cfg.data.dataset == 'cifar10' and cfg.data.augname == 'ft'
  assert cfg.train.epochs == 15 and cfg.train.stages == 0


def test_from_spec_passes_subset_settings():
  specs = hparams.get_specs('efficientnetv2-b0', 'digits',
                            'data.per_class=3,data.fraction=0.5')
  dataset = datasets.from_spec(specs.data)
  assert dataset.subset == Subset(3, 0.5)
  with pytest.raises(UserError, match='data.per_class'):
    hparams.get_specs('efficientnetv2-b0', 'digits', 'data.per_class=0')


# The datasets this package defines, one class each, by name.
PACKAGED = {cls.name: cls
            for cls in map(datasets.DATASETS.get, datasets.list_datasets())
            if cls.__module__.startswith('datasets.')}


@pytest.fixture(scope='module')
def offline_data_dirs(tmp_path_factory):
  """A data_dir each packaged dataset that reads files can read."""
  folder = str(tmp_path_factory.mktemp('species'))
  image_files.write_classes(
      folder, [(f'species_{i:02d}', 'a.png', 'png', 8, 8, 3)
               for i in range(25)])
  records = image_files.write_imagenet(str(tmp_path_factory.mktemp('records')))
  return {'image_folder': folder, 'birds': folder, 'imagenet': records,
          'imagenet21k': records}


@pytest.mark.parametrize('name', sorted(PACKAGED))
def test_every_packaged_dataset_is_a_dataset_source(name, offline_data_dirs,
                                                     tmp_path):
  data_dir = offline_data_dirs.get(name, str(tmp_path))
  with tfds.testing.mock_data(num_examples=2):  # tfds datasets offline
    dataset = PACKAGED[name](data_dir)
    assert isinstance(dataset, DatasetSource)
    assert len(dataset.class_names) == dataset.num_classes
