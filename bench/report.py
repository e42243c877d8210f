"""Turns `run_all.py`'s results into the summary line, a Markdown page and
PNG charts."""
import json
import math
import os
from typing import Any, Dict, List, Optional

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt  # pylint: disable=g-import-not-at-top

SUMMARY_KEYS = ('train_throughput_ratio', 'inference_throughput_ratio_b1',
                'inference_throughput_ratio_b32', 'onnxruntime_speedup_b1',
                'onnxruntime_speedup_b32', 'pipeline_to_model_ratio',
                'progressive_speedup', 'progressive_top1_delta',
                'train_fraction_of_matmul_flops',
                'peak_rss_mb')


def _ratio(numerator: Optional[float], denominator: Optional[float]):
  if numerator is None or not denominator:
    return None
  return numerator / denominator


def seconds_to(curve: List[List[float]], target: float) -> Optional[float]:
  """Training seconds at the first evaluation at or above `target`."""
  return next((seconds for seconds, top1 in curve if top1 >= target), None)


def compare(fixed: Dict[str, Any], staged: Dict[str, Any],
            target: float) -> Dict[str, Any]:
  """Fixed-size against progressive training of the same epochs.

  `speedup` is fixed training time over progressive, `top1_delta` the
  progressive final top-1 minus the fixed one, in points. Then time to a
  target top-1: if one run never reaches `target`, the target becomes the
  best top-1 that both runs reached, so that `target_speedup` is always
  defined; the target used is returned with it.
  """
  best_common = min(max(t for _, t in fixed['curve']),
                    max(t for _, t in staged['curve']))
  used = min(target, best_common)
  times = {label: seconds_to(run['curve'], used)
           for label, run in (('fixed', fixed), ('progressive', staged))}
  return {'speedup': fixed['train_seconds'] / staged['train_seconds'],
          'top1_delta': 100 * (staged['final_top1'] - fixed['final_top1']),
          'target_top1': used, 'seconds_to_target': times,
          'target_speedup': times['fixed'] / times['progressive']}


def _geometric_mean(values: List[float]) -> Optional[float]:
  if not values:
    return None
  return math.exp(sum(map(math.log, values)) / len(values))


def comparison(progressive: Dict[str, Any], name: str) -> Dict[str, Any]:
  """`compare` for one dataset of the progressive section."""
  return compare(progressive[name]['fixed'], progressive[name]['progressive'],
                 progressive['target_top1'])


def _round(value: Any) -> Any:
  return round(value, 3) if isinstance(value, float) else value


def summary(results: Dict[str, Any]) -> Dict[str, Any]:
  """The headline figures; a key is None where its section did not run."""
  training = results.get('training', {}).get('images_per_second', {})
  inference = results.get('inference', {}).get('images_per_second', {})
  pipeline = results.get('pipeline', {}).get('images_per_second')
  progressive = results.get('progressive', {})
  compared = {name: comparison(progressive, name)
              for name in ('digits', 'mnist5k') if name in progressive}
  flops = results.get('flops', {})
  memory = results.get('memory', {}).get('peak_rss_mb', {})
  out = {
      'train_throughput_ratio': _ratio(training.get('ours'),
                                       training.get('keras')),
      # Mixed bfloat16: ours against Keras's in it, against Keras's in
      # float32, and against ours in float32.
      'train_throughput_ratio_bf16': _ratio(training.get('ours, bfloat16'),
                                            training.get('keras, bfloat16')),
      'train_bf16_over_keras_fp32': _ratio(training.get('ours, bfloat16'),
                                           training.get('keras')),
      'train_bf16_speedup': _ratio(training.get('ours, bfloat16'),
                                   training.get('ours')),
      # Ours in TensorFlow against Keras's; then each runtime of our
      # exports against ours in TensorFlow.
      **{f'{key}_b{batch}': _ratio(
          inference.get(f'batch_{batch}', {}).get(numerator),
          inference.get(f'batch_{batch}', {}).get(denominator))
         for key, numerator, denominator in (
             ('inference_throughput_ratio', 'ours', 'keras'),
             ('onnxruntime_speedup', 'onnxruntime', 'ours'),
             ('litert_speedup', 'litert', 'ours'))
         for batch in (1, 32)},
      'pipeline_to_model_ratio': _ratio(pipeline, training.get('ours')),
      # Means over the datasets (geometric for the speed-ups); each
      # dataset's figures follow.
      **{f'progressive_{key}': _geometric_mean(
          [c[key] for c in compared.values()])
         for key in ('speedup', 'target_speedup')},
      'progressive_top1_delta': (
          sum(c['top1_delta'] for c in compared.values()) / len(compared)
          if compared else None),
      **{f'progressive_{key}_{name}': c[key]
         for name, c in compared.items()
         for key in ('speedup', 'top1_delta', 'target_speedup')},
      'train_fraction_of_matmul_flops': _ratio(flops.get('train_gflops'),
                                               flops.get('matmul_gflops')),
      'inference_fraction_of_matmul_flops': _ratio(
          flops.get('inference_gflops'), flops.get('matmul_gflops')),
      'peak_rss_mb': memory.get('ours'),
      'peak_rss_mb_keras': memory.get('keras'),
      'quick': results.get('quick'),
  }
  return {key: _round(value) for key, value in out.items()}


