"""Image folders that the tests write: formats, layouts, damage, errors."""
import logging
import os

import numpy as np
from PIL import Image
import pytest

import datasets
from datasets.folder import image_problem
from efficientnetv2_tf.preprocessing import Augmentation
from hparams.errors import UserError
from tests import image_files

# `image_files.ImageFile`s: (class, file, format, height, width, channels)
TRAIN_FILES = [
    ('cat', 'a.jpg', 'jpeg', 40, 30, 3),
    ('cat', 'b.PNG', 'png', 20, 50, 4),  # RGBA, upper-case extension
    ('cat', 'c.bmp', 'bmp', 24, 24, 3),
    ('cat', 'nested/d.gif', 'gif', 16, 32, 3),
    ('dog', 'a.jpeg', 'jpeg', 64, 48, 1),  # grayscale
    ('dog', 'b.png', 'png', 33, 17, 1),
    ('dog', 'c.bmp', 'bmp', 12, 40, 1),
    ('owl', 'a.jpg', 'jpeg', 30, 30, 3),
    ('owl', 'b.gif', 'gif', 28, 20, 1),
]
# Two classes of one tiny PNG each.
TINY_AB = [('a', 'x.png', 'png', 4, 4, 3), ('b', 'x.png', 'png', 4, 4, 3)]


