#!/usr/bin/env bash
# The first-GPU check: every test marked gpu, then the headline benchmarks, then one summary.
#
#   bash benchmarks/gpu_check.sh [--out DIR] [--budget-s 480] [--dry-run]
#
# On a CUDA machine with the [gpu] extra (pip install -e ".[gpu,test]" --config-settings editable_mode=strict):
#   1. pytest -m gpu                                    -> DIR/gpu-tests.xml
#   2. dhvae AITS at batch 1 / 64 / 1024: torch, torch-cudagraphs, torch-compile (CUDA graphs),
#      onnxruntime (CUDA, IO binding) in fp32; tensorrt and onnxruntime-tensorrt in fp16
#                                                       -> DIR/bench/bench-cuda-*.json + .png
#   3. scorehoi FPS at the paper preset (N 10, tau 50, step 2), batch 64
#   4. socialmirror: a demo reconstruct job's stage table (the GPU actor holds half the node's CPUs,
#      each shard's decoding is a Ray task on the other half; models-busy share)
#                                                       -> DIR/socialmirror/report.json
#   5. socialmirror decode stage: frames/s against 1, 2, 4, 8 and all-but-two of the node's CPUs
#      (benchmarks/test_decode_stage.py)                -> DIR/decode_stage.json
#   6. socialmirror front end from plain videos at released sizes (YOLOX-x 800 x 1440, ByteTrack,
#      HMR 2.0 ViT-H, the denoiser) with TensorRT fp16: every stage's frames/s
#      (benchmarks/test_front_end.py)                   -> DIR/front_end.json
#   7. python -m benchmarks.gpu_report DIR              -> DIR/gpu_check.json + DIR/gpu_check.png
# Each step runs under its share of --budget-s (default 480 s: 8 minutes on one H100 / H200); a
# step that runs out of time is recorded as such in the summary, and the rest still run.
# --dry-run prints the plan and exits without needing a GPU (CI checks the argument handling).
set -uo pipefail
cd "$(dirname "$0")/.."

usage() { echo "usage: bash benchmarks/gpu_check.sh [--out DIR] [--budget-s SECONDS] [--dry-run]" >&2; }
fail() { echo "gpu_check: error: $*" >&2; exit 2; }

OUT="runs/gpu_check-$(date -u +%Y%m%dT%H%M%SZ)"
BUDGET=480
DRY=0
while [ $# -gt 0 ]; do
    case "$1" in
        --out) [ $# -ge 2 ] || fail "--out needs a folder"; OUT="$2"; shift 2 ;;
        --budget-s) [ $# -ge 2 ] || fail "--budget-s needs a number of seconds"; BUDGET="$2"; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) usage; fail "unknown argument $1 (give --out DIR, --budget-s SECONDS or --dry-run)" ;;
    esac
done
case "$BUDGET" in ''|*[!0-9]*) fail "--budget-s must be a whole number of seconds, got '$BUDGET'" ;; esac
[ "$BUDGET" -ge 60 ] || fail "--budget-s must be at least 60 (the GPU tests alone need about a minute)"

# Shares of the budget: tests 22 %, dhvae fp32 18 %, dhvae fp16 (TensorRT builds) 16 %, scorehoi 7 %,
# socialmirror job 8 %, decode stage 12 %, front end 17 %.
share() { echo $(( BUDGET * $1 / 100 )); }
CPUS=$(nproc 2>/dev/null || echo 1)
DECODE_CPUS=$(python3 -c "import sys; n = max(1, int(sys.argv[1]) - 2); print(','.join(str(c) for c in sorted({1, 2, 4, 8, n}) if c <= n))" "$CPUS")
STEPS=(
    "tests $(share 22) python -m pytest -m gpu -q -p no:cacheprovider --junitxml=$OUT/gpu-tests.xml"
    "dhvae_fp32 $(share 18) motionfleet bench --families dhvae --device cuda --precision fp32 --backends torch,torch-cudagraphs,torch-compile,onnxruntime --batch-sizes 1,64,1024 --repeats 10 --out $OUT/bench"
    "dhvae_fp16 $(share 16) motionfleet bench --families dhvae --device cuda --precision fp16 --backends tensorrt,onnxruntime-tensorrt --batch-sizes 1,64,1024 --repeats 10 --out $OUT/bench"
    "scorehoi $(share 7) motionfleet bench --families scorehoi --device cuda --refine-preset paper --backends torch,onnxruntime --batch-sizes 64 --repeats 5 --out $OUT/bench"
    "socialmirror $(share 8) motionfleet reconstruct --demo --device cuda --workers 1 --out $OUT/socialmirror"
    "decode_stage $(share 12) env MOTIONFLEET_DECODE_CPUS=$DECODE_CPUS python -m pytest benchmarks/test_decode_stage.py -k against_decode_cpus --benchmark-enable -q -p no:cacheprovider --benchmark-json=$OUT/decode_stage.json"
    "front_end $(share 17) env MOTIONFLEET_DEVICE=cuda MOTIONFLEET_BACKEND=tensorrt MOTIONFLEET_PRECISION=fp16 python -m pytest benchmarks/test_front_end.py -k released --benchmark-enable -q -p no:cacheprovider --benchmark-json=$OUT/front_end.json"
)

if [ "$DRY" = 1 ]; then
    echo "out: $OUT  budget: ${BUDGET}s  node CPUs: $CPUS  decode CPUs measured: $DECODE_CPUS"
    for step in "${STEPS[@]}"; do
        read -r name seconds command <<< "$step"
        echo "$name (${seconds}s): $command"
    done
    echo "summary: python -m benchmarks.gpu_report $OUT"
    exit 0
fi

python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 1)" \
    || fail "needs a CUDA GPU and a CUDA build of torch (torch.cuda.is_available() is False); --dry-run shows the plan"
mkdir -p "$OUT"
: > "$OUT/steps.tsv"
for step in "${STEPS[@]}"; do
    read -r name seconds command <<< "$step"
    echo "== $name (up to ${seconds}s): $command" >&2
    start=$(date +%s)
    # shellcheck disable=SC2086  # the command is a word list by design
    OMP_NUM_THREADS=$CPUS timeout "$seconds" $command > "$OUT/$name.log" 2>&1
    rc=$?
    printf '%s\t%s\t%s\n' "$name" "$rc" "$(( $(date +%s) - start ))" >> "$OUT/steps.tsv"
done
python -m benchmarks.gpu_report "$OUT"