def _times(ratio: Optional[float]) -> str:
  return '-' if ratio is None else f'{ratio:.2f}'


def _table(header: List[str], rows: List[List[Any]]) -> str:
  lines = ['| ' + ' | '.join(header) + ' |',
           '| ' + ' | '.join(['---'] + ['---:'] * (len(header) - 1)) + ' |']
  for row in rows:
    # Accuracies (below 1) keep three decimals; rates and seconds one.
    cells = [(f'{c:.3f}' if abs(c) <= 1 else f'{c:,.1f}')
             if isinstance(c, float) else ('-' if c is None else str(c))
             for c in row]
    lines.append('| ' + ' | '.join(cells) + ' |')
  return '\n'.join(lines)


def _throughput_chart(results: Dict[str, Any], path: str) -> None:
  groups = []
  if 'training' in results:
    rates = results['training']['images_per_second']
    groups.append(('training\n128 px, batch 32', rates['ours'],
                   rates['keras']))
  for batch in (1, 32):
    rates = results.get('inference', {}).get('images_per_second', {}).get(
        f'batch_{batch}')
    if rates:
      groups.append((f'inference\n224 px, batch {batch}', rates['ours'],
                     rates['keras']))
  figure, axes = plt.subplots(figsize=(7, 3.5))
  positions = range(len(groups))
  axes.bar([p - 0.2 for p in positions], [g[1] for g in groups], 0.4,
           label='efficientnetv2-tf')
  axes.bar([p + 0.2 for p in positions], [g[2] for g in groups], 0.4,
           label='keras.applications')
  axes.set_xticks(list(positions), [g[0] for g in groups])
  axes.set_ylabel('images / second')
  axes.set_title('EfficientNetV2-B0 on this CPU (medians)')
  axes.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def _progressive_chart(results: Dict[str, Any], path: str) -> None:
  names = [n for n in ('digits', 'mnist5k') if n in results['progressive']]
  figure, axes = plt.subplots(1, len(names), figsize=(5 * len(names), 3.5),
                              squeeze=False)
  for axis, name in zip(axes[0], names):
    target = comparison(results['progressive'], name)['target_top1']
    for label in ('fixed', 'progressive'):
      run = results['progressive'][name][label]
      curve = run['curve']
      line, = axis.plot([c[0] for c in curve], [c[1] for c in curve],
                        marker='o', label=label)
      for seconds in run.get('stage_ends', []):
        axis.axvline(seconds, color=line.get_color(), linestyle='--',
                     linewidth=0.8)
    axis.axhline(target, color='grey', linestyle=':', label='target')
    axis.set_title(name)
    axis.set_xlabel('training seconds (evaluation excluded)')
    axis.set_ylabel('eval top-1')
    axis.legend()
  figure.tight_layout()
  figure.savefig(path, dpi=100)
  plt.close(figure)


