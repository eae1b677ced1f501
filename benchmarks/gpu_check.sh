#!/usr/bin/env bash
# The CUDA half of aesipe in one call on a GPU machine: set up, build the op with CUDA, run the CUDA tests, and
# measure PAMR, labelling (ONNX Runtime's CUDA provider, float16 file) and a mixed-precision stage-1 step at the
# paper's shape. Every table and log goes under $OUT; the script exits non-zero if any step failed.
#
#   OUT=/some/folder benchmarks/gpu_check.sh        (or: make gpu-check, which writes build/gpu-check-out)
#
# Steps (each logs to $OUT/<step>.log; $OUT/summary.md lists them with status and seconds):
#   setup    reuse $VENV when it already has torch, onnxruntime and aesipe (nothing is downloaded then), else
#            `make setup EXTRAS=$EXTRAS` (needs a package registry); $PYTHON overrides the interpreter
#   build    python -m aesipe.ops build --cuda, for the architectures a shipped build has (TORCH_CUDA_ARCH_LIST,
#            default 8.0;9.0+PTX), into build/test-cache, where the tests look first
#   tests    pytest tests/ops, CPU + CUDA + emulated CUDA (on a GPU, any skipped CUDA test is a failure)
#   ptx      the CUDA parity tests again with CUDA_FORCE_PTX_JIT=1: the PTX that GPUs newer than the cubins get
#   pamr     benchmarks/bench_pamr.py --device cuda, written into $OUT/RESULTS.md (a copy of the repository's)
#   label    benchmarks/bench_label.py --device cuda --half  -> $OUT/bench_label.md
#   amp      benchmarks/bench_amp_step.py: AMP stage-1 steps, ResNet-50, batch 16, crop 512 -> $OUT/amp_stage1.md
#
# Without a visible GPU (or with GPU_CHECK_SMOKE=1) every step runs its CPU form at toy size instead: the same
# commands with --device cpu, so that a typo cannot wait for the day a GPU is lent (tests/ops/test_gpu_check.py
# runs it so). About 5 minutes on one H100 with a set-up venv.
#
# Variables: OUT (required), VENV (.venv), EXTRAS (gpu,export,crf,dev), PYTHON ($VENV/bin/python), WORK (scratch
# that does not come back: build/gpu-check), LABEL_IMAGES (64), GPU_CHECK_SMOKE (auto).
set -uo pipefail
cd "$(dirname "$0")/.."
: "${OUT:?set OUT to the folder that receives the tables and logs}"
VENV=${VENV:-.venv}
EXTRAS=${EXTRAS:-gpu,export,crf,dev}
PYTHON=${PYTHON:-$VENV/bin/python}
WORK=${WORK:-build/gpu-check}
export AESIPE_CACHE_DIR=${AESIPE_CACHE_DIR:-$PWD/build/test-cache}
mkdir -p "$OUT" "$WORK"
OUT=$(cd "$OUT" && pwd)
SUMMARY=$OUT/summary.md
FAILED=()

log() { printf '[gpu_check %s] %s\n' "$(date +%H:%M:%S)" "$*" | tee -a "$OUT/gpu_check.log"; }

# step NAME COMMAND...: run it with its output in $OUT/NAME.log, record status and time; never stops the script.
step() {
  local name=$1 start=$SECONDS status
  shift
  log "$name: $*"
  if "$@" >"$OUT/$name.log" 2>&1; then status=ok; else status="FAILED (exit $?, see $name.log)"; FAILED+=("$name"); fi
  printf '| %s | %s | %d |\n' "$name" "$status" $((SECONDS - start)) >>"$SUMMARY"
  log "$name: $status after $((SECONDS - start)) s"
}

# One interpreter start: versions and GPU to the log, then "GPU <0|1> <default arch list>" as the last line.
probe() {
  "$PYTHON" - <<'EOF'
import platform, torch, onnxruntime as ort
import aesipe.export, aesipe.train
from aesipe.ops._build import DEFAULT_CUDA_ARCH_LIST
print("python", platform.python_version(), "| torch", torch.__version__, "| CUDA", torch.version.cuda,
      "| GPU", torch.cuda.get_device_name() if torch.cuda.is_available() else "none")
print("onnxruntime", ort.__version__, "| providers", ort.get_available_providers())
print("GPU", int(torch.cuda.is_available()), DEFAULT_CUDA_ARCH_LIST)
EOF
}

setup() {
  if [ -x "$PYTHON" ] && probe >"$WORK/probe.txt" 2>/dev/null; then
    echo "using $PYTHON as it is (no download)"
  elif [ "$PYTHON" = "$VENV/bin/python" ]; then
    make setup EXTRAS="$EXTRAS" VENV="$VENV" && probe >"$WORK/probe.txt"
  else
    "$PYTHON" -m pip install -q -e ".[$EXTRAS]" && probe >"$WORK/probe.txt"
  fi || return 1
  head -n 2 "$WORK/probe.txt"
}

