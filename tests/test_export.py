"""Exports of a tiny trained run: serving, TF Hub, TFLite, ONNX, predict
and benchmark in every runtime."""
import json
import os
import re
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
import onnxruntime
import tensorflow_hub as hub
import tf_keras

from app import inference
from app import runs
import datasets
import efficientnetv2_tf
import hparams
from efficientnetv2_tf import checkpoints
from efficientnetv2_tf import distribute
from efficientnetv2_tf import export
from efficientnetv2_tf import predict
from efficientnetv2_tf import trainer as trainer_lib
from efficientnetv2_tf.run_dir import RunDir
from hparams import models
from hparams.errors import UserError
from tests import conftest
from tests import tf1_reference

pytestmark = pytest.mark.slow

TINY_RUN = f'{conftest.TINY_RUN},train.epochs=1,train.stages=1'
IMAGES = np.random.default_rng(0).uniform(0, 1, (4, 32, 32, 3)).astype(
    np.float32)


@pytest.fixture(scope='module')
def exported(tmp_path_factory):
  """A one-epoch run on digits (EMA on), exported."""
  model_dir = str(tmp_path_factory.mktemp('run'))
  cfg = hparams.get_config('efficientnetv2-b0', 'digits', TINY_RUN)
  runs.run('train', cfg, datasets.bind, model_dir,
           distribute.get_strategy('cpu'))
  trainer = trainer_lib.Trainer(hparams.build_specs(cfg), datasets.bind(cfg),
                                model_dir, distribute.get_strategy('cpu'))
  trainer.restore()
  export_dir = os.path.join(model_dir, 'export')
  info = inference.run_export(export.load_run(model_dir), export_dir,
                         overwrite=False, quantization='none')
  return model_dir, export_dir, trainer, info


def ema_logits(trainer, images):
  """The run's EMA logits for [0, 1] images, normalised by hand as its
  recipe (`ft_none`: `(x / 255 - 0.5) / 0.5`) says."""
  with trainer.ema.applied():
    return trainer.model((images - 0.5) / 0.5, training=False).numpy()


def test_export_writes_every_artefact_and_describes_them(exported):
  _, export_dir, trainer, info = exported
  for name in ('saved_model', 'hub_classification', 'hub_feature_vector',
               'model.tflite', 'model.onnx', 'labels.txt', 'export.json'):
    assert os.path.exists(os.path.join(export_dir, name)), name
  saved = json.load(open(os.path.join(export_dir, 'export.json')))
  assert saved['model_name'] == 'efficientnetv2-b0'
  assert saved['image_size'] == 32 and saved['num_classes'] == 10
  assert saved['step'] == trainer.step == 5
  assert saved['preprocessing']['normalization'] == 'inception'
  assert saved['preprocessing']['crop'] == 'none'
  assert saved['preprocessing']['resize'] == 'bilinear'
  assert (saved['onnx_precision'], saved['onnx_opset']) == ('fp32', 17)
  assert all(size > 0 for size in info['files'].values())
  labels = open(os.path.join(export_dir, 'labels.txt')).read().split()
  assert labels == [str(i) for i in range(10)]  # digits' class names
  assert not [n for n in os.listdir(os.path.dirname(export_dir))
              if '.tmp-' in n]


def test_hub_module_gives_the_ema_eval_logits(exported):
  _, export_dir, trainer, _ = exported
  module = hub.load(os.path.join(export_dir, 'hub_classification'))
  np.testing.assert_allclose(module(IMAGES, False).numpy(),
                             ema_logits(trainer, IMAGES), atol=1e-5)
  assert len(module.trainable_variables) < len(module.variables)
  features = hub.load(os.path.join(export_dir, 'hub_feature_vector'))
  assert features(IMAGES, False).shape == (4, trainer.model.num_features)


