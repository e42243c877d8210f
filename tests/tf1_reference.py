"""An independent forward pass of the original EfficientNet, in plain tf.nn.

It reads weights by their TF1 checkpoint names, as the original code names
them, through a `get(name, shape)` callback. Given a callback that makes up
values, the same pass both defines a checkpoint's contents and computes the
logits that checkpoint must produce: the fixture for the parity test.
"""
import math
import os
import pathlib
import re
import tarfile
import types

import numpy as np
import tensorflow as tf

from efficientnetv2_tf import official

BN_EPSILON = 1e-3


def _bn(x, get, prefix):
  c = x.shape[-1]
  gamma, beta = get(prefix + '/gamma', (c,)), get(prefix + '/beta', (c,))
  mean = get(prefix + '/moving_mean', (c,))
  var = get(prefix + '/moving_variance', (c,))
  return (x - mean) / tf.sqrt(var + BN_EPSILON) * gamma + beta


def _conv(x, get, prefix, filters, kernel, stride=1, bias=False):
  w = get(prefix + '/kernel', (kernel, kernel, x.shape[-1], filters))
  y = tf.nn.conv2d(x, w, stride, 'SAME')
  return y + get(prefix + '/bias', (filters,)) if bias else y


def _silu(x):
  return x * tf.sigmoid(x)


def _se(x, get, prefix, reduced):
  s = tf.reduce_mean(x, [1, 2], keepdims=True)
  s = _silu(_conv(s, get, prefix + '/conv2d', reduced, 1, bias=True))
  s = _conv(s, get, prefix + '/conv2d_1', x.shape[-1], 1, bias=True)
  return x * tf.sigmoid(s)