printf '# gpu_check %s\n\n| step | status | seconds |\n|---|---|---|\n' "$(date -u +%FT%TZ)" >"$SUMMARY"
rm -f "$WORK/probe.txt"
step setup setup
cat "$OUT/setup.log" >>"$OUT/gpu_check.log"
if ! read -r _ GPU DEFAULT_ARCHS < <(tail -n 1 "$WORK/probe.txt" 2>/dev/null) || [ -z "${DEFAULT_ARCHS:-}" ]; then
  log "no usable Python with torch and aesipe at $PYTHON: stopping"
  exit 1
fi
SMOKE=${GPU_CHECK_SMOKE:-$((1 - GPU))}
# What a build without a visible GPU gets. Every process then computes the same build key: the build step's
# library is the one tested and measured, not one for the visible GPU alone.
export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-$DEFAULT_ARCHS}
if [ "$SMOKE" = 0 ] && [ "$GPU" = 0 ]; then
  log "GPU_CHECK_SMOKE=0 but torch sees no GPU: stopping"
  exit 1
fi
if [ "$SMOKE" = 1 ]; then
  log "smoke run: no GPU (or GPU_CHECK_SMOKE=1), every step runs its CPU form at toy size; no figure is meaningful"
  DEVICE=cpu BUILD=--cpu-only TESTS=(-m cuda) PAMR_ARGS=(--smoke --repeats 1) LABEL_IMAGES=2
  AMP_ARGS=(--backbone mobilenet_v2 --batch 2 --crop 64 --steps 2)
else
  DEVICE=cuda BUILD=--cuda TESTS=(-m "not slow") PAMR_ARGS=(--repeats 10) LABEL_IMAGES=${LABEL_IMAGES:-64}
  AMP_ARGS=(--backbone resnet50 --batch 16 --crop 512 --steps 4)
  command -v nvidia-smi >/dev/null && nvidia-smi >"$OUT/nvidia-smi.txt" 2>&1
fi
echo "load average before: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)" >>"$SUMMARY.load"

step build "$PYTHON" -m aesipe.ops build "$BUILD"

cuda_tests() {
  "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/ops "${TESTS[@]}" --junitxml "$OUT/tests_ops.xml" \
    | tee "$WORK/tests_ops.out" || return 1
  # On a GPU every CUDA case must have run: a skip there means there were no CUDA kernels to test.
  if [ "$SMOKE" = 0 ] && grep -E "SKIPPED.*(needs a CUDA GPU|without CUDA kernels)" "$WORK/tests_ops.out"; then
    echo "CUDA tests were skipped on a GPU machine"
    return 1
  fi
}
step tests cuda_tests
# The driver compiles the library's PTX instead of loading a cubin, as on a GPU newer than every cubin.
step ptx env CUDA_FORCE_PTX_JIT=1 "$PYTHON" -m pytest -q -rs -p no:cacheprovider tests/ops -m cuda -k "parity or emulat"

cp benchmarks/RESULTS.md "$OUT/RESULTS.md"
step pamr "$PYTHON" benchmarks/bench_pamr.py --device "$DEVICE" "${PAMR_ARGS[@]}" --write --results "$OUT/RESULTS.md"

label() {
  "$PYTHON" benchmarks/bench_label.py --device "$DEVICE" --half --images "$LABEL_IMAGES" --ray-actors "" \
    --work "$WORK/label" | tee "$OUT/bench_label.md"
}
step label label

step amp "$PYTHON" benchmarks/bench_amp_step.py --device "$DEVICE" "${AMP_ARGS[@]}" --out "$OUT/amp_stage1.md"

echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null)" >>"$SUMMARY.load"
{
  echo
  cat "$SUMMARY.load"
  echo
  echo "Device: $DEVICE$([ "$SMOKE" = 1 ] && echo ' (smoke run: toy sizes on the CPU, not figures)')"
  tail -n 2 "$OUT/setup.log"
  for table in amp_stage1.md bench_label.md; do
    [ -f "$OUT/$table" ] && printf '\n## %s\n\n' "$table" && cat "$OUT/$table"
  done
  printf '\nThe PAMR table is in RESULTS.md (section "PAMR operator").\n'
} >>"$SUMMARY"
rm -f "$SUMMARY.load"
if [ ${#FAILED[@]} -gt 0 ]; then
  log "failed steps: ${FAILED[*]} (summary: $SUMMARY)"
  exit 1
fi
log "all steps passed (summary: $SUMMARY)"
