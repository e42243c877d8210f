"""Augmentation policies and batch mixing; eagerly and in tf.data.

The original's cutmix outputs come from `tests/fixtures/augment_ops.npz`,
written by `tools/oracle/augment_fixtures.py` running the original code.
"""
import numpy as np
import pytest
import tensorflow as tf

from efficientnetv2_tf import augment
from hparams.errors import UserError
from tests import oracle_fixtures
from tests.image_files import filled_box
from tests.image_files import random_image
from tests.image_files import run_in_map

SEED = tf.constant([7, 11], tf.int64)


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
  fixture = oracle_fixtures.load('augment_ops')
  assert len(np.unique(fixture['cutmix_masks'].mean(axis=(1, 2)))) > 1
  mixed, mixed_labels = augment.cutmix_with_masks(
      fixture['cutmix_images'], fixture['cutmix_labels'],
      fixture['cutmix_masks'])
  np.testing.assert_array_equal(mixed, fixture['cutmix_mixed_images'])
  np.testing.assert_allclose(mixed_labels, fixture['cutmix_mixed_labels'],
                             atol=1e-6)


def test_cutmix_with_fixes_weights_labels_by_each_examples_own_box():
  fixture = oracle_fixtures.load('augment_ops')
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