def test_hub_keras_layer_fine_tunes_in_tf_keras(exported):
  _, export_dir, _, _ = exported
  layer = hub.KerasLayer(os.path.join(export_dir, 'hub_feature_vector'),
                         trainable=True)
  model = tf_keras.Sequential([tf_keras.Input((32, 32, 3)), layer,
                               tf_keras.layers.Dense(3)])
  model.compile(tf_keras.optimizers.SGD(0.05),
                tf_keras.losses.SparseCategoricalCrossentropy(
                    from_logits=True))
  labels = np.arange(4) % 3
  moving = [w for w in layer.weights if 'moving_mean' in w.name][0]
  before_stats = moving.numpy().copy()
  first = model.evaluate(IMAGES, labels, verbose=0)
  model.fit(IMAGES, labels, epochs=8, batch_size=4, verbose=0)
  assert model.evaluate(IMAGES, labels, verbose=0) < first
  # Training mode updated BatchNorm's statistics, as in training.
  assert not np.allclose(before_stats, moving.numpy())


def test_hub_module_of_given_weights_fine_tunes_as_a_runs_does(tmp_path):
  # Weights given by path or tag load unfrozen, as a run's do: a hub
  # module of a frozen model had no trainable variable, and in training
  # its BatchNorm kept its averages.
  model = efficientnetv2_tf.get_model('efficientnetv2-b0', conftest.TINY)
  prefix = checkpoints.save(model, str(tmp_path / 'weights' / 'ckpt'))
  source = export.load_pretrained('efficientnetv2-b0', prefix, conftest.TINY)
  path = str(tmp_path / 'hub_feature_vector')
  export.HubModule(export.feature_model(source.model),
                   source.normalization).save(path)
  layer = hub.KerasLayer(path, trainable=True)
  classifier = len(model.classifier.trainable_weights)
  assert len(layer.trainable_weights) == (len(model.trainable_weights) -
                                          classifier)
  moving = [w for w in layer.weights if 'moving_mean' in w.name][0]
  before = moving.numpy().copy()
  layer(IMAGES, training=True)
  assert not np.allclose(before, moving.numpy())


def test_tfsm_layer_serves_the_hub_module_in_keras_3(exported):
  _, export_dir, trainer, _ = exported
  layer = keras.layers.TFSMLayer(os.path.join(export_dir,
                                              'hub_classification'),
                                 call_endpoint='serving_default')
  outputs = layer(IMAGES)['outputs']
  np.testing.assert_allclose(keras.ops.convert_to_numpy(outputs),
                             ema_logits(trainer, IMAGES), atol=1e-5)


def test_serving_signatures_take_pixels_and_encoded_images(exported):
  _, export_dir, _, _ = exported
  signatures = tf.saved_model.load(
      os.path.join(export_dir, 'saved_model')).signatures
  pixels = tf.cast(tf.round(IMAGES[:2] * 255), tf.uint8)
  from_floats = signatures['serving_default'](tf.constant(IMAGES[:2]))
  png = tf.io.encode_png(pixels[0])
  jpeg = tf.io.encode_jpeg(pixels[1], quality=95)
  from_bytes = signatures['serving_bytes'](tf.stack([png, jpeg]))
  # PNG is lossless: exactly the pixels serving_default saw.
  np.testing.assert_allclose(from_bytes['probabilities'][0],
                             from_floats['probabilities'][0], atol=1e-6)
  np.testing.assert_allclose(
      np.sum(from_bytes['probabilities'], axis=1), 1.0, atol=1e-5)
  assert from_bytes['top_k_names'].shape == (2, 5)
  assert from_floats['top_k_names'][0, 0].numpy().decode() == str(
      int(from_floats['top_k_ids'][0, 0]))
  # Any input size is resized to the eval size inside.
  large = signatures['serving_default'](tf.zeros([1, 50, 70, 3]))
  assert large['probabilities'].shape == (1, 10)


@pytest.mark.parametrize('shape', [(32, 32, 3), (1, 32, 32, 4)])
def test_serving_default_rejects_other_ranks_and_channels(exported, shape):
  _, export_dir, _, _ = exported
  signature = tf.saved_model.load(
      os.path.join(export_dir, 'saved_model')).signatures['serving_default']
  # The signature's own shape check or ours: either names the input.
  with pytest.raises(tf.errors.InvalidArgumentError,
                     match=r'images (must be a float32 tensor \[batch, '
                     r'height, width, 3\]|\[.*expected shape \[\?,\?,\?,3\])'):
    signature(images=tf.zeros(shape))