def _round(filters, width, floor):
  """Channel rounding of the original code (floor 0.9 in the V1 code)."""
  scaled = filters * width
  rounded = max(8, int(scaled + 4) // 8 * 8)
  return rounded + 8 if rounded < floor * scaled else rounded


def _blocks(blocks_args, width, depth, floor):
  """Every block's arguments, from the block strings, as the original does."""
  flat = []
  for text in blocks_args:
    opts = dict(re.match(r'([a-z]+)(.*)', t).groups() for t in text.split('_'))
    args = types.SimpleNamespace(
        kernel_size=int(opts['k']), strides=int(opts['s']),
        expand_ratio=int(opts['e']), conv_type=int(opts.get('c', 0)),
        se_ratio=float(opts['se']) if 'se' in opts else None,
        input_filters=_round(int(opts['i']), width, floor),
        output_filters=_round(int(opts['o']), width, floor))
    args.has_se = args.se_ratio is not None
    for rep in range(int(math.ceil(depth * int(opts['r'])))):
      flat.append(types.SimpleNamespace(**vars(args)))
      if rep == 0:
        args.strides, args.input_filters = 1, args.output_filters
  return flat


def _block(x, get, p, args):
  inputs = x
  expanded = args.input_filters * args.expand_ratio
  names = iter(['', '_1', '_2'])
  convs = iter(['conv2d', 'conv2d_1'])
  bn = lambda y: _bn(y, get, f'{p}/tpu_batch_normalization{next(names)}')
  se = lambda y: _se(y, get, p + '/se', max(
      1, int(args.input_filters * args.se_ratio))) if args.has_se else y
  if args.conv_type == 0:
    if args.expand_ratio != 1:
      x = _silu(bn(_conv(x, get, f'{p}/{next(convs)}', expanded, 1)))
    w = get(p + '/depthwise_conv2d/depthwise_kernel',
            (args.kernel_size, args.kernel_size, x.shape[-1], 1))
    x = _silu(bn(tf.nn.depthwise_conv2d(
        x, w, [1, args.strides, args.strides, 1], 'SAME')))
    x = se(x)
    x = bn(_conv(x, get, f'{p}/{next(convs)}', args.output_filters, 1))
  elif args.expand_ratio != 1:
    x = _silu(bn(_conv(x, get, f'{p}/{next(convs)}', expanded,
                       args.kernel_size, args.strides)))
    x = se(x)
    x = bn(_conv(x, get, f'{p}/{next(convs)}', args.output_filters, 1))
  else:
    x = se(x)
    x = _silu(bn(_conv(x, get, f'{p}/{next(convs)}', args.output_filters,
                       args.kernel_size, args.strides)))
  if args.strides == 1 and args.input_filters == args.output_filters:
    x = x + inputs
  return x


def forward(images, get, model_name, blocks_args, num_classes,
            width=1.0, depth=1.0, floor=0.0, feature_size=1280):
  """Logits of the original model in inference mode."""
  flat = _blocks(blocks_args, width, depth, floor)
  x = _conv(images, get, f'{model_name}/stem/conv2d',
            flat[0].input_filters, 3, 2)
  x = _silu(_bn(x, get, f'{model_name}/stem/tpu_batch_normalization'))
  for idx, args in enumerate(flat):
    x = _block(x, get, f'{model_name}/blocks_{idx}', args)
  head = f'{model_name}/head'
  x = _conv(x, get, head + '/conv2d', _round(feature_size, width, floor), 1)
  x = tf.reduce_mean(_silu(_bn(x, get, head + '/tpu_batch_normalization')),
                     [1, 2])
  w = get(head + '/dense/kernel', (x.shape[-1], num_classes))
  return tf.matmul(x, w) + get(head + '/dense/bias', (num_classes,))


class RandomWeights:
  """A `get` callback that makes up plausible weights and remembers them."""

  def __init__(self, seed=0):
    self.rng = np.random.default_rng(seed)
    self.values = {}

  def __call__(self, name, shape):
    if name not in self.values:
      leaf = name.rsplit('/', 1)[-1]
      if leaf in ('kernel', 'depthwise_kernel'):
        fan_out = np.prod(shape[:-2]) * shape[-1] if len(shape) == 4 \
            else shape[-1]
        value = self.rng.normal(0, np.sqrt(1.0 / fan_out), shape)
      elif leaf in ('gamma', 'moving_variance'):
        value = self.rng.uniform(0.5, 1.5, shape)
      else:  # beta, moving_mean, bias
        value = self.rng.normal(0, 0.1, shape)
      self.values[name] = value.astype(np.float32)
    return tf.constant(self.values[name])


def write_checkpoint(prefix, tensors):
  """Writes a TF1 name-based checkpoint holding `tensors` (name -> array)."""
  names = sorted(tensors)
  tf.raw_ops.SaveV2(prefix=prefix, tensor_names=names,
                    shape_and_slices=[''] * len(names),
                    tensors=[tf.constant(tensors[n]) for n in names])


# Two random images in [-1, 1] at 64 px, as the reference forward passes take.
IMAGES = np.random.default_rng(1).uniform(-1, 1, (2, 64, 64, 3)).astype(
    'float32')


def official_checkpoint(images, directory, model_name, blocks_args,
                        num_classes=1000, width=1.0, depth=1.0, floor=0.0,
                        extra=None, drop=(), state=True):
  """Writes an official-style checkpoint; returns (dir, EMA logits, values).

  Every variable gets an EMA shadow holding the values the reference logits
  were computed with; the raw values are shifted so that loading them
  instead would change the logits. Optimizer slots and the step are added
  as in the published files.
  """
  weights = RandomWeights()
  logits = forward(images, weights, model_name, blocks_args, num_classes,
                   width, depth, floor).numpy()
  tensors = {'global_step': np.array(1000, np.int64)}
  for name, value in weights.values.items():
    tensors[name] = value + 0.5
    tensors[name + '/ExponentialMovingAverage'] = value
    tensors[name + '/RMSProp'] = np.ones_like(value)
  tensors.update(extra or {})
  for name in drop:
    del tensors[name]
  os.makedirs(directory, exist_ok=True)
  prefix = os.path.join(directory, 'model')
  write_checkpoint(prefix, tensors)
  if state:
    with open(os.path.join(directory, 'checkpoint'), 'w') as f:
      f.write('model_checkpoint_path: "model"\n')
  return directory, logits, weights.values


def archive(directory, path):
  """Packs a checkpoint directory as the published .tgz files are packed."""
  with tarfile.open(path, 'w:gz') as tar:
    tar.add(directory, arcname=os.path.basename(str(path)).split('.')[0])
  return path


def place_in_cache(directory, model_name, tag):
  """Packs a checkpoint directory as the archive of published weights and
  puts it where `official.download` keeps it, so that loading those
  weights takes the real download path without touching the network."""
  path = pathlib.Path(official.archive_path(model_name, tag))
  path.parent.mkdir(parents=True, exist_ok=True)
  return archive(directory, path)
