"""Full-integer TFLite of a tiny digits classifier, and top-1 agreement."""
import keras
import numpy as np
import pytest
import tensorflow as tf
from ai_edge_litert.interpreter import Interpreter
from ai_edge_litert.interpreter import OpResolverType
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression

from efficientnetv2_tf import export
from efficientnetv2_tf import quantize
from efficientnetv2_tf import runtimes
from efficientnetv2_tf.model import EfficientNet
from hparams.errors import UserError
from hparams.models import V2_BASE_BLOCKS
from hparams.weights import InputContract

SIZE = 32
TRAIN, TEST = slice(0, 1000), slice(1000, 1300)


@pytest.fixture(scope='module')
def digits():
  """The digits as [0, 1] RGB images at 32 px, and their labels."""
  data = load_digits()
  images = tf.image.resize(np.repeat(data.images[..., None] / 16.0, 3, -1),
                           [SIZE, SIZE]).numpy().astype(np.float32)
  return images, data.target


@pytest.fixture(scope='module')
def trained(digits):
  """A tiny model of random features whose classifier is fitted to digits
  (a linear probe), so that its top-1 class means something; it normalises
  as 'inception' says, `x * 2 - 1` of [0, 1] images."""
  keras.utils.set_random_seed(0)
  images, labels = digits
  model = EfficientNet(V2_BASE_BLOCKS, num_classes=10, width_coefficient=0.25,
                       depth_coefficient=0.2)
  features = keras.ops.convert_to_numpy(export.feature_model(model)(
      images[TRAIN] * 2 - 1, training=False))
  mean, stddev = features.mean(0), features.std(0) + 1e-6
  probe = LogisticRegression(C=10, max_iter=2000).fit(
      (features - mean) / stddev, labels[TRAIN])
  kernel = probe.coef_.T / stddev[:, None]
  model.classifier.set_weights([kernel, probe.intercept_ - mean @ kernel])
  return export.Source(model, 'efficientnetv2-b0',
                       InputContract('inception', 'bilinear', 'none', SIZE),
                       [str(i) for i in range(10)])


# Calibration time grows with the images; these are enough for a tiny model.
CALIBRATION_IMAGES = 40


@pytest.fixture(scope='module')
def int8_file(trained, digits, tmp_path_factory):
  """The int8 model, calibrated on training digits; and how many images
  calibration read."""
  consumed = []

  def calibration():
    for image in digits[0][TRAIN]:
      consumed.append(image)
      yield image

  path = tmp_path_factory.mktemp('int8') / 'model_int8.tflite'
  path.write_bytes(quantize.int8_tflite(trained, calibration(),
                                        max_images=CALIBRATION_IMAGES))
  return str(path), len(consumed)


@pytest.mark.slow
def test_int8_keeps_the_top1_class_of_most_digits(trained, int8_file,
                                                 digits):
  images, labels = digits[0][TEST], digits[1][TEST]
  logits = trained.model(images * 2 - 1, training=False)
  float_top1 = keras.ops.convert_to_numpy(logits).argmax(-1)
  int8_top1 = runtimes.load(int8_file[0]).run(images).argmax(-1)
  agreement = np.mean(int8_top1 == float_top1)
  print(f'int8 top-1 agreement {agreement:.3f}, accuracy '
        f'{np.mean(int8_top1 == labels):.3f} (float '
        f'{np.mean(float_top1 == labels):.3f})')
  assert agreement >= 0.8


def operators(path_or_content):
  """The LiteRT interpreter (no delegate) and its operators in order."""
  key = 'model_path' if isinstance(path_or_content, str) else 'model_content'
  no_delegate = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
  interpreter = Interpreter(**{key: path_or_content},
                            experimental_op_resolver_type=no_delegate)
  interpreter.allocate_tensors()
  ops = interpreter._get_ops_details()  # pylint: disable=protected-access
  return interpreter, ops


