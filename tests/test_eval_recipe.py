"""Evaluation preprocesses as the run's recipe says.

A run trains on real digits written as an image folder, through `main.py`,
with the 'ft_none' recipe. The top-1 it reports must be what an independent
evaluation of its checkpoint gives: PIL decodes, numpy normalises as the
'ft' contract says, and the labels come from the folder names. Evaluating
with another recipe must give a clearly different figure, or the check
could not tell recipes apart.
"""
import os

import keras
import numpy as np
from PIL import Image
import pytest
from sklearn.datasets import load_digits

import datasets
from efficientnetv2_tf import export
from efficientnetv2_tf.preprocessing import Augmentation
from tests import commands
from tests import image_files
from tests import reduced_runs
from tests.reduced_runs import unoptimised_graphs

pytestmark = pytest.mark.usefixtures('unoptimised_graphs')

IMAGE_SIZE = 32
# Named so that sorted folder names, which give the class ids, differ from
# the digits' order.
DIGIT_NAMES = ('zero', 'one', 'two', 'three', 'four', 'five', 'six', 'seven',
               'eight', 'nine')
# The digits preset's from-scratch recipe, on the folder, kept small: one
# 32 px stage (a second size would trace the step again) and a fixed seed,
# so that the figures repeat. Three epochs reach about 0.9 top-1.
RUN = ('data.dataset=image_folder,data.augname=ft_none,data.seed=0,'
       f'train.image_size={IMAGE_SIZE},eval.isize={IMAGE_SIZE},'
       'model.width_coefficient=0.25,model.depth_coefficient=0.2,'
       'train.epochs=3,train.stages=1')


@pytest.fixture(scope='module')
def digit_folders(tmp_path_factory) -> str:
  """The 1,797 scikit-learn digits upscaled to 32 px, in train/ and val/
  (every fifth image) class folders. Training images are JPEG (RGB),
  grayscale PNG and half-transparent RGBA PNG in turn; evaluation images
  are the two PNG kinds, lossless, so that PIL and TensorFlow decode them to
  the same pixels (their JPEG decoders differ by a few grey levels)."""
  root = str(tmp_path_factory.mktemp('digits'))
  digits = load_digits()
  for index, (image, label) in enumerate(zip(digits.images, digits.target)):
    grey = Image.fromarray(np.round(image * 255 / 16).astype(np.uint8))
    grey = np.asarray(grey.resize((IMAGE_SIZE, IMAGE_SIZE), Image.BILINEAR))
    rgb = np.repeat(grey[..., None], 3, -1)
    split = 'val' if index % 5 == 0 else 'train'
    path = os.path.join(root, split, DIGIT_NAMES[label], str(index))
    kind = index % 3 if split == 'train' else 1 + index // 5 % 2
    if kind == 0:
      image_files.write(path + '.jpg', rgb, 'jpeg')
    elif kind == 1:
      image_files.write(path + '.png', grey[..., None], 'png')
    else:
      alpha = np.full_like(grey[..., None], 40 + index % 200)
      image_files.write(path + '.png', np.concatenate([rgb, alpha], -1), 'png')
  return root


@pytest.fixture(scope='module')
def finished_run(digit_folders, tmp_path_factory):
  """The run's directory; it trains for about 40 s."""
  model_dir = str(tmp_path_factory.mktemp('run'))
  keras.utils.set_random_seed(0)  # the initial weights; data.seed the rest
  commands.run_main(['main.py', '--dataset_cfg=digits',
                     f'--data_dir={digit_folders}', f'--model_dir={model_dir}',
                     f'--hparam_str={RUN}'])
  return model_dir


def _eval_set(root: str):
  """The val/ images as 0-255 RGB pixels, and their class ids: the
  positions of their folders among the sorted training folders."""
  class_names = sorted(os.listdir(os.path.join(root, 'train')))
  images, labels = [], []
  for label, name in enumerate(class_names):
    folder = os.path.join(root, 'val', name)
    for file_name in sorted(os.listdir(folder)):
      with Image.open(os.path.join(folder, file_name)) as picture:
        images.append(np.asarray(picture.convert('RGB'), np.float32))
      labels.append(label)
  return np.stack(images), np.array(labels)


def _independent_top1(model, root: str):
  """The top-1 of `model` on val/, preprocessed by hand as the 'ft'
  contract says; returns it and the number of images."""
  pixels, labels = _eval_set(root)
  # The contract resizes the whole image to the eval size: at 32 px, as the
  # images are, that is the identity.
  assert pixels.shape[1:] == (IMAGE_SIZE, IMAGE_SIZE, 3)
  inputs = (pixels / 255 - 0.5) / 0.5
  logits = np.asarray(model(inputs, training=False))
  return float(np.mean(logits.argmax(-1) == labels)), len(labels)


def _top1_with_recipe(model, root: str, augname: str) -> float:
  """The top-1 of `model` on the eval split as `augname` preprocesses it."""
  dataset = datasets.get_dataset('image_folder', root)
  right = seen = 0
  for images, labels in dataset.pipeline(
      'eval', 120, training=False, image_size=IMAGE_SIZE,
      augmentation=Augmentation(augname)):
    predicted = np.asarray(model(images, training=False)).argmax(-1)
    right += int(np.sum(predicted == labels.numpy().argmax(-1)))
    seen += len(predicted)
  return right / seen


@pytest.mark.slow
def test_reported_top1_is_an_independent_evaluation_of_the_checkpoint(
    finished_run, digit_folders):
  results = reduced_runs.results(finished_run)
  assert results['step'] == results['total_steps']
  source = export.load_run(finished_run)  # the final checkpoint's EMA
  independent, count = _independent_top1(source.model, digit_folders)
  assert results['eval_images'] == count
  assert independent > 0.5  # it learned: chance is 0.1
  assert results['eval_top1'] == pytest.approx(independent, abs=1e-6)


@pytest.mark.slow
def test_another_recipe_gives_a_clearly_different_figure(finished_run,
                                                         digit_folders):
  source = export.load_run(finished_run)
  independent, _ = _independent_top1(source.model, digit_folders)
  # 'none' centre-crops 32 / (32 + 32), half the image, and normalises
  # (x - 128) / 128.
  other = _top1_with_recipe(source.model, digit_folders, 'none')
  assert abs(other - independent) > 0.25
