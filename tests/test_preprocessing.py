"""Decoding, the three preprocessing recipes, and their settings."""
import keras
import numpy as np
import pytest
import tensorflow as tf

import hparams
from efficientnetv2_tf import preprocessing
from efficientnetv2_tf.preprocessing import Augmentation
from efficientnetv2_tf.preprocessing import Normalize
from efficientnetv2_tf.preprocessing import preprocess_image
from hparams.errors import UserError
from hparams.weights import InputContract
from hparams.weights import NORMALIZATIONS
from tests import image_files

SEED = tf.constant([3, 4])


@pytest.mark.parametrize('fmt, channels', [
    ('jpeg', 1), ('jpeg', 3), ('png', 1), ('png', 4), ('bmp', 3),
    ('gif', 3)])
def test_encoded_images_decode_to_rgb(fmt, channels):
  pixels = image_files.pixels(12, 20, channels)
  decoded = preprocessing.decode_rgb(tf.constant(image_files.encode(pixels,
                                                                    fmt)))
  assert decoded.dtype == tf.uint8 and decoded.shape == (12, 20, 3)
  if fmt == 'png':  # lossless: the colour channels come back exactly
    np.testing.assert_array_equal(
        decoded, np.broadcast_to(pixels[..., :3], (12, 20, 3)))


@pytest.mark.parametrize('channels', [1, 2, 4])
def test_pixel_arrays_become_rgb(channels):
  pixels = image_files.pixels(5, 6, channels)
  rgb = preprocessing.decode_rgb(tf.constant(pixels))
  assert rgb.shape == (5, 6, 3)
  np.testing.assert_array_equal(rgb[..., 0], pixels[..., 0])


def _bordered(size, border, inner=200, outer=0):
  image = np.full([size, size, 3], outer, np.uint8)
  image[border:-border, border:-border] = inner
  return tf.constant(image)


def test_eval_crops_size_over_size_plus_32_below_320_px():
  # 256 / (256 + 32) of 288 px is the central 256 px: the border goes.
  out = preprocess_image(_bordered(288, 16), 256, training=False)
  assert out.shape == (256, 256, 3)
  np.testing.assert_allclose(out, (200 - 128) / 128, atol=1e-5)


def test_eval_resizes_whole_images_from_320_px():
  out = preprocess_image(_bordered(400, 20), 320, training=False)
  assert float(tf.reduce_min(out)) == pytest.approx(-1.0)  # border kept


@pytest.mark.parametrize('augname', ['none', 'randaug', 'autoaug', 'ra_aa',
                                     'ft', 'ft_randaug_cutout',
                                     'effnetv1_autoaug'])
def test_training_output_shape_range_and_repeatability(augname):
  image = tf.constant(image_files.pixels(50, 70))
  augmentation = Augmentation(augname, magnitude=10.0)
  out = preprocess_image(image, 32, True, augmentation, SEED)
  assert out.shape == (32, 32, 3) and out.dtype == tf.float32
  limit = 1.0 if not augname.startswith('effnetv1') else 2.7
  assert float(tf.reduce_max(tf.abs(out))) <= limit + 1e-5
  np.testing.assert_array_equal(
      out, preprocess_image(image, 32, True, augmentation, SEED))
  assert not np.array_equal(
      out, preprocess_image(image, 32, True, augmentation,
                            tf.constant([5, 6])))


def _original_crop_aspect_ratios():
  """The aspect ratios the original's V2 crop allowed: it left them to
  `tf.image.sample_distorted_bounding_box`'s default."""
  with tf.Graph().as_default():
    begin, _, _ = tf.image.sample_distorted_bounding_box(
        [8, 8, 3], tf.zeros([0, 0, 4]), area_range=(0.05, 1.0),
        min_object_covered=0, use_image_if_no_bounding_boxes=True)
    return begin.op.get_attr('aspect_ratio_range')


def test_v2_training_crop_allows_the_originals_aspect_ratios(monkeypatch):
  sample, asked = tf.image.stateless_sample_distorted_bounding_box, []

  def recording_sample(*args, **kwargs):
    asked.append(kwargs['aspect_ratio_range'])
    return sample(*args, **kwargs)

  monkeypatch.setattr(tf.image, 'stateless_sample_distorted_bounding_box',
                      recording_sample)
  image = tf.constant(image_files.pixels(50, 70))
  preprocess_image(image, 32, True, Augmentation('none'), SEED)
  np.testing.assert_array_equal(np.float32(asked),
                                np.float32([_original_crop_aspect_ratios()]))


