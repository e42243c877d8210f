"""Augmentation ops, policies, cutout and batch mixing; eager and in tf.data.

The original's outputs come from `tests/fixtures/augment_ops.npz`, written
by `tools/oracle/augment_fixtures.py` running the original code.
"""
import functools
import pathlib
import re

import numpy as np
import pytest
import tensorflow as tf

from efficientnetv2_tf import augment
from hparams.errors import UserError

SEED = tf.constant([7, 11], tf.int64)
MAGNITUDES = range(26)
PHOTOMETRIC_OPS = ('AutoContrast', 'Equalize', 'Invert', 'Posterize',
                   'Solarize', 'SolarizeAdd', 'Color', 'Contrast',
                   'Brightness', 'Sharpness')
GEOMETRIC_OPS = ('Rotate', 'ShearX', 'ShearY', 'TranslateX', 'TranslateY')


@functools.lru_cache(maxsize=None)
def original():
  """What the original computed; see `tools/oracle/augment_fixtures.py`."""
  path = pathlib.Path(__file__).parent / 'fixtures' / 'augment_ops.npz'
  with np.load(path) as arrays:
    return dict(arrays)


def random_image(height=32, width=32, low=20, high=200, seed=0):
  rng = np.random.default_rng(seed)
  return rng.integers(low, high, (height, width, 3)).astype(np.uint8)


def run_in_map(fn, *elements):
  """Runs `fn(*elements)` inside `Dataset.map` with every dimension unknown
  but the channels of images; returns the output's spec and value."""
  def spec(element):
    shape = [None] * np.ndim(element)
    if len(shape) == 3:
      shape[-1] = np.shape(element)[-1]
    return tf.TensorSpec(shape, tf.as_dtype(np.asarray(element).dtype))
  signature = tuple(spec(e) for e in elements)
  dataset = tf.data.Dataset.from_generator(lambda: [elements],
                                           output_signature=signature)
  dataset = dataset.map(fn)
  return dataset.element_spec, next(iter(dataset))


def op(image, name, magnitude, seed=SEED, **kwargs):
  return augment.apply_op(image, name, magnitude, seed, **kwargs).numpy()


@pytest.mark.parametrize('name', augment.OPS.names())
def test_op_gives_same_uint8_image_eagerly_and_in_dataset_map(name):
  image = random_image()
  eager = augment.apply_op(image, name, 3.0, SEED)
  spec, mapped = run_in_map(
      lambda im, seed: augment.apply_op(im, name, 3.0, seed), image,
      SEED.numpy())
  assert eager.dtype == tf.uint8 and eager.shape == image.shape
  assert spec.dtype == tf.uint8 and spec.shape.as_list() == [None, None, 3]
  np.testing.assert_array_equal(mapped.numpy(), eager.numpy())
  assert not np.array_equal(eager.numpy(), image)


@pytest.mark.parametrize('name', PHOTOMETRIC_OPS)
def test_photometric_op_matches_the_original_at_every_magnitude(name):
  image = original()['image']
  for magnitude in MAGNITUDES:
    np.testing.assert_allclose(
        op(image, name, magnitude).astype(int), original()[name][magnitude],
        rtol=0, atol=1, err_msg=f'{name} at magnitude {magnitude}')


@pytest.mark.parametrize('negate', [False, True])
@pytest.mark.parametrize('name', GEOMETRIC_OPS)
def test_geometric_op_with_fixed_sign_matches_the_original(name, negate):
  image = original()['image']
  for magnitude in MAGNITUDES:
    expected = original()[name][int(negate), magnitude]
    differing = (op(image, name, magnitude, negate=negate) != expected).any(-1)
    assert differing.mean() <= 0.005, (name, magnitude)


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
      assert (difference > 1) == should_change, (name, magnitude, difference)


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


def filled_box(mask):
  """The rows and columns `mask` covers; asserts they form a rectangle."""
  rows = np.flatnonzero(mask.any(axis=1))
  cols = np.flatnonzero(mask.any(axis=0))
  box = np.zeros_like(mask)
  box[rows.min():rows.max() + 1, cols.min():cols.max() + 1] = True
  np.testing.assert_array_equal(mask, box)
  return rows, cols


def test_cutout_fills_a_square_clipped_at_the_borders():
  image = np.zeros((16, 16, 3), np.uint8)
  sides = set()
  for seed in range(12):
    out = augment.cutout(image, 3, 128, [seed, 1]).numpy()
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
  out = augment.cutout(image, 4, noise, [3, 4]).numpy()
  inside = out > 0
  filled_box(inside.all(-1))
  np.testing.assert_array_equal(out[inside], noise.numpy()[inside])


@pytest.mark.parametrize('policy', sorted(augment.POLICIES.names()))
def test_policy_is_deterministic_and_varies_with_seed(policy):
  image = random_image()
  outputs = [augment.distort(image, policy, 2, 10, [s, 0]).numpy()
             for s in (0, 0, 1, 2, 3, 4)]
  assert all(o.dtype == np.uint8 and o.shape == image.shape for o in outputs)
  np.testing.assert_array_equal(outputs[0], outputs[1])
  assert len({o.tobytes() for o in outputs[1:]}) >= 3


