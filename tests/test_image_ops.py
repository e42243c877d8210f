"""Per-image augmentation ops and cutout; eagerly and in tf.data.

The original's outputs come from `tests/fixtures/augment_ops.npz`, written
by `tools/oracle/augment_fixtures.py` running the original code.
"""
import re

import numpy as np
import pytest
import tensorflow as tf

from efficientnetv2_tf import image_ops
from hparams.errors import UserError
from tests import oracle_fixtures
from tests.image_files import filled_box
from tests.image_files import random_image
from tests.image_files import run_in_map

SEED = tf.constant([7, 11], tf.int64)
MAGNITUDES = range(26)
PHOTOMETRIC_OPS = ('AutoContrast', 'Equalize', 'Invert', 'Posterize',
                   'Solarize', 'SolarizeAdd', 'Color', 'Contrast',
                   'Brightness', 'Sharpness')
GEOMETRIC_OPS = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')


def original():
  """What the original computed; see `tools/oracle/augment_fixtures.py`."""
  return oracle_fixtures.load('augment_ops')


def op(image, name, magnitude, seed=SEED, **kwargs):
  return image_ops.apply_op(image, name, magnitude, seed, **kwargs).numpy()


@pytest.mark.parametrize('name', image_ops.OPS.names())
def test_op_gives_same_uint8_image_eagerly_and_in_dataset_map(name):
  image = random_image()
  eager = image_ops.apply_op(image, name, 3.0, SEED)
  spec, mapped = run_in_map(
      lambda im, seed: image_ops.apply_op(im, name, 3.0, seed), image,
      SEED.numpy())
  assert eager.dtype == tf.uint8 and eager.shape == image.shape
  assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, None, 3]
  np.testing.assert_array_equal(mapped.numpy(), eager.numpy())
  assert not np.array_equal(eager.numpy(), image)


@pytest.mark.parametrize('name', PHOTOMETRIC_OPS)
def test_photometric_op_matches_the_original_at_every_magnitude(name):
  # Exactly: a tolerance of one level would let a rounding where the
  # original truncates (blend, Equalize's lookup table) pass.
  image = original()['image']
  for magnitude in MAGNITUDES:
    np.testing.assert_array_equal(
        op(image, name, magnitude), original()[name][magnitude],
        err_msg=f'{name} at magnitude {magnitude}')


@pytest.mark.parametrize('negate', [False, True])
@pytest.mark.parametrize('name', GEOMETRIC_OPS)
def test_geometric_op_with_fixed_sign_matches_the_original(name, negate):
  image = original()['image']
  for magnitude in MAGNITUDES:
    np.testing.assert_array_equal(
        op(image, name, magnitude, negate=negate),
        original()[name][int(negate), magnitude],
        err_msg=f'{name} at magnitude {magnitude}, negate={negate}')


def test_fixes_change_only_contrast_and_high_solarize_and_posterize_levels():
  image = original()['image']
  changed = {
      'Contrast': [m for m in MAGNITUDES if m != 5],  # 5: factor 1
      'Solarize': [m for m in MAGNITUDES if m >= 10],
      'Posterize': [23, 24, 25],
  }
  for name in PHOTOMETRIC_OPS:
    for magnitude in MAGNITUDES:
      difference = np.abs(op(image, name, magnitude, fixes=True).astype(int)
                          - original()[name][magnitude]).max()
      should_change = magnitude in changed.get(name, [])
      assert (difference > 0) == should_change, (name, magnitude, difference)


def test_invert_is_255_minus_pixels():
  image = random_image(low=0, high=256)
  np.testing.assert_array_equal(op(image, 'Invert', 0), 255 - image)


def test_solarize_inverts_only_pixels_at_or_above_threshold():
  image = random_image(low=0, high=256)
  # Level 5 gives the threshold 5 / 10 * 256 = 128.
  expected = np.where(image < 128, image, 255 - image)
  assert (image < 128).any() and (image >= 128).any()
  np.testing.assert_array_equal(op(image, 'Solarize', 5), expected)


def test_solarize_threshold_wraps_from_level_10_as_in_the_original():
  image = random_image(low=0, high=256)
  np.testing.assert_array_equal(op(image, 'Solarize', 10), 255 - image)
  np.testing.assert_array_equal(op(image, 'Solarize', 20), 255 - image)
  np.testing.assert_array_equal(op(image, 'Solarize', 15),
                                np.where(image < 128, image, 255 - image))


