"""Writes `tests/fixtures/official_checkpoints.npz`: checkpoints saved by the
original model code, and the logits the original computes from them.

    python tools/oracle/checkpoint_fixtures.py \
        --automl_dir=/tmp/automl/efficientnetv2

takes about 80 s on two CPU cores and writes about 1.6 MB. It scores the
JPEGs of `preprocessing.npz`: write that one first.

For each tiny model in `MODELS`, in TF1 graph mode:

1. the original's `EffNetV2Model` is built, with a `global_step` and an
   `ExponentialMovingAverage` over the variables its training code averages
   (`utils.get_ema_vars`); the weights and their shadows get independent
   random values (the shadows are the ones that matter) and a
   `tf.compat.v1.train.Saver` writes them, as the original's training does;
2. a fresh model restores the shadows as its evaluation does
   (`ema.variables_to_restore`) and computes logits of `images`, a fixed
   random batch in [-1, 1]; restoring the raw weights instead gives
   `logits_raw`;
3. the same model scores the JPEGs of `preprocessing.npz` after the
   original's eval preprocessing (`END_TO_END`), as log-probabilities.

Keys, for each model name `m`: `m:<variable>` (every tensor of the saved
checkpoint, under the name the original gave it), `m/model_config` (JSON:
the overrides the model was built with), `m/logits`, `m/logits_raw`; and
`images`, `end_to_end/<m>/<weights>/{log_probs,recipe,image_size}`,
`end_to_end/jpeg_sha1`.

Built in graph mode, the original names its classifier
`<m>/head_1/dense/...` (its `tf.name_scope('head')` comes after the `head`
layer's own scope), while the published checkpoints say `<m>/head/dense/...`;
`m/classifier_scope` records the name found here.

Sizes are kept small: widths leave few channels (the 1000-class heads have
64 or 128 inputs), and every value is drawn on the float16 grid so that
storing it as float16 loses nothing. The V1 width (0.15) is one where the
original's channel rounding agrees with that of the V1 code the published
V1 checkpoints came from (which never rounds down by more than 10%).
"""
import hashlib
import json
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import original  # pylint: disable=g-import-not-at-top,wrong-import-position

MODELS = {
    'efficientnetv2-b0': {'width_coefficient': 0.1, 'depth_coefficient': 0.2,
                          'num_classes': 1000},
    'efficientnetv2-s': {'width_coefficient': 0.05, 'depth_coefficient': 0.2,
                         'num_classes': 1000},
    'efficientnet-b0': {'width_coefficient': 0.15, 'depth_coefficient': 0.2,
                        'num_classes': 10},
}
# (model, weights): (recipe of preprocessing.npz, the original's augname,
# image size).
END_TO_END = {
    ('efficientnetv2-b0', 'imagenet'): ('v1', 'effnetv1_autoaug', 224),
    ('efficientnetv2-b0', 'imagenet21k-ft1k'): ('ft', 'ft', 224),
    ('efficientnetv2-s', 'imagenet'): ('v2', None, 384),
}
GLOBAL_STEP = 1000
EMA_DECAY = 0.9999  # the original's default `train.ema_decay`


def random_value(name: str, shape, rng: np.random.Generator) -> np.ndarray:
  """A plausible value for a variable, on the float16 grid.

  Kernels are scaled by fan-in so activations neither vanish nor explode;
  batch-norm statistics are far from their initial 0 and 1.
  """
  leaf = name.rsplit('/', 1)[-1]
  if leaf in ('kernel', 'depthwise_kernel'):
    fan_in = np.prod(shape[:-1]) if leaf == 'kernel' else np.prod(shape[:2])
    value = rng.normal(0, np.sqrt(1.5 / fan_in), shape)
  elif leaf == 'gamma':
    value = rng.uniform(0.5, 1.5, shape)
  elif leaf == 'moving_variance':
    value = rng.uniform(0.3, 3.0, shape)
  elif leaf == 'moving_mean':
    value = rng.normal(0, 0.5, shape)
  else:  # beta, bias
    value = rng.normal(0, 0.2, shape)
  return value.astype(np.float16).astype(np.float32)


def _assign_all(sess, tf, variables, values) -> None:
  feeds, ops = {}, []
  for variable, value in zip(variables, values):
    holder = tf.compat.v1.placeholder(variable.dtype.base_dtype, value.shape)
    ops.append(variable.assign(holder))
    feeds[holder] = value
  sess.run(ops, feeds)


def save_trained(tf, effnetv2_model, utils, model_name, model_config,
                 seed, prefix) -> str:
  """Builds the model with its EMA, gives every variable and shadow a
  random value, and saves them as the original's training would."""
  rng = np.random.default_rng(seed)
  with tf.Graph().as_default():
    model = effnetv2_model.EffNetV2Model(model_name, dict(model_config))
    model(tf.compat.v1.placeholder(tf.float32, [None, 32, 32, 3]),
          training=False)
    global_step = tf.compat.v1.train.get_or_create_global_step()
    ema = tf.compat.v1.train.ExponentialMovingAverage(
        decay=EMA_DECAY, num_updates=global_step)
    ema_vars = sorted(utils.get_ema_vars(), key=lambda v: v.name)
    ema.apply(ema_vars)
    weights = sorted(model.weights, key=lambda v: v.name)
    if set(weights) != set(ema_vars):
      raise SystemExit('the EMA does not cover exactly the model weights')
    with tf.compat.v1.Session() as sess:
      sess.run(tf.compat.v1.global_variables_initializer())
      names = [v.op.name for v in weights]
      _assign_all(sess, tf, weights, [
          random_value(n, v.shape, rng) for n, v in zip(names, weights)])
      _assign_all(sess, tf, [ema.average(v) for v in weights], [
          random_value(n, v.shape, rng) for n, v in zip(names, weights)])
      sess.run(global_step.assign(GLOBAL_STEP))
      return tf.compat.v1.train.Saver().save(sess, prefix,
                                             global_step=global_step)