def _header(results: Dict[str, Any]) -> List[str]:
  return [
      '# Benchmarks', '',
      'Written by `python bench/run_all.py' +
      (' --quick' if results['quick'] else '') + '`; do not edit by hand. '
      'Each comparison ran in one process, the settings taking turns, and '
      'each figure is the median of its turns (the progressive runs '
      'excepted, see there). The ratios carry over to '
      'other machines better than the absolute figures.', '',
      _table(['machine', ''], [[k, v] for k, v in results['machine'].items()]),
      '', f'Total run time: {results["seconds"] / 60:.1f} minutes.', '',
      '## Summary', '', '```json', json.dumps(results['summary'], indent=1),
      '```', '',
  ]


def _training(results: Dict[str, Any]) -> List[str]:
  training = results['training']
  rates = training['images_per_second']
  return [
      '## Training throughput', '',
      f'{results["model"]} at 128 px, batch 32, float32 unless said '
      '(bfloat16: mixed, float32 variables), on the digits '
      'input pipeline: our `Trainer` against `keras.applications.'
      'EfficientNetV2B0(weights=None)` trained by `Model.fit`, both with '
      'RMSProp (TF1 accumulator), an EMA of the weights and label '
      f'smoothing; {training["steps_per_turn"]} steps per turn. "1x1 as '
      'convolutions" trains our 1x1 convolutions with TensorFlow\'s '
      'convolution kernels instead of as matrix products.', '',
      _table(['setting', 'images/s', 'ratio to keras'],
             [[name, rate, _times(_ratio(rate, rates['keras']))]
              for name, rate in rates.items()]), '',
      '![throughput](benchmarks_throughput.png)', '']


# Columns of the inference table: key, heading.
_INFERENCE_COLUMNS = (
    ('ours', 'ours, TF'), ('ours_one_slice', 'ours, TF, one slice'),
    ('ours_variables', 'ours, TF, variables'),
    ('keras', 'keras, TF'), ('keras_two_slices', 'keras, TF, two slices'),
    ('onnxruntime', 'ours, ONNX Runtime'),
    ('litert', 'ours, LiteRT'))


def _inference(results: Dict[str, Any]) -> List[str]:
  rows = []
  for batch, rates in results['inference']['images_per_second'].items():
    rows.append([batch.replace('_', ' '),
                 *[rates.get(key) for key, _ in _INFERENCE_COLUMNS],
                 _times(_ratio(rates['ours'], rates['keras']))])
  return ['## Inference throughput', '',
          f'{results["model"]} at 224 px, one fixed batch, images/s. '
          '"ours, TF" is the TensorFlow runtime of `--mode=predict` and '
          '`--mode=benchmark`: '
          '[0, 1] images in, probabilities out, the weights constants of '
          'the graph, a batch run as two slices side by side; "ours, TF, '
          'one slice" runs it whole. "ours, TF, variables" and '
          '"keras, TF" call the model in a `tf.function`, reading its '
          'weights from variables; "keras, TF, two slices" splits batches '
          'as ours does. ONNX Runtime and LiteRT run our '
          'model.onnx and model.tflite (float32).', '',
          _table(['batch', *[heading for _, heading in _INFERENCE_COLUMNS],
                  'ours / keras'], rows), '']


def _pipeline(results: Dict[str, Any]) -> List[str]:
  model_rate = results.get('training', {}).get('images_per_second',
                                               {}).get('ours')
  ratio = _times(results['summary']['pipeline_to_model_ratio'])
  return ['## Input pipeline', '',
          f'The image-folder training pipeline on '
          f'{results["pipeline"]["source"]}: decode, random crop, flip, '
          'RandAugment (2 ops, magnitude 15), batch 32 at 128 px, '
          'against what our training step consumes.', '',
          _table(['', 'images/s'], [
              ['input pipeline', results['pipeline']['images_per_second']],
              ['training step (ours)', model_rate]]), '',
          f'Ratio: {ratio}. Above 1 the '
          'input keeps up; the two share the same cores in a real run.',
          '']


def _size_transfer(progressive: Dict[str, Any]) -> List[str]:
  """The fixed runs' final top-1 at each stage's size, where measured."""
  parts = []
  for name in ('digits', 'mnist5k'):
    at_size = progressive[name]['fixed'].get('top1_at_size')
    if at_size:
      parts.append(f'{name} ' + ', '.join(
          f'{top1:.3f} at {size} px' for size, top1 in
          sorted(at_size.items(), key=lambda item: int(item[0]))))
  if not parts:
    return []
  return ['How well training at one size carries to the others: the '
          'fixed run\'s final model, trained at the last size only, scored '
          + '; '.join(parts) + '.', '']


