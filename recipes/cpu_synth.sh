#!/usr/bin/env bash
# CPU recipe: train scaseg-t from scratch (no pretrained backbone) on synthetic street scenes, on a 2-core CPU.
#
#   recipes/cpu_synth.sh [OUT_DIR] [--ship]
#
# 1. scaseg-synth writes 600 scenes of 256x512 (540 train, 60 val) in the Cityscapes layout, in 2 processes;
# 2. scaseg-train, as two gloo ranks of one thread each under torchrun (on 2 cores a step runs 1.41x faster than
#    one process with two threads), trains scaseg-t for 800 iterations of 2 x 2 crops of 128x256 taken from
#    images rescaled by 0.4..0.75, AdamW lr 4e-3, 50 warm-up iterations, poly decay, no drop-path and no dropout
#    (regularisers slow a 60-epoch run down more than they help it), class-balanced cross-entropy
#    (--class-weight balanced: people are under 2% of the pixels), model and batches channels-last, validating
#    with a 192x384 network input (predictions are scored at the stored 256x512 labels); after the last step
#    --logit-adjust takes part of the class weights' shift towards rare classes back out of the classifier's
#    bias (alpha x log w, alpha fitted on 128 train images);
# 3. recipes/package_weights.py stores the final weights as float16 in OUT_DIR/scaseg-t-synth.pth with the
#    validation size as its input size, writes OUT_DIR/scaseg-t-synth.json (commands, seed, wall times, mIoU,
#    per-class IoU, date, machine), and exports the float16 checkpoint to OUT_DIR/scaseg-t-synth.int8.onnx (the
#    default model of scaseg-infer/scaseg-bench).
# --ship copies the three files into scaseg/weights/ (what the package ships).
#
# Measured (docs/training.md): 81.03% val mIoU (person 54.2%), 527.8 s on an idle 2-core EPYC (AVX-512); the
# wall times on other machines are in docs/training.md.
# Rerunnable: a previous output of this recipe in OUT_DIR is replaced. Fixed seed 0.
set -euo pipefail

OUT="runs/cpu_synth"
SHIP=0
for arg in "$@"; do
    case "$arg" in
        --ship) SHIP=1 ;;
        -h|--help) sed -n '2,23p' "$0"; exit 0 ;;
        -*) echo "cpu_synth.sh: unknown option $arg (expected [OUT_DIR] [--ship])" >&2; exit 2 ;;
        *) OUT="$arg" ;;
    esac
done
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(dirname "$HERE")"
for tool in scaseg-synth torchrun python; do
    command -v "$tool" >/dev/null || { echo "cpu_synth.sh: $tool is not on PATH (pip install -e '.[export]')" >&2; exit 2; }
done

SEED=0
DATA="$OUT/data"
RUN="$OUT/train"
NAME="scaseg-t-synth"
# OpenMP threads that spin while they wait make every step several times slower as soon as another process
# wants the same cores (measured here: 2.9 s vs 18 s per step); passive waiting costs nothing on an idle machine.
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", b - a }'; }

mkdir -p "$OUT"
LOAD_START="$(cut -d' ' -f1-3 /proc/loadavg 2>/dev/null || true)"
T0="$(now)"

SYNTH_CMD=(scaseg-synth "$DATA" --num 600 --seed "$SEED" --size 256x512 --val-fraction 0.1 --video-frames 0 --workers 2)
echo "+ ${SYNTH_CMD[*]}"
"${SYNTH_CMD[@]}"
T1="$(now)"

# Two gloo ranks of one thread each (global batch 2 x 2 = 4) run a step 1.41x faster than one process with two
# threads on a 2-core CPU (docs/training.md); torchrun comes with torch.
TRAIN_CMD=(torchrun --standalone --nproc-per-node 2 -m scaseg.train.cli
           --data "$DATA" --dataset cityscapes --variant scaseg-t -o "$RUN" --device cpu --threads 1
           --iters 800 --batch 2 --crop 128x256 --scale-range 0.4 0.75 --val-size 192x384 --class-weight balanced
           --lr 4e-3 --head-lr-mult 1 --warmup-iters 50 --val-interval 400 --workers 1 --seed "$SEED" --channels-last
           --logit-adjust --model-opt drop_path_rate=0 --model-opt dropout=0)
# scaseg-train refuses a folder that already holds a run: remove ours (and only a training output) first.
if [ -e "$RUN/train_state.pt" ]; then rm -rf "$RUN"; fi
echo "+ ${TRAIN_CMD[*]}"
"${TRAIN_CMD[@]}" 2>&1 | tee "$OUT/train.log"
T2="$(now)"

python "$HERE/package_weights.py" --run "$RUN" --data "$DATA" -o "$OUT/$NAME.pth" --train-log "$OUT/train.log" \
    --command "${SYNTH_CMD[*]} && ${TRAIN_CMD[*]}" --synth-seconds "$(secs "$T0" "$T1")" \
    --train-seconds "$(secs "$T1" "$T2")" --load-start "$LOAD_START"
T3="$(now)"

if [ "$SHIP" = 1 ]; then
    mkdir -p "$REPO/scaseg/weights"
    for f in "$NAME.pth" "$NAME.json" "$NAME.int8.onnx"; do  # copy, then rename: the package never holds half a file
        cp "$OUT/$f" "$REPO/scaseg/weights/.$f.tmp" && mv "$REPO/scaseg/weights/.$f.tmp" "$REPO/scaseg/weights/$f"
    done
    echo "cpu_synth: shipped $NAME.pth, $NAME.json and $NAME.int8.onnx to $REPO/scaseg/weights/"
fi
MIOU="$(grep -o 'final val mIoU [0-9.]*%' "$OUT/train.log" | tail -1)"
echo "cpu_synth: wall time $(secs "$T0" "$T3") s (synthesis $(secs "$T0" "$T1") s, training $(secs "$T1" "$T2") s," \
     "packaging $(secs "$T2" "$T3") s); $MIOU; load average at start $LOAD_START"