def evaluate(tf, effnetv2_model, utils, preprocessing, model_name,
             model_config, checkpoint, images, jpegs):
  """Logits of `images` with the EMA and with the raw weights, and the
  log-probabilities of the JPEGs for each `END_TO_END` entry of the model."""
  with tf.Graph().as_default():
    model = effnetv2_model.EffNetV2Model(model_name, dict(model_config))
    inputs = tf.compat.v1.placeholder(tf.float32, [None, None, None, 3])
    logits = model(inputs, training=False)
    log_probs = tf.nn.log_softmax(logits)
    ema = tf.compat.v1.train.ExponentialMovingAverage(decay=EMA_DECAY)
    ema_saver = tf.compat.v1.train.Saver(
        ema.variables_to_restore(utils.get_ema_vars()))
    raw_saver = tf.compat.v1.train.Saver()
    data = tf.compat.v1.placeholder(tf.string, [])
    recipes = {key: preprocessing.preprocess_image(
        data, size, is_training=False, augname=augname)
               for key, (_, augname, size) in END_TO_END.items()
               if key[0] == model_name}
    with tf.compat.v1.Session() as sess:
      raw_saver.restore(sess, checkpoint)
      logits_raw = sess.run(logits, {inputs: images})
      ema_saver.restore(sess, checkpoint)
      result = {'logits': sess.run(logits, {inputs: images}),
                'logits_raw': logits_raw}
      for key, image in recipes.items():
        batch = np.stack([sess.run(image, {data: jpeg}) for jpeg in jpegs])
        result[key] = sess.run(log_probs, {inputs: batch})
  return result


def model_fixtures(tf, effnetv2_model, utils, preprocessing, name,
                   model_config, seed, images, jpegs):
  """The arrays of one model: its checkpoint's tensors, logits and the
  log-probabilities of its `END_TO_END` entries."""
  fixtures = {}
  with tempfile.TemporaryDirectory() as tmp:
    checkpoint = save_trained(tf, effnetv2_model, utils, name, model_config,
                              seed, os.path.join(tmp, 'model.ckpt'))
    reader = tf.compat.v1.train.NewCheckpointReader(checkpoint)
    for variable in reader.get_variable_to_shape_map():
      value = reader.get_tensor(variable)
      if value.dtype == np.float32:
        if not np.array_equal(value.astype(np.float16), value):
          raise SystemExit(f'{variable} is not on the float16 grid')
        value = value.astype(np.float16)
      fixtures[f'{name}:{variable}'] = value
    results = evaluate(tf, effnetv2_model, utils, preprocessing, name,
                       model_config, checkpoint, images, jpegs)
  scopes = {v.split('/')[1] for v in fixtures if '/dense/' in v}
  fixtures[f'{name}/classifier_scope'] = np.array(scopes.pop())
  fixtures[f'{name}/model_config'] = np.array(json.dumps(model_config))
  fixtures[f'{name}/logits'] = results.pop('logits')
  fixtures[f'{name}/logits_raw'] = results.pop('logits_raw')
  for (_, weights), log_probs in results.items():
    recipe, _, size = END_TO_END[name, weights]
    key = f'end_to_end/{name}/{weights}'
    fixtures[key + '/log_probs'] = log_probs
    fixtures[key + '/recipe'] = np.array(recipe)
    fixtures[key + '/image_size'] = np.array(size)
  raw_change = np.abs(fixtures[f'{name}/logits'] -
                      fixtures[f'{name}/logits_raw']).max()
  print(f'{name}: max |logit| '
        f'{np.abs(fixtures[f"{name}/logits"]).max():.2f}; the raw weights '
        f'change the logits by up to {raw_change:.2f}')
  return fixtures


def main() -> None:
  args = original.start(
      __doc__, 'official_checkpoints.npz',
      lambda parser: parser.add_argument(
          '--jpegs', default=os.path.join(original.FIXTURES_DIR,
                                          'preprocessing.npz'),
          help='the npz whose JPEGs the end-to-end entries score'))
  # pylint: disable=g-import-not-at-top
  import tensorflow as tf
  import effnetv2_model
  import preprocessing
  import utils
  # pylint: enable=g-import-not-at-top

  with np.load(args.jpegs) as stored:
    jpegs = [stored[f'jpeg/{i}'].tobytes()
             for i in range(sum(k.startswith('jpeg/') for k in stored.files))]
  images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3)).astype(
      np.float32)
  fixtures = {'images': images, 'end_to_end/jpeg_sha1': np.array(
      [hashlib.sha1(jpeg).hexdigest() for jpeg in jpegs])}
  for seed, (name, model_config) in enumerate(MODELS.items()):
    fixtures.update(model_fixtures(tf, effnetv2_model, utils, preprocessing,
                                   name, model_config, seed, images, jpegs))
  original.save(args, fixtures)


if __name__ == '__main__':
  main()