@pytest.fixture(scope='module')
def split_folders(tmp_path_factory):
  """train/ with every format, a corrupt and a truncated file and a note;
  valid/ with two classes."""
  root = str(tmp_path_factory.mktemp('folders'))
  image_files.write_classes(os.path.join(root, 'train'), TRAIN_FILES)
  image_files.write(os.path.join(root, 'train', 'owl', 'broken.jpg'),
                    data=b'this is not an image')
  whole = image_files.encode(image_files.pixels(30, 30), 'jpeg')
  image_files.write(os.path.join(root, 'train', 'dog', 'cut.jpg'),
                    data=whole[:len(whole) // 2])
  image_files.write(os.path.join(root, 'train', 'cat', 'notes.txt'),
                    data=b'not listed')
  image_files.write_classes(os.path.join(root, 'valid'),
                            [('cat', 'v.jpg', 'jpeg', 20, 20, 3),
                             ('owl', 'v.png', 'png', 20, 20, 3)], seed=50)
  return root


def test_classes_splits_and_skipped_files(split_folders, caplog):
  dataset = datasets.get_dataset('image_folder', split_folders)
  assert dataset.class_names == ['cat', 'dog', 'owl']
  with caplog.at_level(logging.WARNING):
    assert dataset.split_size('train') == len(TRAIN_FILES)
  assert dataset.split_size('eval') == 2  # from valid/
  assert dataset.skipped == 2
  warning = caplog.text
  assert 'skipped 2 unreadable image(s) of 11' in warning
  assert 'broken.jpg (not a JPEG, PNG, BMP or GIF image)' in warning
  assert 'cut.jpg (truncated or damaged)' in warning


def test_every_format_decodes_to_rgb(split_folders):
  dataset = datasets.get_dataset('image_folder', split_folders)
  batches = list(dataset.pipeline(
      'train', 4, training=False, image_size=24,
      augmentation=Augmentation('none')).as_numpy_iterator())
  images = np.concatenate([b[0] for b in batches])
  labels = np.concatenate([b[1] for b in batches]).argmax(1)
  assert images.shape == (len(TRAIN_FILES), 24, 24, 3)
  assert sorted(labels) == [0, 0, 0, 0, 1, 1, 1, 2, 2]
  grey = images[labels == 1]
  np.testing.assert_array_equal(grey[..., 0], grey[..., 1])
  assert np.abs(images).max() <= 1.0


def test_strict_fails_naming_the_file(split_folders):
  dataset = datasets.get_dataset('image_folder', split_folders, strict=True)
  with pytest.raises(UserError, match=r"unreadable image '.*(broken|cut)"
                     r"\.jpg': .*data.strict=true"):
    dataset.split_size('train')


def test_training_pipeline_augments_mixed_sizes(split_folders):
  dataset = datasets.get_dataset('image_folder', split_folders)
  images, labels = next(iter(dataset.pipeline(
      'train', 6, training=True, image_size=32, seed=1,
      augmentation=Augmentation('randaug'))))
  assert images.shape == (6, 32, 32, 3) and labels.shape == (6, 3)


@pytest.fixture(scope='module')
def single_folder(tmp_path_factory):
  root = str(tmp_path_factory.mktemp('single'))
  for label, count in (('ants', 10), ('bees', 5)):
    image_files.write_classes(root, [(label, f'{i}.png', 'png', 8, 8, 3)
                                     for i in range(count)])
  return root


def test_single_folder_is_split_by_fraction(single_folder):
  dataset = datasets.get_dataset('image_folder', single_folder,
                                 val_fraction=0.2)
  train, held = dataset.listing('train'), dataset.listing('eval')
  assert not set(train.paths) & set(held.paths)
  assert len(train.paths) + len(held.paths) == 15
  assert sorted(held.labels) == [0, 0, 1]  # 20% of each class
  again = datasets.get_dataset('image_folder', single_folder,
                               val_fraction=0.2)
  assert again.listing('eval').paths == held.paths


def test_per_class_takes_a_spread_of_files(single_folder):
  dataset = datasets.get_dataset('image_folder', single_folder, per_class=2)
  assert dataset.split_size('train') == 4


def test_archive_wrapper_folders_are_descended(tmp_path):
  wrapper = tmp_path / 'download' / 'birds'
  image_files.write_classes(str(wrapper / 'training_set'),
                            [('crow', 'a.jpg', 'jpeg', 8, 8, 3),
                             ('kite', 'a.jpg', 'jpeg', 8, 8, 3)])
  image_files.write_classes(str(wrapper / 'validation_set'),
                            [('crow', 'b.jpg', 'jpeg', 8, 8, 3)])
  dataset = datasets.get_dataset('image_folder', str(tmp_path / 'download'))
  assert dataset.class_names == ['crow', 'kite']
  assert dataset.split_size('eval') == 1


@pytest.mark.parametrize('make, split, message', [
    (lambda root: None, 'train', 'does not exist'),
    (lambda root: os.makedirs(root), 'train',
     'has no class sub-folders .*it is empty'),
    (lambda root: image_files.write(os.path.join(root, 'x.png'),
                                    image_files.pixels(4, 4), 'png'),
     'train', 'has no class sub-folders .*holds 1 images directly'),
    (lambda root: (os.makedirs(os.path.join(root, 'a')),
                   image_files.write(os.path.join(root, 'b', 'x.png'),
                                     image_files.pixels(4, 4), 'png')),
     'train', r"class folder '.*a' has no images"),
    (lambda root: image_files.write_classes(os.path.join(root, 'train'),
                                            TINY_AB),
     'test', r"no test folder in '.*'; name it one of test, testing"),
    (lambda root: (image_files.write_classes(os.path.join(root, 'train'),
                                             TINY_AB),
                   image_files.write_classes(os.path.join(root, 'val'),
                                             [('c', 'x.png', 'png', 4, 4, 3)])),
     'eval', r"'.*val/c' is not one of the 2 training classes"),
    (lambda root: image_files.write_classes(os.path.join(root, 'val'),
                                            TINY_AB) or
     image_files.write_classes(os.path.join(root, 'test'), TINY_AB[:1]),
     'train', 'but no training folder; name it one of train'),
])
def test_bad_folders_get_an_error_naming_the_path(tmp_path, make, split,
                                                  message):
  root = str(tmp_path / 'data')
  make(root)
  dataset = datasets.get_dataset('image_folder', root)
  with pytest.raises(UserError, match=message):
    dataset.split_size(split)


def test_missing_data_dir_says_to_pass_one():
  with pytest.raises(UserError, match="dataset 'image_folder' needs "
                     'data_dir'):
    datasets.get_dataset('image_folder').class_names


@pytest.mark.parametrize('fmt', ['jpeg', 'png', 'bmp', 'gif'])
def test_whole_images_pass_and_cut_ones_fail_the_check(tmp_path, fmt):
  data = image_files.encode(image_files.pixels(16, 16), fmt)
  whole = image_files.write(str(tmp_path / f'whole.{fmt}'), data=data)
  cut = image_files.write(str(tmp_path / f'cut.{fmt}'),
                          data=data[:len(data) * 2 // 3])
  assert image_problem(whole) is None
  assert image_problem(cut) == 'truncated or damaged'
  empty = image_files.write(str(tmp_path / 'empty.jpg'), data=b'')
  assert image_problem(empty) == 'empty'


def test_data_after_the_end_of_a_jpeg_is_tolerated(tmp_path):
  data = image_files.encode(image_files.pixels(16, 16), 'jpeg')
  path = image_files.write(str(tmp_path / 'extra.jpg'),
                           data=data + b'camera trailer')
  assert image_problem(path) is None


def test_damage_inside_a_file_is_dropped_at_decode_time(tmp_path):
  """A PNG whose end marker is intact but whose pixel data is garbage passes
  the listing check; the pipeline drops it instead of failing."""
  image_files.write_classes(str(tmp_path / 'train'),
                            [('a', 'ok.png', 'png', 8, 8, 3),
                             ('b', 'ok.png', 'png', 8, 8, 3)])
  image_files.write_classes(str(tmp_path / 'val'),
                            [('a', 'ok.png', 'png', 8, 8, 3)])
  good = image_files.encode(image_files.pixels(8, 8), 'png')
  damaged = good[:40] + b'\0' * (len(good) - 52) + good[-12:]
  image_files.write(str(tmp_path / 'train' / 'b' / 'bad.png'), data=damaged)
  dataset = datasets.get_dataset('image_folder', str(tmp_path))
  assert dataset.split_size('train') == 3  # the listing check passes it
  recipe = Augmentation('none')
  batches = dataset.pipeline('train', 8, training=False, image_size=8,
                             augmentation=recipe)
  assert sum(len(labels) for _, labels in batches) == 2
  strict = datasets.get_dataset('image_folder', str(tmp_path), strict=True)
  with pytest.raises(Exception, match='(?i)png|crc|decode|invalid'):
    list(strict.pipeline('train', 8, training=False, image_size=8,
                         augmentation=recipe))


def test_bmps_that_tensorflow_would_misread_are_named(tmp_path):
  # Pillow writes them; TensorFlow would read the colour palette's indices
  # as grey levels, and fails on 1-bit pixels. A grey ramp palette (mode
  # 'L') is read right, as the formats test above checks.
  colour = Image.fromarray(image_files.pixels(8, 8)).convert('P')
  grey = Image.fromarray(image_files.pixels(8, 8, 1).squeeze(-1), 'L')
  problems = {}
  for name, picture in (('colour', colour), ('grey', grey),
                        ('one_bit', grey.convert('1'))):
    picture.save(tmp_path / f'{name}.bmp', format='BMP')
    problems[name] = image_problem(str(tmp_path / f'{name}.bmp'))
  assert problems == {
      'colour': 'an 8-bit BMP with a colour palette, which TensorFlow '
                'would read as grey levels; save it as PNG',
      'grey': None,
      'one_bit': 'a 1-bit BMP, which TensorFlow cannot read (it reads 24- '
                 'and 32-bit ones); save it as PNG'}


def test_a_folder_that_both_splits_share_is_checked_once(tmp_path, caplog):
  files = [(label, f'{i}.png', 'png', 4, 4, 3)
           for label in ('a', 'b') for i in range(5)]
  image_files.write_classes(str(tmp_path), files)
  image_files.write(str(tmp_path / 'a' / 'broken.png'), data=b'no image')
  dataset = datasets.get_dataset('image_folder', str(tmp_path))
  with caplog.at_level(logging.WARNING):
    sizes = dataset.split_size('train') + dataset.split_size('eval')
  assert sizes == 10 and dataset.skipped == 1
  assert caplog.text.count('skipped 1 unreadable image(s)') == 1


def test_an_input_pipeline_reads_only_the_files_of_its_shard(tmp_path):
  # Another shard's file, removed after the listing, is never opened.
  image_files.write_classes(str(tmp_path), [
      (label, f'{i}.png', 'png', 4, 4, 3) for label in 'ab' for i in range(3)])
  dataset = datasets.get_dataset('image_folder', str(tmp_path),
                                 val_fraction=0.5)
  paths = dataset.listing('train').paths
  whole = [image.numpy() for image, _ in dataset.source('train')]
  os.remove(paths[1])
  first = [image.numpy() for image, _ in dataset.shard_source('train', 2, 0)]
  assert first == whole[0::2]
