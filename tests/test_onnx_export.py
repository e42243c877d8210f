"""ONNX exports agree with the serving signature."""
import json
import sys

import keras
import numpy as np
import onnxruntime
import pytest
import tensorflow as tf

from efficientnetv2_tf import export
from efficientnetv2_tf import onnx_export
from efficientnetv2_tf.model import EfficientNet
from hparams.errors import UserError
from hparams.models import V2_BASE_BLOCKS
from hparams.weights import InputContract

SIZE = 32
# 8-bit levels, which `serving_default` keeps exactly; per-channel ImageNet
# normalisation, so that a swapped channel shows; no crop, so that serving
# sees the whole image as the ONNX model does.
IMAGES = (np.random.default_rng(0).integers(0, 256, (6, SIZE, SIZE, 3)) /
          255.0).astype(np.float32)
CONTRACT = InputContract('imagenet', 'bilinear', 'none', SIZE)


@pytest.fixture(scope='module')
def source():
  keras.utils.set_random_seed(0)
  model = EfficientNet(V2_BASE_BLOCKS, num_classes=10, width_coefficient=0.25,
                       depth_coefficient=0.2)
  return export.Source(model, 'efficientnetv2-b0', CONTRACT,
                       [f'class {i}' for i in range(10)])


@pytest.fixture(scope='module')
def served(source):
  """The probabilities of `IMAGES` from the serving signature (the one an
  export saves; tests/test_export.py compares a saved one)."""
  serving = export.ServingModule(source)
  return serving.serving_default(tf.constant(IMAGES))['probabilities'].numpy()


@pytest.fixture(scope='module')
def onnx_files(source):
  return {precision: onnx_export.onnx_model(source, precision)
          for precision in onnx_export.PRECISIONS}


@pytest.fixture(scope='module')
def sessions(onnx_files):
  return {precision: onnxruntime.InferenceSession(
      model, providers=['CPUExecutionProvider'])
          for precision, model in onnx_files.items()}


def probabilities(session, images):
  return session.run(['probabilities'], {'images': images})[0]


@pytest.mark.slow
def test_onnx_matches_serving_default_at_any_batch(sessions, served):
  session = sessions['fp32']
  np.testing.assert_allclose(probabilities(session, IMAGES), served,
                             atol=1e-4)
  np.testing.assert_allclose(probabilities(session, IMAGES[:1]), served[:1],
                             atol=1e-4)


def test_onnx_takes_float_images_of_the_eval_size_and_any_batch(sessions):
  for session in sessions.values():
    (images,), (output,) = session.get_inputs(), session.get_outputs()
    assert (images.name, images.type) == ('images', 'tensor(float)')
    assert not isinstance(images.shape[0], int)  # dynamic batch
    assert images.shape[1:] == [SIZE, SIZE, 3]
    assert (output.name, output.type) == ('probabilities', 'tensor(float)')


@pytest.mark.slow
def test_fp16_onnx_keeps_the_top1_class(sessions, served):
  half = probabilities(sessions['fp16'], IMAGES)
  np.testing.assert_allclose(half, served, atol=1e-2)
  agreement = np.mean(half.argmax(-1) == served.argmax(-1))
  print(f'fp16 top-1 agreement: {agreement:.3f}')
  assert agreement >= 5 / 6


def test_fp16_onnx_stores_half_precision_weights(onnx_files):
  assert len(onnx_files['fp16']) < 0.6 * len(onnx_files['fp32'])


def test_onnx_carries_the_model_name_labels_and_contract(sessions):
  metadata = sessions['fp32'].get_modelmeta().custom_metadata_map
  assert metadata['model_name'] == 'efficientnetv2-b0'
  assert metadata['image_size'] == str(SIZE)
  assert metadata['labels'].split('\n') == [f'class {i}' for i in range(10)]
  assert json.loads(metadata['preprocessing']) == CONTRACT.describe()


def test_an_unknown_precision_is_refused(source):
  with pytest.raises(UserError, match="onnx_precision must be one of fp32, "
                     "fp16; "
                     "received: 'int8'"):
    onnx_export.onnx_model(source, 'int8')


def test_a_missing_converter_says_what_to_install(source, monkeypatch):
  monkeypatch.setitem(sys.modules, 'tf2onnx', None)
  with pytest.raises(UserError) as error:
    onnx_export.onnx_model(source)
  assert str(error.value) == ('ONNX export needs the tf2onnx package; '
                              'install it with: pip install tf2onnx==1.17.0')
