"""Every route into a model feeds it the same input for the same image.

For each preprocessing recipe and normalisation, training's evaluation
preprocessing, the serving SavedModel, the TF Hub module and the TFLite
model must give the outputs of one input made here by hand from the
documented contract (the table in `hparams.weights`): the crop windows and
normalisation constants are written out below, not read from the code
under test. The images are sized so that the resize is an identity.
"""
import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf

import hparams
from efficientnetv2_tf import export
from efficientnetv2_tf import loading
from efficientnetv2_tf import preprocessing
from efficientnetv2_tf.preprocessing import Augmentation
from tests import conftest

try:
  from ai_edge_litert.interpreter import Interpreter
except ImportError:
  Interpreter = tf.lite.Interpreter

SIZE = 32

# (mean, stddev) on 0-255 pixels, as the README and docs state them.
CONSTANTS = {
    'symmetric': (128.0, 128.0),
    'inception': (127.5, 127.5),
    'imagenet': (np.array([0.485, 0.456, 0.406]) * 255,
                 np.array([0.229, 0.224, 0.225]) * 255),
}
# Each recipe path's documented normalisation and crop rule.
PATH_NORMALIZATION = {'default': 'symmetric', 'effnetv1': 'imagenet',
                      'ft': 'inception'}
PATH_CROP = {'default': 'below_320', 'effnetv1': 'always', 'ft': 'none'}

# The cropping recipes see a 65 x 67 image. The crop keeps 32 / (32 + 32)
# of its short side: 32.5 px, so a 32 px square (no resize after it). The
# 33 spare rows and 35 spare columns put its corner at (16, 17) where
# offsets round down (V2) and at (17, 18) where they round up (V1).
_RNG = np.random.default_rng(0)
WIDE = _RNG.integers(0, 256, (SIZE + 33, SIZE + 35, 3), dtype=np.uint8)
CORNER = {'default': (16, 17), 'effnetv1': (17, 18)}
# 'ft' resizes the whole image: one already at the eval size.
SQUARE = _RNG.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)

# Each route: what it returns and how closely that must match. Each stays
# several times inside its tolerance; symmetric against inception, the
# closest pair of normalisations, moves the logits by 1e-2 and the
# probabilities by 9e-4 (see the last test).
ROUTES = {'training': ('logits', 1e-4), 'serving': ('probabilities', 1e-5),
          'hub': ('logits', 1e-4), 'tflite': ('probabilities', 3e-5)}
# Each of three TFLite conversions, one per normalisation, takes seconds.
ROUTE_PARAMS = [pytest.param(route, marks=pytest.mark.slow)
                if route == 'tflite' else route for route in ROUTES]
CASES = [pytest.param(name, normalization,
                      id=f'{name}-{normalization or "own"}')
         for name in preprocessing.AUGMENTATIONS.names()
         for normalization in (None, 'symmetric', 'inception', 'imagenet')]


def image_for(path: str) -> np.ndarray:
  return SQUARE if path == 'ft' else WIDE


def crop_by_hand(path: str) -> np.ndarray:
  if path == 'ft':
    return SQUARE
  top, left = CORNER[path]
  return WIDE[top:top + SIZE, left:left + SIZE]


def normalize_by_hand(pixels: np.ndarray, normalization: str) -> np.ndarray:
  mean, stddev = CONSTANTS[normalization]
  return ((pixels - mean) / stddev).astype(np.float32)


def device_input(path: str) -> np.ndarray:
  """What a device gives the hub module or the TFLite model: the image
  already cropped and resized, in [0, 1]."""
  return (crop_by_hand(path)[None] / 255.0).astype(np.float32)