def _turns(settings: Dict[str, Any]) -> str:
  """How the two runs of a dataset shared the machine."""
  if settings.get('turns') != 'epoch':
    return 'the fixed one, then the progressive one. '
  where = ('each in a process of its own'
           if settings.get('processes') else 'in one process')
  return (f'the two runs of a dataset {where}, taking turns of one epoch '
          'each (the fixed one first), so that a busier moment of the '
          'machine falls on both alike. ')


def _progressive(results: Dict[str, Any]) -> List[str]:
  progressive = results['progressive']
  settings = progressive['settings']
  rows, speedups = [], []
  for name in ('digits', 'mnist5k'):
    compared = comparison(progressive, name)
    speedups.append(
        f'{name} {_times(compared["speedup"])} '
        f'({compared["top1_delta"]:+.2f} points of top-1; to the target '
        f'{_times(compared["target_speedup"])})')
    for label in ('fixed', 'progressive'):
      run = progressive[name][label]
      rows.append([name, label, run['train_seconds'],
                   run.get('train_images_per_second'), run['final_top1'],
                   compared['target_top1'],
                   compared['seconds_to_target'][label]])
  return [
      '## Progressive learning', '',
      f'{results["model"]} trained from scratch for {settings["epochs"]} '
      f'epochs of batch {settings["batch_size"]} at '
      f'{settings["size"]} px (fixed), or for as many epochs in '
      f'4 equal stages growing from {settings["ibase"]} to '
      f'{settings["size"]} px (the paper\'s schedule, image size only), '
      f'both evaluated at {settings["size"]} px after every epoch'
      + (f' with weights averaged at a decay of {settings["ema_decay"]}, '
         'short enough for the last stage to make the average'
         if settings.get('ema_decay') else '') + '. '
      + ('At most ' + str(settings['per_class']) + ' training images per '
         'class. ' if settings.get('per_class') else '') +
      'Times are training seconds: tracing, input, checkpoint saves and '
      'the curves redrawn after each earlier epoch included, evaluations '
      'left out. Unlike the other sections, each run trains once: ' +
      _turns(settings) +
      (f'Both runs train with `{",".join(settings["recipe_overrides"])}` '
       f'(`--progressive_recipe={settings["recipe"]}`) over the digits '
       'preset. ' if settings.get('recipe_overrides') else '') +
      (f'Both runs took `--progressive_hparams={settings["hparams"]}`, '
       'which overrides the settings named here. '
       if settings.get('hparams') else '') +
      'The target is eval top-1 '
      f'{progressive["target_top1"]}, or, where a run never reaches it, '
      'the best top-1 both runs reached.', '',
      _table(['dataset', 'training', 'seconds', 'images/s', 'final top-1',
              'target', 'seconds to target'], rows), '',
      'Speed-up at equal epochs (fixed training time / progressive): ' +
      ', '.join(speedups) + '. The dashed lines mark the stage '
      'boundaries.', '', *_size_transfer(progressive),
      '![progressive](benchmarks_progressive.png)', '']


def _efficiency(results: Dict[str, Any]) -> List[str]:
  flops = results['flops']
  summary_ = results['summary']
  return [
      '## Efficiency against the machine', '',
      f'A float32 2048x2048 matmul ran at {flops["matmul_gflops"]:.1f} '
      'GFLOP/s. One image\'s forward pass costs ' + ', '.join(
          f'{g:.3f} GFLOP at {s} px'
          for s, g in flops['forward_gflop_per_image'].items()) +
      ' (TensorFlow\'s profiler; a multiply-add counts two); a training '
      'step is taken as three forward passes.', '',
      _table(['', 'GFLOP/s', 'fraction of matmul'], [
          ['training (ours, 128 px, batch 32)', flops.get('train_gflops'),
           _times(summary_['train_fraction_of_matmul_flops'])],
          ['inference (ours, 224 px, batch 32)',
           flops.get('inference_gflops'),
           _times(summary_['inference_fraction_of_matmul_flops'])]]), '']