@pytest.mark.parametrize('policy', sorted(augment.POLICIES.names()))
def test_policy_runs_in_dataset_map_with_tensor_magnitude(policy):
  image, magnitude = random_image(), np.float32(12.0)
  eager = augment.distort(image, policy, 2, tf.constant(magnitude), SEED)
  spec, mapped = run_in_map(
      lambda im, mag, seed: augment.distort(im, policy, 2, mag, seed),
      image, magnitude, SEED.numpy())
  assert spec.dtype == tf.uint8
  np.testing.assert_array_equal(mapped.numpy(), eager.numpy())


@pytest.mark.parametrize('fixes', [False, True])
@pytest.mark.parametrize('policy', sorted(augment.POLICIES.names()))
def test_distort_passes_fixes_down_to_every_op_it_applies(policy, fixes,
                                                          monkeypatch):
  apply_op, passed = augment.apply_op, []

  def recording_apply_op(*args, **kwargs):
    passed.append(kwargs['fixes'])
    return apply_op(*args, **kwargs)

  monkeypatch.setattr(augment, 'apply_op', recording_apply_op)
  for seed in range(4):
    augment.distort(random_image(), policy, 2, 10, [seed, 0], fixes=fixes)
  assert passed and set(passed) == {fixes}


def test_distort_dispatches_to_randaugment_and_autoaugment():
  image = random_image()
  np.testing.assert_array_equal(
      augment.randaugment(image, 2, 9, SEED).numpy(),
      augment.distort(image, 'randaug', 2, 9, SEED).numpy())
  np.testing.assert_array_equal(
      augment.autoaugment(image, SEED).numpy(),
      augment.distort(image, 'autoaug', 2, 9, SEED).numpy())


def test_autoaugment_test_policy_uses_autoaugment_translate_const():
  # TranslateX at level 4 moves 100 pixels (40 under RandAugment's
  # constant): all of a 64-wide image turns grey, which Equalize keeps.
  image = random_image(16, 64)
  out = augment.autoaugment(image, SEED, policy='test').numpy()
  assert (out == 128).all()


def test_autoaugment_rejects_unknown_policy_with_known_names():
  with pytest.raises(UserError, match=r"'v1'.*test, v0"):
    augment.autoaugment(random_image(), SEED, policy='v1')


def test_distort_rejects_unknown_policy_naming_it():
  with pytest.raises(UserError, match="'randaugment'"):
    augment.distort(random_image(), 'randaugment', 2, 10, SEED)


@pytest.mark.parametrize('magnitude', [-1, 31, 'x', float('nan'), True])
def test_check_magnitude_rejects_out_of_range_or_non_numbers(magnitude):
  expected = r'\[0, 30\].*magnitude=' + re.escape(repr(magnitude))
  with pytest.raises(UserError, match=expected):
    augment.check_magnitude(magnitude)


@pytest.mark.parametrize('magnitude', [0, 15, 30])
def test_check_magnitude_accepts_range(magnitude):
  assert augment.check_magnitude(magnitude) == magnitude


def test_apply_op_checks_python_magnitude():
  with pytest.raises(UserError, match='magnitude=31'):
    augment.apply_op(random_image(), 'Rotate', 31, SEED)


# ------------------------------------------------------------ batch mixing

BATCH = 6


def numbered_batch(size=BATCH):
  """Image i is filled with i; label i is class i."""
  images = np.broadcast_to(np.arange(size, dtype=np.float32)[:, None, None,
                                                              None],
                           (size, 8, 8, 3)).copy()
  return images, np.eye(size, dtype=np.float32)


def test_mixup_blends_with_reversed_batch_favouring_own_example():
  images, labels = numbered_batch()
  mixed, mixed_labels = (t.numpy() for t in augment.mixup(images, labels, 0.2,
                                                          SEED))
  for i in range(BATCH):
    partner = BATCH - 1 - i
    own = (mixed[i] - partner) / (i - partner)
    np.testing.assert_allclose(own, own.flat[0], atol=1e-5)
    assert own.flat[0] >= 0.5
    np.testing.assert_allclose(mixed_labels[i, [i, partner]],
                               [own.flat[0], 1 - own.flat[0]], atol=1e-5)
  np.testing.assert_allclose(mixed_labels.sum(1), 1, atol=1e-6)


def test_cutmix_with_the_originals_masks_gives_the_originals_output():
  fixture = original()
  assert len(np.unique(fixture['cutmix_masks'].mean(axis=(1, 2)))) > 1
  mixed, mixed_labels = augment.cutmix_with_masks(
      fixture['cutmix_images'], fixture['cutmix_labels'],
      fixture['cutmix_masks'])
  np.testing.assert_array_equal(mixed, fixture['cutmix_mixed_images'])
  np.testing.assert_allclose(mixed_labels, fixture['cutmix_mixed_labels'],
                             atol=1e-6)