@pytest.mark.parametrize('name', ['model.tflite', 'model.onnx'])
def test_model_files_agree_with_the_serving_signature(exported, name):
  """LiteRT and ONNX Runtime, the maintained interpreters, run the files."""
  _, export_dir, _, _ = exported
  serving = tf.saved_model.load(os.path.join(
      export_dir, 'saved_model')).signatures['serving_default']
  # 8-bit levels, so that serving's rounding to pixels changes nothing.
  images = np.round(IMAGES * 255) / 255
  wanted = serving(tf.constant(images))['probabilities'].numpy()
  if name == 'model.tflite':
    interpreter = Interpreter(model_path=os.path.join(export_dir, name))
    interpreter.allocate_tensors()
    got = []
    for image in images:
      interpreter.set_tensor(interpreter.get_input_details()[0]['index'],
                             image[None].astype(np.float32))
      interpreter.invoke()
      got.append(interpreter.get_tensor(
          interpreter.get_output_details()[0]['index'])[0])
  else:
    session = onnxruntime.InferenceSession(
        os.path.join(export_dir, name), providers=['CPUExecutionProvider'])
    got = session.run(None, {'images': images.astype(np.float32)})[0]
  np.testing.assert_allclose(np.array(got), wanted, atol=1e-4)
  assert (np.argmax(got, -1) == np.argmax(wanted, -1)).all()


def test_float16_tflite_is_smaller_and_still_agrees(exported):
  model_dir, _, _, _ = exported
  source = export.load_run(model_dir)
  full = export.tflite_model(source)
  half = export.tflite_model(source, 'float16')
  assert len(half) < 0.75 * len(full)


def test_predict_reports_a_corrupt_image_and_classifies_the_rest(
    exported, tmp_path, capsys):
  model_dir, export_dir, _, _ = exported
  folder = tmp_path / 'images'
  folder.mkdir()
  pixels = tf.cast(tf.round(IMAGES[0] * 255), tf.uint8)
  (folder / 'a.png').write_bytes(tf.io.encode_png(pixels).numpy())
  (folder / 'b.jpg').write_bytes(tf.io.encode_jpeg(pixels).numpy())
  (folder / 'broken.jpg').write_bytes(b'not an image')
  output = str(tmp_path / 'predictions.json')
  rows = inference.run_predict(export_dir, str(folder), 3, output)
  assert [os.path.basename(r['file']) for r in rows] == [
      'a.png', 'b.jpg', 'broken.jpg']
  assert 'Unknown image file format' in rows[2]['error']
  assert len(rows[0]['top_k']) == 3
  assert json.load(open(output)) == rows
  assert '2 images classified, 1 unreadable' in capsys.readouterr().out
  # Nothing readable is an error, after each file's line and the JSON.
  with pytest.raises(UserError, match=r'none of the 1 image\(s\) of '
                     r'--image_path=.*broken.jpg could be read'):
    inference.run_predict(export_dir, str(folder / 'broken.jpg'), 3, output)
  assert 'error' in json.load(open(output))[0]
  # A run directory, and the export's model files in their runtimes, give
  # the same answer as the export.
  ids = [p['id'] for p in rows[0]['top_k']]
  from_run = predict.predict(model_dir, [str(folder / 'a.png')], top_k=3)
  assert [p['id'] for p in from_run[0]['top_k']] == ids
  for runtime, model in [('onnxruntime', export_dir),
                         ('litert', export_dir),
                         (None, os.path.join(export_dir, 'model.onnx')),
                         (None, os.path.join(export_dir, 'model.tflite'))]:
    found = predict.predict(model, [str(folder / 'a.png'),
                                    str(folder / 'broken.jpg')], 3, runtime)
    assert [p['id'] for p in found[0]['top_k']] == ids, (runtime, model)
    np.testing.assert_allclose(
        [p['probability'] for p in found[0]['top_k']],
        [p['probability'] for p in rows[0]['top_k']], atol=1e-4)
    assert 'error' in found[1]


