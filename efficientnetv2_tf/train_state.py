"""What a run trains and resumes from, saved and restored as one.

    state = TrainState(specs, plan, strategy, model_dir, 'float32')
    state.restore()  # the newest readable checkpoint, if any
    ...
    state.save()

`TrainState` owns the model, the optimizer and its learning-rate schedule,
the EMA of the weights, the input RNG, the plateau schedule and the best
evaluation so far, and checkpoints them together. Every worker of a cluster
restores the chief's checkpoints (model_dir/checkpoints), so that all resume
from the same one; a worker's own copies are only written.
"""
import contextlib
import os
from typing import Any, Dict, Iterator, Optional

from absl import logging
import keras
import numpy as np
import tensorflow as tf

from efficientnetv2_tf import checkpoints
from efficientnetv2_tf import cluster
from efficientnetv2_tf import distribute
from efficientnetv2_tf import ema as ema_lib
from efficientnetv2_tf import loading
from efficientnetv2_tf import optim
from efficientnetv2_tf import run_dir
from efficientnetv2_tf.model import EfficientNet
from efficientnetv2_tf.progressive import RunPlan
from hparams.specs import OptimSpec
from hparams.specs import Specs


class TrainingError(RuntimeError):
  """Training cannot go on (a NaN loss); the message says what to do."""


class PeerLost(TrainingError):
  """A collective failed because another worker of the cluster is gone."""


class Preempted(Exception):
  """SIGTERM arrived at this or another worker; every worker saved the same
  step and the run can resume."""


def _build_model(specs: Specs, strategy: tf.distribute.Strategy,
                 fine_tune: bool) -> EfficientNet:
  """The model, with `train.ft_init_ckpt`'s weights when `fine_tune`."""
  bn_sync = distribute.resolve_bn_sync(specs.model.bn_sync, strategy)
  logging.info('cross-replica BatchNorm: %s', 'on' if bn_sync else 'off')
  model = EfficientNet.from_spec(specs.model, bn_sync=bn_sync)
  init = specs.optim.init_checkpoint
  if fine_tune and init:
    loading.load_weights(model, init, specs.model.name,
                         prefer_ema=specs.optim.init_from_ema)
    logging.info('initialised from %s', init)
  return model


def _learning_rate(spec: OptimSpec, plan: RunPlan) -> optim.LearningRate:
  peak = optim.scaled_learning_rate(spec.lr_base, plan.global_batch)
  return optim.LearningRate(
      peak, plan.epoch_steps, plan.total_steps,
      schedule=spec.lr_schedule, warmup_epochs=spec.lr_warmup_epoch,
      decay_epochs=spec.lr_decay_epoch,
      decay_factor=spec.lr_decay_factor,
      minimum=optim.scaled_learning_rate(spec.lr_min, plan.global_batch))


def _build_optimizer(spec: OptimSpec, schedule: optim.LearningRate,
                     policy: str, model: keras.Model
                     ) -> keras.optimizers.Optimizer:
  """The optimizer of `train.optimizer` on `schedule`, built for the model's
  trainable variables."""
  optimizer = optim.build_optimizer(
      spec.optimizer, schedule,
      weight_decay=spec.weight_decay if decoupled_decay(spec) else 0.0,
      excluded=optim.decay_excluded(model.trainable_variables,
                                    spec.weight_decay_exclude))
  optimizer = distribute.wrap_optimizer(optimizer, policy)
  optimizer.build(model.trainable_variables)
  return optimizer


def decoupled_decay(spec: OptimSpec) -> bool:
  """Whether the optimizer decays weights itself (AdamW); the others take
  an L2 loss, as the original did."""
  return spec.optimizer == 'adamw'