@pytest.mark.parametrize('magnitude', [10, 15, 20, 25])
def test_solarize_with_fixes_leaves_image_from_level_10(magnitude):
  image = random_image(low=0, high=256)
  np.testing.assert_array_equal(
      op(image, 'Solarize', magnitude, fixes=True), image)


def test_solarize_add_brightens_only_pixels_below_128():
  image = random_image(low=0, high=256)
  # Level 10 adds 110.
  added = np.minimum(image.astype(int) + 110, 255)
  expected = np.where(image < 128, added, image)
  np.testing.assert_array_equal(op(image, 'SolarizeAdd', 10), expected)


def test_posterize_keeps_top_bits():
  image = random_image(low=0, high=256)
  # Level 5 gives int(5 / 10 * 4) = 2 bits.
  np.testing.assert_array_equal(op(image, 'Posterize', 5), image & 0b11000000)


@pytest.mark.parametrize('magnitude', [23, 25])
def test_posterize_from_level_22_5_keeps_one_bit_as_the_original_ran(
    magnitude):
  image = random_image(low=0, high=256)
  np.testing.assert_array_equal(op(image, 'Posterize', 20), image)
  np.testing.assert_array_equal(op(image, 'Posterize', magnitude),
                                image & 0b10000000)


@pytest.mark.parametrize('magnitude', [20, 23, 25])
def test_posterize_with_fixes_leaves_image_from_level_20(magnitude):
  image = random_image(low=0, high=256)
  np.testing.assert_array_equal(
      op(image, 'Posterize', magnitude, fixes=True), image)


def test_posterize_below_level_2_5_keeps_one_bit_as_the_original_ran():
  image = random_image(low=0, high=256)
  np.testing.assert_array_equal(op(image, 'Posterize', 2), image & 0b10000000)


def test_autocontrast_stretches_narrow_channel_to_full_range():
  image = random_image(low=0, high=256)
  image[..., 0] = random_image(low=100, high=121)[..., 0]
  image[..., 1] = 50
  out = op(image, 'AutoContrast', 0)
  assert out[..., 0].min() == 0 and out[..., 0].max() == 255
  np.testing.assert_array_equal(out[..., 1:], image[..., 1:])