def test_predict_refuses_a_broken_export_description_in_one_line(
    exported, tmp_path):
  _, export_dir, _, _ = exported
  for name in ('model.onnx', 'export.json', 'labels.txt'):
    (tmp_path / name).write_bytes(open(os.path.join(export_dir, name),
                                       'rb').read())
  image = tmp_path / 'a.png'
  image.write_bytes(tf.io.encode_png(
      tf.cast(tf.round(IMAGES[0] * 255), tf.uint8)).numpy())
  model = str(tmp_path / 'model.onnx')
  (tmp_path / 'labels.txt').write_text('zero\none\n')
  with pytest.raises(UserError, match='^the model gives 10 classes and its '
                     'labels.txt names 2$'):
    predict.predict(model, [str(image)])
  (tmp_path / 'export.json').write_text('{')
  with pytest.raises(UserError, match=r"export\.json' is not valid JSON: "):
    predict.predict(model, [str(image)])


def test_a_run_whose_checkpoint_data_was_cut_short_is_refused_in_one_line(
    exported, tmp_path):
  model_dir, _, _, _ = exported
  copy = tmp_path / 'run'
  shutil.copytree(model_dir, copy, ignore=shutil.ignore_patterns('export'))
  for data in copy.rglob('*.data-*'):
    data.write_bytes(data.read_bytes()[:100])
  with pytest.raises(UserError, match="checkpoint '.*' cannot be read: a data "
                     'file is shorter than its index says'):
    export.load_run(str(copy))


def test_int8_export_is_calibrated_on_images_and_reported_on_eval(
    exported, tmp_path):
  model_dir, export_dir, _, _ = exported
  source = export.load_run(model_dir)
  folder = tmp_path / 'calibration'
  folder.mkdir()
  pixels = np.round(IMAGES * 255).astype(np.uint8)
  for i, image in enumerate(pixels):
    (folder / f'{i}.png').write_bytes(tf.io.encode_png(image).numpy())
  from_folder = inference.calibration_images(str(folder), source.contract)
  # All four files, in a seeded random order.
  order = [int(np.argmin(np.abs(pixels / 255 - image).max((1, 2, 3))))
           for image in from_folder]
  assert sorted(order) == [0, 1, 2, 3]
  np.testing.assert_allclose(from_folder, pixels[order] / 255, atol=1e-6)
  # A folder of class folders: a sample of 4 of its 8 files holds both
  # classes, where its first 4 files are all of class 'a'.
  for name, images in (('a', pixels), ('b', 255 - pixels)):
    (tmp_path / 'classes' / name).mkdir(parents=True)
    for i, image in enumerate(images):
      (tmp_path / 'classes' / name / f'{i}.png').write_bytes(
          tf.io.encode_png(image).numpy())
  sample = inference.calibration_images(str(tmp_path / 'classes'),
                                        source.contract, limit=4)
  of_a = [np.abs(pixels / 255 - image).max((1, 2, 3)).min() < 1e-6
          for image in sample]
  assert len(sample) == 4 and 0 < sum(of_a) < 4
  (folder / 'z.jpg').write_bytes(b'not an image')
  with pytest.raises(UserError, match="calibration_images '/no/such' "
                     'matches no image file'):
    inference.calibration_images('/no/such', source.contract)
  with pytest.raises(UserError, match=r"calibration image '.*z\.jpg' "
                     'cannot be read: '):
    inference.calibration_images(str(folder), source.contract)
  # A run calibrates on its own training split, read as training read it,
  # and is reported on its eval split.
  calibration, (images, labels) = inference.run_images(model_dir, None,
                                                       source.contract)
  assert calibration.shape == (160, 32, 32, 3)  # 16 digits per class
  # The same images as the split's, drawn in another order.
  data = RunDir(model_dir).load_specs().data
  in_order, _ = inference.split_images(datasets.from_spec(data, None),
                                       data.train_split, source.contract)
  np.testing.assert_allclose(np.sort(calibration.reshape(160, -1), 0),
                             np.sort(in_order.reshape(160, -1), 0))
  assert not np.allclose(calibration, in_order)
  assert images.shape == (359, 32, 32, 3) and labels.max() == 9
  int8_dir = str(tmp_path / 'int8')
  info = inference.run_export(source, int8_dir, False, 'int8', None,
                              calibration[:20])
  assert info['tflite_quantization'] == 'int8'
  assert 'model.onnx' not in info['files'] and info['onnx_precision'] is None
  report = inference.int8_report(int8_dir, source, images[:60], labels[:60])
  print(report)
  assert report.images == 60 and 0 <= report.accuracy <= 1
  # Integer weights: a quarter of the float file, plus quantisation data.
  assert info['files']['model.tflite'] < 0.5 * os.path.getsize(
      os.path.join(export_dir, 'model.tflite'))


