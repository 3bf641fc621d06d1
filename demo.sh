#!/usr/bin/env bash
# The whole SCASeg toolkit on a CPU, from nothing: set up, data, a trained model, fp32/fp16/int8 export,
# a benchmark table with mIoU and FPS, and a segmented video.
#
#   bash demo.sh            # uses the scaseg-t checkpoint that the repo's CPU recipe produced (scaseg/weights/)
#   bash demo.sh --train    # trains scaseg-t first with recipes/cpu_synth.sh (9-14 more minutes on 2 cores)
#
# Environment: PYTHON (default python3, 3.9+), SCASEG_DEMO_OUT (default ./demo_out), SCASEG_DEMO_VENV
# (default ./.venv), SCASEG_TORCH_INDEX (a pip index URL for the CPU build of torch, e.g.
# https://download.pytorch.org/whl/cpu; leave unset where torch==2.13.0 is served locally).
# Safe to rerun: every output is written under a temporary name and renamed, the data folder is regenerated.
set -euo pipefail
cd "$(dirname "$0")"
repo=$(pwd)

train=0
for arg in "$@"; do
  case "$arg" in
    --train) train=1 ;;
    -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "demo.sh: error: unknown option $arg (expected --train or --help)" >&2; exit 2 ;;
  esac
done

out=${SCASEG_DEMO_OUT:-$repo/demo_out}
venv=${SCASEG_DEMO_VENV:-$repo/.venv}
py=${PYTHON:-python3}
start=$(date +%s)
step() { printf '\n== [%4ss] %s\n' "$(( $(date +%s) - start ))" "$*"; }

# Scenes drawn like the recipe's (recipes/cpu_synth.sh: 256x512, seed 0) but with another seed: the demo's
# mIoU is measured on 60 scenes the model never saw, and int8 is calibrated on its 140 train scenes.
SYNTH_ARGS=(--num 200 --val-fraction 0.3 --seed 1 --size 256x512 --video-frames 120 --fps 10)

step "1/6 virtual environment $venv"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
# shellcheck disable=SC1091
. "$venv/bin/activate"
export PIP_DISABLE_PIP_VERSION_CHECK=1
pip_install() {  # quiet, minus the notes this machine's pip prints about its local package folders
  python -m pip install -q "$@" 2>&1 | { grep -v "^WARNING: Location" || true; }
  return "${PIPESTATUS[0]}"
}
if ! python -c "import torch" 2>/dev/null; then
  # The CPU build: an unpinned torch from PyPI is a multi-GB CUDA build.
  pip_install torch==2.13.0 ${SCASEG_TORCH_INDEX:+--index-url "$SCASEG_TORCH_INDEX"}
fi
pip_install "$repo[export]"
python -c "import scaseg; print('scaseg', scaseg.__version__, 'installed in', '$venv')"

mkdir -p "$out"
step "2/6 synthetic street scenes -> $out/data"
scaseg-synth "$out/data" "${SYNTH_ARGS[@]}"

step "3/6 a trained scaseg-t"
if [ "$train" = 1 ]; then
  bash "$repo/recipes/cpu_synth.sh" "$out/recipe"
  ckpt="$out/recipe/scaseg-t-synth.pth"
else
  # The installed package's copy of the checkpoint the recipe produced (provenance in the .json beside it).
  # Asked from another folder: run here, Python would import the checkout's ./scaseg instead of the install.
  ckpt=$(cd / && python -c "import scaseg; print(scaseg.weights_path('scaseg-t-synth'))")
  (cd / && python - <<'PY'
import json, os, scaseg
path = scaseg.weights_path("scaseg-t-synth")
with open(os.path.splitext(path)[0] + ".json") as f:
    facts = json.load(f)
print("shipped checkpoint:", path)
print(f"  made by {facts['recipe']} on {facts['date'][:10]}: {facts['iterations']} iterations in "
      f"{facts['train_seconds'] / 60:.1f} min on {facts['machine']['cores']} CPU cores, "
      f"val mIoU {100 * facts['shipped_val_miou']:.2f}% on {facts['val_images']} synthetic scenes")
PY
  )
fi
mkdir -p "$out/models"
cp "$ckpt" "$out/models/.scaseg-t.pth.tmp" && mv "$out/models/.scaseg-t.pth.tmp" "$out/models/scaseg-t.pth"

step "4/6 export fp32, fp16 and int8 ONNX (each with its parity report)"
scaseg-export "$out/models/scaseg-t.pth" -o "$out/models/scaseg-t.onnx"
scaseg-export "$out/models/scaseg-t.pth" -o "$out/models/scaseg-t.fp16.onnx" --precision fp16
scaseg-export "$out/models/scaseg-t.pth" -o "$out/models/scaseg-t.int8.onnx" --precision int8 \
  --calib "$out/data" --calib-num 64

step "5/6 benchmark: FPS and mIoU on the synthetic validation split"
# Threads: the default, auto, times 1 thread and every core on this model's input when it loads and keeps the
# faster (scaseg-bench prints which; docs/runtime.md).
scaseg-bench "$out/models/scaseg-t.onnx" "$out/models/scaseg-t.fp16.onnx" "$out/models/scaseg-t.int8.onnx" \
  --data "$out/data" --runs 30 --warmup 5 --per-class -o "$out/bench.json" -o "$out/bench.csv"

step "6/6 segment a video"
scaseg-infer "$out/data/video/synth.mp4" --model "$out/models/scaseg-t.int8.onnx" --legend \
  -o "$out/synth_overlay.mp4"

step "done in $(( $(date +%s) - start )) s. Outputs:"
cat <<EOF
  data (Cityscapes layout)   $out/data
  checkpoint                 $out/models/scaseg-t.pth
  ONNX fp32 / fp16 / int8    $out/models/scaseg-t.onnx  scaseg-t.fp16.onnx  scaseg-t.int8.onnx
  benchmark table            $out/bench.csv  (JSON: $out/bench.json)
  segmented video            $out/synth_overlay.mp4
Run the tests with:  bash .ci/run
EOF