def test_equalize_flattens_skewed_histogram():
  # Every pixel is below 32; PIL's equalize spreads them over 0..255.
  values = (np.arange(32 * 32) // 32).reshape(32, 32).astype(np.uint8)
  image = np.repeat(values[..., None], 3, axis=-1)
  counts, _ = np.histogram(op(image, 'Equalize', 0), bins=4, range=(0, 256))
  assert (counts >= 0.15 * image.size).all(), counts


def test_brightness_at_factor_one_is_identity():
  image = random_image(low=0, high=256)
  # Level 5 gives the factor 5 / 10 * 1.8 + 0.1 = 1.
  np.testing.assert_array_equal(op(image, 'Brightness', 5), image)


@pytest.mark.parametrize('height,width,gray', [(8, 8, 0), (32, 32, 4),
                                               (24, 40, 3), (64, 80, 20),
                                               (256, 256, 255)])
def test_contrast_pulls_towards_pixel_count_over_256_as_the_original(
    height, width, gray):
  image = np.zeros((height, width, 3), np.uint8)
  image[:, width // 2:] = 200  # mean grey 100
  out = op(image, 'Contrast', 0)  # factor 0.1
  expected = np.floor(np.float32(gray) + np.float32(0.1) *
                      (np.float32([0, 200]) - gray))
  np.testing.assert_array_equal(out[0, [0, -1], 0], expected)


def test_contrast_with_fixes_pulls_towards_mean_grey_whatever_the_size():
  for size in (8, 32):
    image = np.zeros((size, size, 3), np.uint8)
    image[:, size // 2:] = 200  # mean grey 100
    out = op(image, 'Contrast', 0, fixes=True)  # factor 0.1
    np.testing.assert_allclose(out[0, [0, -1], 0], [90, 110], atol=1)


def test_color_leaves_grey_image_unchanged():
  grey = random_image(low=0, high=256)[..., :1]
  image = np.repeat(grey, 3, axis=-1)
  np.testing.assert_array_equal(op(image, 'Color', 9), image)


def test_sharpness_keeps_border_pixels():
  image = random_image(low=0, high=256)
  out = op(image, 'Sharpness', 10)
  for edge in (np.s_[0], np.s_[-1], np.s_[:, 0], np.s_[:, -1]):
    np.testing.assert_array_equal(out[edge], image[edge])
  assert not np.array_equal(out[1:-1, 1:-1], image[1:-1, 1:-1])


@pytest.mark.parametrize('name', ['Rotate', 'ShearX', 'ShearY', 'TranslateX',
                                  'TranslateY'])
def test_geometric_op_at_magnitude_zero_is_identity(name):
  image = random_image(low=0, high=256)
  np.testing.assert_array_equal(op(image, name, 0), image)


def test_rotate_at_magnitude_30_turns_a_quarter_either_way():
  image = random_image(low=0, high=256)
  turns = set()
  for seed in range(8):
    out = op(image, 'Rotate', 30, seed=[seed, 0])  # 90 degrees
    matches = [k for k in (1, -1) if np.array_equal(out, np.rot90(image, k))]
    assert len(matches) == 1
    turns.update(matches)
  assert turns == {1, -1}


@pytest.mark.parametrize('name,fixed', [('ShearX', np.s_[0]),
                                        ('ShearY', np.s_[:, 0])])
def test_shear_keeps_the_line_through_the_origin(name, fixed):
  image = random_image(low=0, high=256)
  out = op(image, name, 10)
  np.testing.assert_array_equal(out[fixed], image[fixed])
  assert not np.array_equal(out, image)


def shifted(image, shift, axis):
  """`image` moved `shift` pixels along `axis`, grey where it moved away."""
  moved = np.roll(image, shift, axis)
  vacated = [slice(None)] * 3
  vacated[axis] = slice(shift, None) if shift < 0 else slice(0, shift)
  moved[tuple(vacated)] = 128
  return moved


@pytest.mark.parametrize('name,axis', [('TranslateX', 1), ('TranslateY', 0)])
def test_translate_moves_content_and_fills_grey(name, axis):
  image = random_image(24, 24, low=0, high=100)
  shifts = set()
  for seed in range(8):
    # Level 1 with translate_const 40 moves 4 pixels, either way.
    out = op(image, name, 1, seed=[seed, 0], translate_const=40)
    matches = [shift for shift in (-4, 4)
               if np.array_equal(out, shifted(image, shift, axis))]
    assert len(matches) == 1
    shifts.update(matches)
  assert shifts == {-4, 4}


def test_cutout_fills_a_square_clipped_at_the_borders():
  image = np.zeros((16, 16, 3), np.uint8)
  sides = set()
  for seed in range(12):
    out = image_ops.cutout(image, 3, 128, [seed, 1]).numpy()
    assert set(np.unique(out)) <= {0, 128}
    mask = out[..., 0] == 128
    np.testing.assert_array_equal(out == 128, np.repeat(mask[..., None], 3,
                                                        -1))
    for covered, length in zip(filled_box(mask), mask.shape):
      touches_border = covered[0] == 0 or covered[-1] == length - 1
      assert len(covered) == 6 or (touches_border and 3 <= len(covered) < 6)
      sides.add(len(covered))
  assert 6 in sides


def test_cutout_takes_replace_image_on_float_images():
  image = tf.zeros([16, 16, 3])
  noise = tf.random.stateless_uniform([16, 16, 3], [0, 1], 0.5, 1.0)
  out = image_ops.cutout(image, 4, noise, [3, 4]).numpy()
  inside = out > 0
  filled_box(inside.all(-1))
  np.testing.assert_array_equal(out[inside], noise.numpy()[inside])


@pytest.mark.parametrize('magnitude', [-1, 31, 'x', float('nan'), True])
def test_check_magnitude_rejects_out_of_range_or_non_numbers(magnitude):
  expected = r'\[0, 30\].*magnitude=' + re.escape(repr(magnitude))
  with pytest.raises(UserError, match=expected):
    image_ops.check_magnitude(magnitude)


@pytest.mark.parametrize('magnitude', [0, 15, 30])
def test_check_magnitude_accepts_range(magnitude):
  assert image_ops.check_magnitude(magnitude) == magnitude


def test_apply_op_checks_python_magnitude():
  with pytest.raises(UserError, match='magnitude=31'):
    image_ops.apply_op(random_image(), 'Rotate', 31, SEED)