def test_a_model_file_in_the_wrong_runtime_is_refused(exported):
  _, export_dir, _, _ = exported
  onnx_file = os.path.join(export_dir, 'model.onnx')
  with pytest.raises(UserError, match="runtime 'litert' cannot run .*"
                     "model.onnx'; that takes runtime 'onnxruntime'"):
    predict.predict(onnx_file, [], 1, 'litert')
  with pytest.raises(UserError, match='runtime must be one of tf, '
                     "onnxruntime, litert; received: 'trt'"):
    predict.predict(export_dir, [], 1, 'trt')


def test_benchmark_prints_one_line_per_runtime_and_batch_size(exported,
                                                              capsys):
  model_dir, _, _, _ = exported
  inference.run_benchmark(export.load_run(model_dir), None, '1,2', 2, False,
                          'tf,onnxruntime,litert')
  lines = [json.loads(l[len('benchmark '):])
           for l in capsys.readouterr().out.splitlines()
           if l.startswith('benchmark ')]
  assert [(l['runtime'], l['batch_size']) for l in lines] == [
      ('tf', 1), ('tf', 2), ('onnxruntime', 1), ('onnxruntime', 2),
      ('litert', 1), ('litert', 2)]
  assert {l['image_size'] for l in lines} == {32}
  assert {l['model'] for l in lines} == {'efficientnetv2-b0'}
  assert all(l['images_per_second'] > 0 for l in lines)
  assert not any(l['jit_compile'] for l in lines)


def test_benchmark_times_every_runtime_at_the_image_size_given(exported,
                                                               capsys):
  model_dir, _, _, _ = exported
  source = export.load_run(model_dir)
  results = inference.run_benchmark(source, 48, '2', 1, True,
                                    'tf,litert')
  assert [(r.runtime, r.image_size, r.jit_compile) for r in results] == [
      ('tf', 48, True), ('litert', 48, False)]
  assert len(capsys.readouterr().out.splitlines()) == 2
  with pytest.raises(UserError, match='image_size must be a positive '
                     'integer; received: 0'):
    inference.run_benchmark(source, 0, '2', 1, False, 'litert')
  # More bytes than an address space holds: refused whatever the machine.
  with pytest.raises(UserError, match='batches of 1000000000000 images at '
                     '32 px do not fit in memory; lower --batch_sizes or'):
    inference.run_benchmark(source, None, '1000000000000', 1, False, 'tf')


def test_a_failed_export_leaves_nothing_behind(exported, tmp_path,
                                              monkeypatch):
  model_dir, _, _, _ = exported

  def half_written(source, staging, *args):
    (tmp_path / 'staged').write_text(staging)
    open(os.path.join(staging, 'model.tflite'), 'w').close()
    raise UserError('calibration images must be [32, 32, 3]')

  monkeypatch.setattr(export, '_write_models', half_written)
  with pytest.raises(UserError, match='calibration images'):
    export.export(export.load_run(model_dir), str(tmp_path / 'out'))
  assert (tmp_path / 'staged').read_text().startswith(str(tmp_path / 'out'))
  assert os.listdir(tmp_path) == ['staged']