def test_training_preprocessing_inside_dataset_map_matches_eager():
  image = tf.constant(image_files.pixels(40, 40))
  augmentation = Augmentation('randaug', 2, 12.0)
  eager = preprocess_image(image, 24, True, augmentation, SEED)
  mapped = tf.data.Dataset.from_tensors(image).map(
      lambda x: preprocess_image(x, 24, True, augmentation, SEED))
  np.testing.assert_allclose(next(iter(mapped)), eager, atol=1e-6)


def test_effnetv1_normalises_with_imagenet_mean_and_stddev():
  mean = np.array(NORMALIZATIONS['imagenet'][0]).round().astype(np.uint8)
  image = tf.constant(np.broadcast_to(mean, (64, 64, 3)).copy())
  out = preprocess_image(image, 32, False, Augmentation('effnetv1'))
  np.testing.assert_allclose(out, 0.0, atol=0.01)


@pytest.mark.parametrize('seed', [[3, 4], [0, 1], [7, 7]])
def test_v1_training_decodes_a_jpeg_within_its_crop_window(seed,
                                                           monkeypatch):
  # As V1 did; the window is the one drawn for the decoded pixels, which
  # differ from it only where colour is upsampled near the window's edges.
  windows, decode = [], tf.image.decode_and_crop_jpeg

  def recording_decode(image, window, **kwargs):
    windows.append(window.numpy())
    return decode(image, window, **kwargs)

  monkeypatch.setattr(tf.image, 'decode_and_crop_jpeg', recording_decode)
  jpeg = image_files.encode(image_files.pixels(90, 120), 'jpeg')
  augmentation, seed = Augmentation('effnetv1'), tf.constant(seed)
  from_bytes = preprocess_image(tf.constant(jpeg), 48, True, augmentation,
                                seed).numpy()
  assert len(windows) == 1 and windows[0][2:].prod() < 90 * 120
  from_pixels = preprocess_image(tf.io.decode_jpeg(jpeg, channels=3), 48,
                                 True, augmentation, seed).numpy()
  assert np.abs(from_bytes - from_pixels).mean() < 0.02


def test_finetune_path_does_not_crop_and_cutout_adds_noise():
  image = _bordered(64, 8)
  out = preprocess_image(image, 64, False, Augmentation('ft'))
  assert float(tf.reduce_min(out)) == -1.0  # the border survives
  train = preprocess_image(tf.fill([64, 64, 3], tf.constant(0, tf.uint8)), 64,
                           True, Augmentation('ft'), SEED)
  noisy = tf.reduce_any(train > -1.0, axis=-1)  # cut-out pixels are in [0, 1)
  assert 0 < int(tf.reduce_sum(tf.cast(noisy, tf.int32))) <= 32 * 32
  assert float(tf.reduce_max(train)) < 1.0


def test_flip_can_be_turned_off():
  image = np.zeros([16, 16, 3], np.uint8)
  image[:, :8] = 255
  flipped = set()
  for seed in range(8):
    out = preprocess_image(tf.constant(image), 16, True,
                           Augmentation('ft_randaug', 0, flip=False),
                           tf.constant([seed, 0]))
    flipped.add(bool(out[0, 0, 0] < 0))
  assert flipped == {False}


@pytest.mark.parametrize('kwargs, message', [
    ({'augname': 'randaugment'},
     r"unknown augmentation 'randaugment'; did you mean 'ft_randaug'\?|"
     r"unknown augmentation 'randaugment'"),
    ({'magnitude': 31.0}, r'31'),
    ({'magnitude': -1.0}, r'-1'),
    ({'num_layers': -1}, r'data.ra_num_layers must be an integer >= 0; '
                         r'received: -1'),
    ({'mixup_alpha': -0.1}, r'data.mixup_alpha must be a number >= 0'),
])
def test_bad_settings_get_one_line_errors(kwargs, message):
  with pytest.raises(UserError, match=message):
    Augmentation(**kwargs)


def test_ft_normalises_by_half_of_255_and_v2_by_128():
  image = tf.fill([8, 8, 3], tf.constant(255, tf.uint8))
  ft = preprocess_image(image, 8, False, Augmentation('ft_none'))
  v2 = preprocess_image(image, 8, False, Augmentation('none'))
  np.testing.assert_allclose(ft, 1.0, atol=1e-6)
  np.testing.assert_allclose(v2, 127 / 128, atol=1e-6)


# The published means and stddevs of 0-255 pixels, written out here.
_PUBLISHED = {'symmetric': ([128.0] * 3, [128.0] * 3),
              'inception': ([127.5] * 3, [127.5] * 3),
              'imagenet': ([123.675, 116.28, 103.53], [58.395, 57.12, 57.375])}