class Routes:
  """The four routes into one model, each built once per distinct contract
  (the hub module and the TFLite model once per normalisation: nothing
  else of the contract reaches them)."""

  def __init__(self, model: keras.Model):
    self.model = model
    self._predict = tf.function(lambda images: model(images, training=False))
    self._hand_made = {}
    self._serving = {}
    self._hub = {}
    self._tflite = {}

  def _source(self, contract):
    labels = [f'class {i}' for i in range(self.model.num_classes)]
    return export.Source(self.model, 'efficientnetv2-b0', contract, labels)

  def hand_made_logits(self, path: str, normalization: str) -> np.ndarray:
    key = path, normalization
    if key not in self._hand_made:
      inputs = normalize_by_hand(crop_by_hand(path), normalization)
      self._hand_made[key] = self._predict(inputs[None]).numpy()[0]
    return self._hand_made[key]

  def training(self, augmentation: Augmentation) -> np.ndarray:
    inputs = preprocessing.preprocess_image(
        tf.constant(image_for(augmentation.pipeline.path)), SIZE,
        training=False, augmentation=augmentation)
    return self._predict(inputs[None]).numpy()[0]

  def serving(self, augmentation: Augmentation) -> np.ndarray:
    contract = augmentation.contract(SIZE)
    if contract not in self._serving:
      self._serving[contract] = export.ServingModule(self._source(contract))
    images = image_for(augmentation.pipeline.path)[None] / 255.0
    outputs = self._serving[contract].serving_default(
        tf.constant(images, tf.float32))
    return outputs['probabilities'].numpy()[0]

  def hub(self, augmentation: Augmentation) -> np.ndarray:
    normalization = augmentation.contract(SIZE).normalization
    if normalization not in self._hub:
      self._hub[normalization] = export.HubModule(self.model, normalization)
    module = self._hub[normalization]
    return module(device_input(augmentation.pipeline.path)).numpy()[0]

  def tflite(self, augmentation: Augmentation) -> np.ndarray:
    contract = augmentation.contract(SIZE)
    if contract.normalization not in self._tflite:
      interpreter = Interpreter(
          model_content=export.tflite_model(self._source(contract)))
      interpreter.allocate_tensors()
      self._tflite[contract.normalization] = interpreter
    interpreter = self._tflite[contract.normalization]
    interpreter.set_tensor(interpreter.get_input_details()[0]['index'],
                           device_input(augmentation.pipeline.path))
    interpreter.invoke()
    return interpreter.get_tensor(
        interpreter.get_output_details()[0]['index'])[0]

  def check(self, route: str, augmentation: Augmentation,
            normalization: str) -> None:
    """Fails unless `route` gives the model's outputs on the hand-made
    input of `augmentation`'s recipe, normalised as `normalization`."""
    kind, tolerance = ROUTES[route]
    wanted = self.hand_made_logits(augmentation.pipeline.path, normalization)
    if kind == 'probabilities':
      wanted = tf.nn.softmax(wanted).numpy()
    np.testing.assert_allclose(getattr(self, route)(augmentation), wanted,
                               atol=tolerance, err_msg=f'{route} {kind}')


@pytest.fixture(scope='module')
def routes():
  """Routes into the tiny model, with batch norm scales and statistics far
  from their initial values, so that a 0.4% change of input contrast
  (symmetric against inception) shows in the logits, and a classifier
  scaled down so that it shows in the probabilities too."""
  keras.utils.set_random_seed(0)
  model = loading.get_model('efficientnetv2-b0', conftest.TINY,
                            weights=None, training=False)
  rng = np.random.default_rng(1)
  draws = {'gamma': lambda shape: rng.uniform(1.0, 2.2, shape),
           'beta': lambda shape: rng.normal(0.0, 0.1, shape),
           'moving_mean': lambda shape: rng.normal(0.0, 0.1, shape),
           'moving_variance': lambda shape: rng.uniform(0.5, 2.0, shape)}
  for variable in model.variables:
    draw = draws.get(variable.path.split('/')[-1])
    if draw:
      variable.assign(draw(variable.shape))
  model.classifier.kernel.assign(model.classifier.kernel * 0.01)
  return Routes(model)


@pytest.mark.parametrize('name, normalization', CASES)
def test_each_recipe_reports_the_contract_its_path_documents(
    name, normalization):
  augmentation = Augmentation(augname=name, normalization=normalization)
  path = augmentation.pipeline.path
  contract = augmentation.contract(SIZE)
  assert contract.normalization == (normalization or
                                    PATH_NORMALIZATION[path])
  assert contract.crop == PATH_CROP[path]
  assert contract.image_size == SIZE


@pytest.mark.parametrize('route', ROUTE_PARAMS)
@pytest.mark.parametrize('name, normalization', CASES)
def test_every_route_gives_the_outputs_of_the_hand_made_input(
    routes, route, name, normalization):
  augmentation = Augmentation(augname=name, normalization=normalization)
  routes.check(route, augmentation,
               normalization or PATH_NORMALIZATION[augmentation.pipeline.path])


@pytest.mark.parametrize('route', ROUTE_PARAMS)
def test_fine_tuning_from_published_weights_feeds_their_normalisation(
    routes, route):
  # NoisyStudent weights expect ImageNet mean / std, not the ft recipe's.
  specs = hparams.get_specs('efficientnet-b0', 'FashionMnistFt',
                            {'train': {'ft_init_ckpt': 'jft'}})
  augmentation = Augmentation.from_specs(specs)
  assert augmentation.pipeline.path == 'ft'
  routes.check(route, augmentation, 'imagenet')


def test_a_wrong_normalisation_or_crop_would_show_in_the_outputs(routes):
  logits = [routes.hand_made_logits(path, normalization)
            for path in PATH_NORMALIZATION for normalization in CONSTANTS]
  probabilities = [tf.nn.softmax(x).numpy() for x in logits]
  for kind, outputs in (('logits', logits),
                        ('probabilities', probabilities)):
    gap = min(np.abs(first - second).max()
              for first, second in itertools.combinations(outputs, 2))
    tolerance = max(t for k, t in ROUTES.values() if k == kind)
    assert gap > 10 * tolerance, (kind, gap)