def _xla(results: Dict[str, Any]) -> List[str]:
  rows = [[r['model'], r['plain'], r['xla'], _times(_ratio(r['xla'],
                                                           r['plain'])),
           r['first_step_seconds']['plain'], r['first_step_seconds']['xla']]
          for r in results['xla']['images_per_second']]
  return ['## XLA per model size', '',
          'Our training step with XLA (`train.jit_compile=true`) and '
          'without, batch 32, float32, on the digits input pipeline, '
          f'{results["xla"]["steps_per_turn"]} steps per turn; the first '
          'step includes tracing and compiling.', '',
          _table(['model', 'images/s', 'images/s, XLA', 'XLA / plain',
                  'first step, s', 'first step, s, XLA'], rows), '']


def _memory(results: Dict[str, Any]) -> List[str]:
  peaks = results['memory']['peak_rss_mb']
  return ['## Memory', '',
          f'Peak resident memory of a fresh process that trains '
          f'{results["model"]} at 128 px, batch 32, for '
          f'{results["memory"]["steps"]} steps.', '',
          _table(['', 'peak RSS, MiB'], [['ours', peaks['ours']],
                                          ['keras fit', peaks['keras']]]),
          '']


# The sections of the page that appear when their benchmark ran.
_SECTIONS = (('training', _training), ('inference', _inference),
             ('pipeline', _pipeline), ('xla', _xla),
             ('progressive', _progressive),
             ('flops', _efficiency), ('memory', _memory))


def _markdown(results: Dict[str, Any]) -> str:
  lines = _header(results)
  for key, section in _SECTIONS:
    if key in results:
      lines += section(results)
  if results.get('notes'):
    lines += ['## Notes', ''] + [f'- {note}' for note in results['notes']] + [
        '']
  lines += [
      '## Not measured here', '',
      'GPUs, TPUs, mixed precision on accelerators and multi-host runs: '
      'this machine has none. The peer is `keras.applications`, on the '
      'same framework; timm and torchvision run on PyTorch, so a '
      'comparison with them would time the framework as much as the '
      'model code.', '']
  return '\n'.join(lines)


_LABELS = {'xla': 'XLA'}


def check_mergeable(previous: Dict[str, Any], quick: bool,
                    sections: List[str]) -> None:
  """Raises ValueError unless a run of `sections`, --quick or not, may
  update the report `previous`: a quick figure and a full one do not mix."""
  mode = lambda is_quick: 'a --quick run' if is_quick else 'a full run'
  if bool(previous.get('quick')) != quick:
    raise ValueError(f'the report there holds {mode(not quick)} and this is '
                     f'{mode(quick)} of {", ".join(sections)}; give another '
                     '--output_dir')


def merged(previous: Dict[str, Any], new: Dict[str, Any],
           sections: List[str], command: str) -> Dict[str, Any]:
  """`previous` (a report) with `new`'s `sections` in place of its own.

  Each section gets a note saying when, with what command and how long it
  ran, in place of an earlier note about it. `check_mergeable` says
  whether the two may mix.
  """
  out = dict(previous)
  notes = list(previous.get('notes', []))
  for name in sections:
    again = ' again' if name in previous else ''
    out[name] = new[name]
    prefix = f'The {_LABELS.get(name, name)} section was run'
    notes = [note for note in notes if not note.startswith(prefix)]
    notes.append(
        f'{prefix}{again} on its own on {new["machine"]["date"]} '
        f'(`{command}`, TensorFlow {new["machine"]["tensorflow"]}, '
        f'{new[name]["seconds"] / 60:.1f} minutes).'
        + (" Its figures replace the earlier run's." if again else ''))
  out['notes'] = notes
  return out


def write(results: Dict[str, Any], output_dir: str) -> None:
  os.makedirs(output_dir, exist_ok=True)
  if 'training' in results or 'inference' in results:
    _throughput_chart(results,
                      os.path.join(output_dir, 'benchmarks_throughput.png'))
  if 'progressive' in results:
    _progressive_chart(results,
                       os.path.join(output_dir, 'benchmarks_progressive.png'))
  with open(os.path.join(output_dir, 'benchmarks.json'), 'w') as f:
    json.dump(results, f, indent=1, default=str)
  with open(os.path.join(output_dir, 'benchmarks.md'), 'w') as f:
    f.write(_markdown(results))
