#!/usr/bin/env bash
# Throughput of one model on an NVIDIA GPU in TensorFlow, ONNX Runtime and
# TensorRT, unattended:
#
#   bash bench/gpu_check.sh [output_dir]     # default /tmp/gpu_check
#
# It exports the model with main.py (published weights: downloaded once),
# writes model.onnx if the export has none, benchmarks TensorFlow and ONNX
# Runtime (CUDA) on host batches in [0, 1], and builds and times a TensorRT
# fp16 engine with trtexec. Each result is one `benchmark {json}` line.
# ONNX Runtime needs onnxruntime-gpu in place of onnxruntime, and TensorRT
# needs trtexec on PATH; without them their rows are skipped with a note.
#
# Settings: MODEL (efficientnetv2-b0), WEIGHTS (imagenet), BATCH_SIZES
# (1,32), ITERATIONS (50).
set -euo pipefail

cd "$(dirname "$0")/.."
out=${1:-/tmp/gpu_check}
model=${MODEL:-efficientnetv2-b0}
weights=${WEIGHTS:-imagenet}
batch_sizes=${BATCH_SIZES:-1,32}
iterations=${ITERATIONS:-50}
export_dir="$out/export"

if ! nvidia-smi -L; then
  echo "gpu_check: nvidia-smi finds no NVIDIA GPU; nothing to measure" >&2
  exit 1
fi

python main.py --mode=export --model_name="$model" --weights="$weights" \
  --export_dir="$export_dir" --overwrite

# TensorFlow and ONNX Runtime, through the same runtime interface.
python - "$model" "$weights" "$export_dir" "$batch_sizes" "$iterations" <<'EOF'
import os
import sys

from efficientnetv2_tf import benchmark, export, onnx_export, runtimes

model_name, weights, export_dir, batch_sizes, iterations = sys.argv[1:]
batch_sizes = [int(size) for size in batch_sizes.split(',')]
source = export.load_pretrained(model_name, weights)
onnx_path = os.path.join(export_dir, 'model.onnx')
if not os.path.isfile(onnx_path):
  with open(onnx_path, 'wb') as f:
    f.write(onnx_export.onnx_model(source))
loaded = [runtimes.load(source)]
onnx = runtimes.load(onnx_path)
if onnx.device == 'GPU':
  loaded.append(onnx)
else:
  print('gpu_check: onnxruntime has no CUDA provider; install '
        'onnxruntime-gpu (instead of onnxruntime) for its row')
for runtime in loaded:
  for result in runtimes.benchmark(runtime, batch_sizes,
                                   iterations=int(iterations)):
    print(benchmark.format_result(result))
EOF

if ! command -v trtexec >/dev/null; then
  echo "gpu_check: no trtexec on PATH; skipping TensorRT"
  exit 0
fi
size=$(python -c 'import json, sys; print(json.load(sys.stdin)["image_size"])' \
  <"$export_dir/export.json")
max_batch=$(tr ',' '\n' <<<"$batch_sizes" | sort -n | tail -n 1)
engine="$out/model_fp16.plan"
trtexec --onnx="$export_dir/model.onnx" --fp16 --saveEngine="$engine" \
  --minShapes="images:1x${size}x${size}x3" \
  --optShapes="images:${max_batch}x${size}x${size}x3" \
  --maxShapes="images:${max_batch}x${size}x${size}x3" \
  >"$out/trtexec_build.log"
for batch in ${batch_sizes//,/ }; do
  log="$out/trtexec_b${batch}.log"
  # Latency includes the copies to and from the GPU, as the rows above do.
  trtexec --loadEngine="$engine" --shapes="images:${batch}x${size}x${size}x3" \
    --iterations="$iterations" >"$log"
  # "] Latency:" is the end-to-end line, not "H2D Latency:" or "D2H ...".
  qps=$(grep -oP '\] Throughput: \K[0-9.]+' "$log" | head -n 1 || true)
  p50=$(grep -oP '\] Latency: .*median = \K[0-9.]+' "$log" | head -n 1 || true)
  p95=$(grep -oP '\] Latency: .*percentile\(95%\) = \K[0-9.]+' "$log" \
    | head -n 1 || true)
  if [[ -z "$qps" || -z "$p50" || -z "$p95" ]]; then
    echo "gpu_check: no trtexec performance summary in $log" >&2
    exit 1
  fi
  awk -v b="$batch" -v s="$size" -v q="$qps" -v p50="$p50" -v p95="$p95" \
    -v m="$model" 'BEGIN {
      printf "benchmark {\"batch_size\": %d, \"device\": \"GPU\", " \
        "\"image_size\": %d, \"images_per_second\": %.3f, " \
        "\"latency_p50_ms\": %s, \"latency_p95_ms\": %s, \"model\": \"%s\", " \
        "\"runtime\": \"tensorrt-fp16\"}\n", b, s, q * b, p50, p95, m }'
done