def test_cutmix_with_fixes_weights_labels_by_each_examples_own_box():
  fixture = original()
  masks = fixture['cutmix_masks']
  _, mixed_labels = augment.cutmix_with_masks(
      fixture['cutmix_images'], fixture['cutmix_labels'], masks, fixes=True)
  mixed_labels = mixed_labels.numpy()
  own_area = masks.mean(axis=(1, 2))
  batch = len(masks)
  np.testing.assert_allclose(
      mixed_labels[np.arange(batch), np.arange(batch)[::-1]], own_area,
      atol=1e-6)
  np.testing.assert_allclose(mixed_labels.sum(1), 1, atol=1e-6)


def pasted_boxes(images, mixed):
  """Where each mixed example took its partner's pixels: [B, H, W]."""
  taken = mixed[..., 0] != images[..., 0]
  for mask in taken:
    if mask.any():
      filled_box(mask)
  return taken


@pytest.mark.parametrize('fixes', [False, True])
def test_cutmix_label_weight_is_batch_mean_pasted_area_or_own_with_fixes(
    fixes):
  images = np.zeros((BATCH, 16, 16, 3), np.float32)
  images[1::2] = 1  # each example's reversed partner has the other value
  labels = np.eye(BATCH, dtype=np.float32)
  unequal = 0
  for seed in range(4):
    mixed, mixed_labels = (t.numpy() for t in augment.cutmix(
        images, labels, 1.0, [seed, 5], fixes=fixes))
    fractions = pasted_boxes(images, mixed).mean(axis=(1, 2))
    unequal += np.ptp(fractions) > 0.05
    # The original weights every example by the batch's mean pasted area.
    weights = fractions if fixes else np.full(BATCH, fractions.mean())
    expected = ((1 - weights)[:, None] * labels
                + weights[:, None] * labels[::-1])
    np.testing.assert_allclose(mixed_labels, expected, atol=1e-6)
  assert unequal > 0


@pytest.mark.parametrize('fixes', [False, True])
def test_mix_batch_with_both_gives_mixup_then_cutmix_halves(fixes):
  images, labels = numbered_batch(8)
  mixed, mixed_labels = (t.numpy() for t in augment.mix_batch(
      images, labels, 0.2, 1.0, SEED, fixes=fixes))
  for i in range(4):  # mixup within the first half
    partner = 3 - i
    assert np.ptp(mixed[i]) < 1e-5
    assert set(np.flatnonzero(mixed_labels[i])) <= {i, partner}
    assert mixed_labels[i, i] >= 0.5
  # cutmix within the second half, weighted by the half's mean area unless
  # fixes asks for each example's own
  pasted = [(mixed[i] == 11 - i).mean() for i in range(4, 8)]
  assert np.ptp(pasted) > 0.05
  for i, area in zip(range(4, 8), pasted):
    partner = 11 - i
    assert set(np.unique(mixed[i])) <= {i, partner}
    np.testing.assert_allclose(mixed_labels[i, partner],
                               area if fixes else np.mean(pasted), atol=1e-6)
  np.testing.assert_allclose(mixed_labels.sum(1), 1, atol=1e-6)


def test_mix_batch_without_alphas_changes_nothing():
  images, labels = numbered_batch()
  out_images, out_labels = augment.mix_batch(images, labels, 0.0, None, SEED)
  np.testing.assert_array_equal(out_images, images)
  np.testing.assert_array_equal(out_labels, labels)


MIXERS = {
    'mixup': lambda im, lab, seed: augment.mixup(im, lab, 0.2, seed),
    'cutmix': lambda im, lab, seed: augment.cutmix(im, lab, 1.0, seed),
    'both': lambda im, lab, seed: augment.mix_batch(im, lab, 0.2, 1.0, seed),
}


@pytest.mark.parametrize('mixer', sorted(MIXERS))
def test_mixing_is_deterministic_per_seed(mixer):
  images = np.random.default_rng(0).random((BATCH, 16, 16, 3), np.float32)
  labels = np.eye(BATCH, dtype=np.float32)
  first, again, other = (MIXERS[mixer](images, labels, seed)[0].numpy()
                         for seed in ([1, 2], [1, 2], [3, 4]))
  np.testing.assert_array_equal(first, again)
  assert not np.array_equal(first, other)


@pytest.mark.parametrize('mixer', sorted(MIXERS))
def test_mixing_runs_in_dataset_map_after_batch(mixer):
  images, labels = numbered_batch()
  dataset = tf.data.Dataset.from_tensor_slices((images, labels)).batch(4)
  assert dataset.element_spec[0].shape[0] is None
  dataset = dataset.map(lambda im, lab: MIXERS[mixer](im, lab, SEED))
  for (mixed, mixed_labels), start in zip(dataset, (0, 4)):
    eager = MIXERS[mixer](images[start:start + 4], labels[start:start + 4],
                          SEED)
    np.testing.assert_allclose(mixed.numpy(), eager[0].numpy(), atol=1e-6)
    np.testing.assert_allclose(mixed_labels.numpy().sum(1), 1, atol=1e-6)