@pytest.mark.slow
def test_int8_computes_in_integers_behind_float_input_and_output(int8_file):
  interpreter, ops = operators(int8_file[0])
  (images,), (output,) = (interpreter.get_input_details(),
                          interpreter.get_output_details())
  assert images['dtype'] == output['dtype'] == np.float32
  assert list(images['shape']) == [1, SIZE, SIZE, 3]
  dtypes = {t['index']: t['dtype'] for t in interpreter.get_tensor_details()}
  assert ops[0]['op_name'] == 'QUANTIZE' and ops[-1]['op_name'] == 'DEQUANTIZE'
  for op in ops[1:-1]:
    used = {dtypes[i] for i in [*op['inputs'], *op['outputs']] if i >= 0}
    assert used <= {np.int8, np.int32}, (op['op_name'], used)


def test_a_model_left_in_float_is_refused(trained):
  with pytest.raises(UserError, match="int8 quantisation left .* float32 "
                     "tensors, such as '.*': an operator of this model has "
                     'no int8 kernel; quantise it as dynamic or float16 '
                     'instead'):
    quantize.check_integer(export.tflite_model(trained))


@pytest.mark.slow
def test_int8_ranges_are_the_mean_of_the_ranges_of_groups_of_images(trained):
  """The input's range: [0, mean of each group's maximum], not [0, max]."""
  rng = np.random.default_rng(0)
  images = rng.uniform(0, 1, (7, SIZE, SIZE, 3)).astype(np.float32)
  images *= np.linspace(0.3, 0.9, 7, dtype=np.float32)[:, None, None, None]
  assert quantize.RANGE_GROUP == 5  # groups of 5 and 2 images
  interpreter, ops = operators(quantize.int8_tflite(trained, images))
  quantized_input = interpreter.get_tensor_details()[ops[0]['outputs'][0]]
  scale, zero_point = quantized_input['quantization']
  assert zero_point == -128  # the range starts at 0
  expected = (images[:5].max() + images[5:].max()) / 2
  np.testing.assert_allclose(scale, expected / 255, rtol=1e-5)


@pytest.mark.slow
def test_calibration_reads_at_most_max_images(int8_file):
  assert int8_file[1] == CALIBRATION_IMAGES
  assert quantize.MAX_CALIBRATION_IMAGES == 200  # the default


def test_no_calibration_images_is_refused(trained):
  with pytest.raises(UserError, match='calibration_images is empty; int8 '
                     'quantisation needs up to 200 images'):
    quantize.int8_tflite(trained, [])


def test_calibration_images_of_another_size_are_refused(trained):
  with pytest.raises(UserError, match=r'calibration images must be \[32, 32, '
                     r'3\] in \[0, 1\]; received shape \(64, 64, 3\)'):
    quantize.int8_tflite(trained, np.zeros((2, 64, 64, 3), np.float32))


def test_integer_calibration_pixels_are_refused(trained):
  with pytest.raises(UserError, match=r'^calibration images must be float32 '
                     r'in \[0, 1\]; received uint8'):
    quantize.int8_tflite(trained, np.zeros((2, 32, 32, 3), np.uint8))


class Fixed(runtimes.Runtime):
  """A runtime whose top-1 classes are given."""
  name, model_name, image_size = 'fixed', 'fixed', 1

  def __init__(self, top1):
    self.top1 = np.asarray(top1)
    self.calls = 0

  def _run(self, images):
    batch = self.top1[self.calls:self.calls + len(images)]
    self.calls += len(images)
    return np.eye(3)[batch]


def test_top1_agreement_counts_matching_classes_and_accuracy():
  images = np.zeros((5, 1, 1, 3), np.float32)
  result = quantize.top1_agreement(Fixed([0, 1, 2, 2, 0]),
                                   Fixed([0, 1, 2, 1, 1]), images,
                                   labels=np.array([0, 1, 2, 2, 1]),
                                   batch_size=2)
  assert result == quantize.Agreement(images=5, top1_agreement=0.6,
                                      accuracy=0.8, reference_accuracy=0.8)
  assert quantize.top1_agreement(Fixed([1]), Fixed([1]),
                                 images[:1]).accuracy is None