class TrainState:
  """The model, optimizer, EMA, RNG, plateau and best-evaluation state of a
  run, built under `strategy` and checkpointed together."""

  def __init__(self, specs: Specs, plan: RunPlan,
               strategy: tf.distribute.Strategy, model_dir: str,
               policy: str):
    self.strategy = strategy
    self.chief = cluster.is_chief(strategy)
    self.workers = cluster.num_workers(strategy)
    self.worker_sum = cluster.worker_sum(strategy)
    run = run_dir.RunDir(model_dir)
    self.checkpoint_dir = run.checkpoints
    if self.workers > 1:
      with self.peers_watched():
        cluster.check_shared_dir(model_dir, strategy, self.worker_sum)
    train, seed = specs.optim, specs.data.seed
    if seed is not None:
      # Repeatable initial weights and dropout, not only data order.
      keras.utils.set_random_seed(seed)
    # Building variables broadcasts their first values to every worker.
    with strategy.scope(), self.peers_watched():
      self.model = _build_model(specs, strategy,
                                fine_tune=self.latest_checkpoint() is None)
      self.schedule = _learning_rate(train, plan)
      self.optimizer = _build_optimizer(train, self.schedule, policy,
                                        self.model)
      self.ema = ema_lib.maybe_ema(ema_lib.ema_variables(self.model),
                                   train.ema_decay)
      self.rng = tf.random.Generator.from_seed(
          seed if seed is not None else
          int(np.random.default_rng().integers(2**31)))
      self.plateau = None
      if train.lr_schedule == 'plateau':
        self.plateau = optim.PlateauReducer(
            self.schedule, patience=train.plateau_patience,
            factor=train.plateau_factor)
      self.best = tf.Variable(-1.0, trainable=False, dtype=tf.float64)
      self.evals_since_best = tf.Variable(0, trainable=False, dtype=tf.int64)
    self._track(run.for_worker(strategy).checkpoints,
                specs.runtime.keep_checkpoints)

  def _track(self, directory: str, keep: int) -> None:
    tracked = dict(model=self.model, optimizer=self.optimizer, rng=self.rng,
                   best=self.best, evals_since_best=self.evals_since_best)
    if self.ema:
      tracked['ema'] = self.ema
    # Where dropout and stochastic depth are in their random draws: not
    # among the model's weights, but a resumed run must draw on from there.
    weights = {id(w) for w in self.model.weights}
    tracked['seed_states'] = [v for v in self.model.variables
                              if id(v) not in weights]
    if self.plateau:
      tracked['plateau'] = self.plateau
    self.checkpoint = tf.train.Checkpoint(**tracked)
    self.manager = tf.train.CheckpointManager(
        self.checkpoint, directory, max_to_keep=keep)

  @property
  def step(self) -> int:
    return int(self.optimizer.iterations.numpy())

  def latest_checkpoint(self) -> Optional[str]:
    """The newest checkpoint of the run: the chief's."""
    return tf.train.latest_checkpoint(self.checkpoint_dir)

  def load(self, path: str) -> None:
    """Restores the checkpoint at `path`; one of another model is a
    UserError. Where it holds no EMA, the EMA starts from its weights."""
    checkpoints.check_shapes(self.checkpoint, path)
    self.checkpoint.restore(path).expect_partial()
    if self.ema and not checkpoints.holds_ema(path):
      # A run that kept no EMA until now: the averages start from the
      # weights it resumes with, not from the initial ones.
      self.ema.reset()

  def restore(self) -> Optional[str]:
    """Restores the newest readable checkpoint of the run, if any.

    A checkpoint that cannot be read, such as one whose data file a full
    disk or a dying host cut short, is skipped with a warning for the one
    before it. The workers of a cluster read the same files, so they skip
    alike.
    """
    state = tf.train.get_checkpoint_state(self.checkpoint_dir)
    paths = list(state.all_model_checkpoint_paths or
                 [state.model_checkpoint_path]) if state else []
    unreadable = []
    for path in reversed(paths):
      try:
        # A failed restore may have assigned some variables; an older
        # checkpoint assigns them all again.
        self.load(path)
      # A short read surfaces as an IndexError, other damage as an OpError.
      except (tf.errors.OpError, IndexError) as e:
        reason = (str(e).strip() or type(e).__name__).splitlines()[0]
        logging.warning('checkpoint %s cannot be read (%s); trying the one '
                        'before it', path, reason)
        unreadable.append(os.path.basename(path))
        continue
      logging.info('resumed from %s at step %d', path, self.step)
      return path
    if unreadable:
      raise TrainingError(
          f'no checkpoint in {self.checkpoint_dir!r} can be read '
          f'({", ".join(unreadable)}); move them away to start over')
    return None

  def save(self) -> str:
    """Saves a checkpoint of the current step, with the description of the
    model's head beside it; returns its path."""
    # CheckpointManager writes the data files first and then, atomically,
    # the state file naming them: a killed save leaves the previous
    # checkpoint as the latest.
    path = self.manager.save(checkpoint_number=self.step)
    checkpoints.write_model_info(self.manager.directory, self.model)
    return path

  def preempted(self) -> Preempted:
    """Saves the current step on every worker and returns the error that
    says where and how to resume."""
    path = self.save()
    self.worker_sum(0)  # a barrier: no worker exits before all have saved
    again = 'the same command'
    if self.workers > 1:
      # The checkpoint the workers will resume from: the chief's.
      path = os.path.join(self.checkpoint_dir, os.path.basename(path))
      again += ' on every worker'
    return Preempted(f'stopped by SIGTERM at step {self.step}; saved {path}; '
                     f'rerun {again} to resume')

  @contextlib.contextmanager
  def peers_watched(self) -> Iterator[None]:
    """Turns a collective that failed because a worker is gone into a
    one-line `PeerLost`: which worker, when the error says, the last
    checkpoint, and what to do."""
    try:
      yield
    except cluster.PEER_FAILURES as e:
      if self.workers == 1:
        raise
      lost = cluster.lost_worker(self.strategy, e) or 'another worker'
      latest = self.latest_checkpoint()
      last = (f'step {latest.rsplit("-", 1)[1]} ({latest})' if latest else
              'none yet')
      raise PeerLost(
          f'lost {lost}: a collective failed ({type(e).__name__}); the last '
          f'checkpoint is {last}; rerun the same command on every worker to '
          f'resume') from None

  def update_best(self, metrics: Dict[str, Any], patience: int) -> bool:
    """Feeds an evaluation to the plateau schedule and the best top-1 so
    far; says whether `patience` (0: never) evaluations in a row brought no
    better top-1, so that early stopping is due."""
    if self.plateau:
      self.plateau.update(metrics['eval_loss'])
    if metrics['eval_top1'] > float(self.best.numpy()):
      self.best.assign(metrics['eval_top1'])
      self.evals_since_best.assign(0)
    else:
      self.evals_since_best.assign_add(1)
    return self.early_stop_due(patience)

  def early_stop_due(self, patience: int) -> bool:
    """Whether the last `patience` evaluations (0: never) brought no better
    top-1."""
    return bool(patience) and int(self.evals_since_best.numpy()) >= patience
