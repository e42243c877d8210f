import pytest

from efficientnetv2_tf import blockargs
from hparams import models
from hparams.errors import UserError

ALL_PRESET_STRINGS = sorted(set(
    models.V1_BLOCKS + models.V2_BASE_BLOCKS + models.V2_S_BLOCKS +
    models.V2_M_BLOCKS + models.V2_L_BLOCKS + models.V2_XL_BLOCKS))


@pytest.mark.parametrize('block_string', ALL_PRESET_STRINGS)
def test_every_preset_string_decodes_and_encodes_back(block_string):
  assert blockargs.encode(blockargs.decode(block_string)) == block_string


def test_decode_reads_every_field():
  args = blockargs.decode('r4_k5_s2_e6_i24_o48_se0.25_c1')
  assert args == blockargs.BlockArgs(
      num_repeat=4, kernel_size=5, strides=2, expand_ratio=6,
      input_filters=24, output_filters=48, se_ratio=0.25, conv_type=1)
  assert args.has_se


def test_missing_optional_keys_mean_mbconv_without_se():
  args = blockargs.decode('r1_k3_s1_e1_i32_o16')
  assert args.conv_type == blockargs.MBCONV and not args.has_se


@pytest.mark.parametrize('bad, expected', [
    ('r1_k3_s1_e1_i32_o16_x5', "unknown key in 'x5'; allowed keys: c, e, i"),
    ('r1_k3_s1_e1_i32', 'lacks the keys o'),
    ('r1_k3_s1_e1_i32_o16_se1.5', r'se must be in \(0, 1\]'),
    ('r1_k3_s1_e1_i32_o16_c2', 'c must be 0'),
    ('r0_k3_s1_e1_i32_o16', 'r must be > 0'),
    ('r1_k3_s1.5_e1_i32_o16', "'s1.5' needs a whole number"),
])
def test_bad_block_string_is_named(bad, expected):
  with pytest.raises(UserError, match=expected) as err:
    blockargs.decode(bad)
  assert repr(bad) in str(err.value)


@pytest.mark.parametrize('filters, width, expected', [
    (32, 1.0, 32), (32, 1.1, 32), (40, 1.1, 48), (1280, 1.1, 1408),
    (1280, 1.2, 1536), (16, 0.1, 8), (320, 2.0, 640), (24, 0.25, 8),
])
def test_round_filters_matches_the_original(filters, width, expected):
  assert blockargs.round_filters(filters, width) == expected


@pytest.mark.parametrize('filters, width, floor, expected', [
    (16, 1.2, 0.0, 16), (16, 1.2, 0.9, 24), (40, 1.2, 0.9, 48),
    (16, 0.1, 0.9, 8)])
def test_v1_rounding_floor_adds_a_divisor_when_rounding_loses_over_10pc(
    filters, width, floor, expected):
  assert blockargs.round_filters(filters, width, rounding_floor=floor) == (
      expected)


@pytest.mark.parametrize('repeats, depth, expected', [
    (1, 1.0, 1), (2, 1.1, 3), (3, 3.1, 10), (15, 0.5, 8), (8, 0.2, 2)])
def test_round_repeats_rounds_up(repeats, depth, expected):
  assert blockargs.round_repeats(repeats, depth) == expected


def test_scale_stages_gives_later_blocks_stride_one_and_same_filters():
  (stage,) = blockargs.scale_stages(['r3_k3_s2_e4_i24_o48_c1'], 1.0, 1.0)
  assert [(b.strides, b.input_filters, b.output_filters) for b in stage] == [
      (2, 24, 48), (1, 48, 48), (1, 48, 48)]