@pytest.mark.parametrize('mode', sorted(_PUBLISHED))
def test_the_deployed_normalisation_of_unit_pixels_is_the_published_one(mode):
  scale, offset = preprocessing.unit_scale_offset(mode)
  # One scalar each where the channels agree; per channel otherwise.
  assert scale.shape == offset.shape == (() if mode != 'imagenet' else (3,))
  pixels = np.random.default_rng(0).uniform(0, 1, (4, 5, 3)).astype(
      np.float32)
  mean, stddev = (np.float32(v) for v in _PUBLISHED[mode])
  np.testing.assert_allclose(pixels * scale + offset,
                             (pixels * 255 - mean) / stddev, atol=2e-6)


def test_built_in_normalisation_under_bfloat16_rounds_only_its_result():
  # The float64 result rounded once to bfloat16 (8 bits of mantissa):
  # rounding the means first put inputs up to 0.02 off.
  pixels = np.arange(256, dtype=np.float32).reshape(1, 16, 16, 1)
  pixels = np.repeat(pixels, 3, axis=-1)
  mean, stddev = (np.float64(v) for v in NORMALIZATIONS['imagenet'])
  exact = (pixels.astype(np.float64) - mean) / stddev
  out = Normalize('imagenet', dtype='mixed_bfloat16')(pixels)
  assert out.dtype == 'bfloat16'
  error = np.abs(np.asarray(keras.ops.cast(out, 'float32')) - exact)
  assert np.all(error <= np.abs(exact) * 2.0**-8 + 1e-7)


def test_a_normalization_override_changes_only_the_normalisation():
  image = tf.constant(image_files.pixels(40, 30))
  plain = preprocess_image(image, 16, False, Augmentation('none'))
  renormalised = preprocess_image(
      image, 16, False, Augmentation('none', normalization='imagenet'))
  mean, stddev = NORMALIZATIONS['imagenet']
  np.testing.assert_allclose((plain.numpy() * 128 + 128 - mean) / stddev,
                             renormalised, atol=1e-4)


def test_tf1_bicubic_is_not_tf2_bicubic():
  # TF1's kernel (a = -0.75, corner-aligned pixel centres) and TF2's differ,
  # so the V1 recipe must name which one it uses.
  image = tf.constant(image_files.pixels(37, 53))
  tf1 = preprocessing.eval_image(image, InputContract(
      'symmetric', 'bicubic_tf1', 'none', 24))
  tf2 = tf.image.resize(tf.cast(image, tf.float32), [24, 24], 'bicubic')
  assert float(tf.reduce_max(tf.abs(tf1 * 128 + 128 - tf2))) > 1.0


def test_unknown_contract_fields_are_one_line_errors():
  with pytest.raises(UserError, match=r"resize must be one of bilinear, "
                     r"bicubic_tf1; received: 'area'"):
    InputContract('symmetric', 'area', 'none', 8)
  with pytest.raises(UserError, match=r"data.normalization must be one of "
                     r"symmetric, inception, imagenet"):
    Augmentation('none', normalization='01')


def test_every_augmentation_name_has_a_known_recipe():
  names = preprocessing.AUGMENTATIONS.names()
  assert {'none', 'randaug', 'autoaug', 'ra_aa', 'ft', 'ft_randaug',
          'effnetv1_autoaug', 'effnetv1_randaug'} <= set(names)
  for name in names:
    pipeline = preprocessing.AUGMENTATIONS.get(name)
    assert pipeline.path in ('default', 'ft', 'effnetv1')


@pytest.mark.parametrize('model_name, weights, normalization, expected', [
    ('efficientnetv2-b0', 'imagenet', None, 'imagenet'),
    ('efficientnetv2-s', 'imagenet21k-ft1k', None, 'inception'),
    ('efficientnetv2-s', 'imagenet', None, 'symmetric'),
    ('efficientnet-b0', 'jft', None, 'imagenet'),
    ('efficientnetv2-b0', 'imagenet', 'symmetric', 'symmetric'),
    ('efficientnetv2-b0', None, None, 'inception'),  # the ft recipe's own
])
def test_fine_tuning_from_named_weights_normalises_as_they_expect(
    model_name, weights, normalization, expected):
  specs = hparams.get_specs(model_name, 'FashionMnistFt', {
      'train': {'ft_init_ckpt': weights},
      'data': {'normalization': normalization}})
  augmentation = Augmentation.from_specs(specs)
  assert augmentation.contract(64).normalization == expected
  assert augmentation.contract(64).crop == 'none'  # still the ft recipe