def test_export_refuses_a_non_empty_dir_and_a_run_without_checkpoint(
    exported, tmp_path):
  _, export_dir, _, _ = exported
  with pytest.raises(UserError, match='exists and is not empty; pass '
                     'overwrite=True'):
    export.check_options(export_dir, overwrite=False)
  # Overwriting replaces earlier exports only, never a run's folder.
  with pytest.raises(UserError, match='is not an earlier export'):
    export.check_options(os.path.dirname(export_dir), overwrite=True)
  export.check_options(export_dir, overwrite=True)
  blocker = tmp_path / 'a_file'
  blocker.write_text('')
  with pytest.raises(UserError, match=f"export_dir '{blocker}/sub/out' "
                     f"cannot be made: '{blocker}' is a file"):
    export.check_options(str(blocker / 'sub' / 'out'), overwrite=False)
  with pytest.raises(UserError, match='is not a run directory'):
    export.load_run(str(tmp_path))
  (tmp_path / 'config.yaml').write_text(
      open(os.path.join(os.path.dirname(export_dir), 'config.yaml')).read())
  with pytest.raises(UserError, match='no checkpoint in .*train first'):
    export.load_run(str(tmp_path))


def test_weights_naming_a_run_serve_with_the_runs_contract(exported):
  # --weights=<a run, its checkpoints/ or a ckpt-N> in export, predict and
  # benchmark: the run's recipe (32 px, no crop, [-1, 1]) and class names,
  # not the V2 defaults (224 px, crop) the model name would give.
  model_dir, _, trainer, _ = exported
  checkpoints = os.path.join(model_dir, 'checkpoints')
  for weights in (model_dir, checkpoints, trainer.state.latest_checkpoint()):
    source = export.load_pretrained('efficientnetv2-s', weights)
    assert source.model.name == 'efficientnetv2-b0'
    assert source.contract == export.load_run(model_dir).contract
    assert source.image_size == 32 and source.contract.crop == 'none'
    assert source.labels == [str(i) for i in range(10)]
    np.testing.assert_allclose(
        source.model((IMAGES - 0.5) / 0.5, training=False).numpy(),
        ema_logits(trainer, IMAGES), atol=1e-5)


def test_pretrained_imagenet_models_export_with_class_names(tmp_path):
  images = np.zeros((1, 32, 32, 3), np.float32)
  directory, _, _ = tf1_reference.official_checkpoint(
      images, tmp_path / 'official', 'efficientnetv2-b0',
      models.V2_BASE_BLOCKS, num_classes=1000, width=0.25, depth=0.2)
  source = export.load_pretrained(
      'efficientnetv2-b0', str(directory),
      'width_coefficient=0.25,depth_coefficient=0.2')
  assert source.labels[:2] == ['tench', 'goldfish'] and len(
      source.labels) == 1000
  assert source.image_size == 224
  module = export.ServingModule(source)
  names = module.serving_default(tf.constant(IMAGES[:1]))['top_k_names']
  assert names.numpy()[0, 0].decode() in source.labels


def test_the_readme_examples_load_the_hub_modules(exported):
  _, export_dir, _, _ = exported
  readme = open(os.path.join(os.path.dirname(os.path.dirname(
      os.path.abspath(__file__))), 'README.md')).read()
  blocks = [b for b in re.findall(r'```python\n(.*?)```', readme, re.S)
            if 'export_dir' in b]
  assert len(blocks) == 3
  namespace = {}
  code = '\n'.join(blocks).replace("'runs/efficientnetv2-b0-digits/export'",
                                   repr(export_dir))
  exec(compile(code, 'README.md', 'exec'), namespace)  # pylint: disable=exec-used
  assert namespace['logits'].shape == (2, 10)
  assert namespace['outputs'].shape == (2, 10)


def test_imagenet_wordnet_ids_become_class_names():
  assert export.readable_labels(['n01440764', 'n01443537', 'cat']) == [
      'tench', 'goldfish', 'cat']
  assert export.imagenet_labels()[:2] == ['tench', 'goldfish']
