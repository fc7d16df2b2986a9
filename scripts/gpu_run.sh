#!/usr/bin/env bash
# The GPU run, in two halves (issue 12):
#
#   scripts/gpu_run.sh prepare [CARS]   HERE, with internet: wheels the bare GPU machine lacks into
#                                       .whl/, and up to CARS real cars (default 30; fewer when
#                                       the 64 MiB working tree that travels would overflow) from
#                                       ../shared/carvana into .device/carvana (Kaggle layout).
#   scripts/gpu_run.sh run [bench|accuracy|predict|all]
#                                       ON the GPU machine (no internet; carry .whl and .device):
#                                       installs the wheels into $SITE, then `benchmark gpu`
#                                       and/or the accuracy run (SMP Unet-resnet34 trained at
#                                       1918x1280 on all but ~5 cars, scored on those 5 with
#                                       hflip TTA), or `predict`: `benchmark gpu` for SMP
#                                       Unet-resnet34 at full size once per line of
#                                       $PREDICT_SETTINGS (prediction settings to compare). Small
#                                       results (<= 8 files) go to $OUT, checkpoints and reports
#                                       to $WORK.
#
# The GPU machine (device KINDS.md) has Python 3.12, torch, torchvision, timm, huggingface_hub,
# safetensors, opencv-python-headless, scipy, typing-extensions, nvidia-ml-py, typer, pandas...
# It lacks SMP 0.6.0 and albumentations 2.0.8 and, of their needs, albucore, simsimd,
# stringzilla, pydantic, pydantic-core, annotated-types and typing-inspection (typing-extensions
# travels too: pydantic needs >= 4.16). Each is fetched with --no-deps at this venv's version,
# for PY_VERSIONS (default "3.12", the GPU machine's; this machine's Python is 3.11).
#
# Environment: PYTHON (default .venv/bin/python for prepare, python3 for run), SRC (default
# ../shared/carvana), OUT (default .device/out), WORK (default .device/work), SITE (default
# /tmp/site), TRAIN_MINUTES (training budget, default 5), BENCH_ARGS (extra `benchmark gpu`
# options, e.g. --quick), TRAIN_ARGS (extra overrides for folds, train and evaluate),
# PREDICT_SETTINGS (lines of overrides for `predict`; default: the profile's compiled prediction,
# then the same with CUDA graphs), HEIGHT and WIDTH (`predict`'s size, default 1280x1918),
# DATA_ROOT (`run` only: a Kaggle-layout folder to use instead of .device/carvana), PROFILE
# (the configs/profiles/ file layered on configs/base.yaml, default gpu_full; gpu_recipe for the
# winners' recipe, its crops, boundary loss and weight average, trained for TRAIN_MINUTES).
set -euo pipefail
cd "$(dirname "$0")/.."

WHEELS=.whl
DATA=.device/carvana
LIMIT=$((64 * 1024 * 1024))  # the working tree that travels: tracked, untracked, carried
PACKAGES="segmentation-models-pytorch albumentations albucore simsimd stringzilla pydantic
pydantic-core annotated-types typing-inspection typing-extensions"

# bytes on disk (whole blocks): the device tool refused 63.2 MiB of apparent size as over 64 MiB
size_of() { du -s --block-size=1 "$@" 2>/dev/null | awk '{s += $1} END {print s + 0}'; }
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
quiet() { "$@" 2>&1 | { grep -v "is ignored: it is neither a file" || true; }; }

prepare() {
    local cars=${1:-30} py=${PYTHON:-.venv/bin/python} src=${SRC:-../shared/carvana}
    rm -rf "$WHEELS" "$DATA"
    mkdir -p "$WHEELS"
    : > "$WHEELS/requirements.txt"
    local pkg version pv
    for pkg in $PACKAGES; do
        version=$("$py" -c "import importlib.metadata as m; print(m.version('$pkg'))")
        if [ "$pkg" = typing-extensions ]; then  # a newer one there is fine
            echo "$pkg>=$version" >> "$WHEELS/requirements.txt"
        else
            echo "$pkg==$version" >> "$WHEELS/requirements.txt"
        fi
        for pv in ${PY_VERSIONS:-3.12}; do
            quiet "$py" -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" \
                --python-version "$pv" --implementation cp --platform manylinux_2_28_x86_64 \
                --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
                --platform manylinux2014_x86_64 --platform manylinux1_x86_64 "$pkg==$version"
        done
    done
    echo "wheels for Python ${PY_VERSIONS:-3.12}: $(ls "$WHEELS"/*.whl | wc -l) files"

    local whl tree
    whl=$(size_of "$WHEELS")
    tree=$(git ls-files -z --cached --others --exclude-standard \
           | xargs -0 du -c --block-size=1 2>/dev/null \
           | awk '/\ttotal$/ {s += $1} END {print s + 0}')
    # cars while the whole stays 3 MiB under the limit (room for the tree to grow)
    "$py" scripts/copy_cars.py "$src" "$DATA" "$cars" $((LIMIT - tree - whl - 3 * 1048576))

    local dev
    dev=$(size_of "$DATA")
    echo "sizes: $WHEELS $(mib "$whl"), $DATA $(mib "$dev") (train" \
         "$(mib "$(size_of "$DATA/train")"), masks $(mib "$(size_of "$DATA/train_masks")"));" \
         "working tree $(mib "$tree"); all that travels $(mib $((whl + dev + tree))) of" \
         "$(mib "$LIMIT")"
    if [ $((whl + dev + tree)) -gt "$LIMIT" ]; then
        echo "too large to travel: use fewer cars (scripts/gpu_run.sh prepare N)" >&2
        exit 1
    fi
}

install() {
    local py=$1 site=${SITE:-/tmp/site}
    [ -f "$WHEELS/requirements.txt" ] || { echo "$WHEELS/ missing: run 'prepare' here" >&2; exit 1; }
    if ! "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
            --target "$site" --find-links "$WHEELS" -r "$WHEELS/requirements.txt"; then
        echo "no wheel for this Python: prepare with PY_VERSIONS=$("$py" -c \
             'import sys; print("%d.%d" % sys.version_info[:2])')" >&2
        exit 1
    fi
    export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
    "$py" -c "import segmentation_models_pytorch as s, albumentations as a; \
print('installed: smp', s.__version__, 'albumentations', a.__version__)"
}

bench() {
    local py=$1 out=$2 root=()
    [ -d "$DATA/train" ] && root=(--data-root "$DATA")  # real JPEGs rather than renders
    # shellcheck disable=SC2086  # BENCH_ARGS: several words
    "$py" -m pipeline.benchmark gpu "${root[@]}" --out "$out/gpu_benchmark.json" \
        -c configs/base.yaml -c "$PROFILE_YAML" ${BENCH_ARGS:-} \
        2>&1 | tee "$out/gpu_benchmark.log"
}

predict() {
    local py=$1 out=$2 root=() i=0 settings
    [ -d "$DATA/train" ] && root=(--data-root "$DATA")
    local default="predict.compile_mode=default
predict.compile_mode=reduce-overhead"
    while IFS= read -r settings; do
        i=$((i + 1))
        echo "== predict $i: $settings"
        # shellcheck disable=SC2086  # settings, BENCH_ARGS: several words
        "$py" -m pipeline.benchmark gpu "${root[@]}" --out "$out/predict_$i.json" \
            -c configs/base.yaml -c "$PROFILE_YAML" \
            --models configs/models/smp_unet_resnet34.yaml --height "${HEIGHT:-1280}" \
            --width "${WIDTH:-1918}" --quick ${BENCH_ARGS:-} $settings 2>&1 \
            | tee "$out/predict_$i.log"
    done <<< "${PREDICT_SETTINGS:-$default}"
}

accuracy() {
    local py=$1 out=$2 work=${WORK:-.device/work}
    local cfg=(-c configs/base.yaml -c "$PROFILE_YAML") cars
    cars=$(find "$DATA/train" -name '*.jpg' -printf '%f\n' | cut -c1-12 | sort -u | wc -l)
    # fold 0 holds ~5 cars out; the model trains on the rest
    # shellcheck disable=SC2206  # TRAIN_ARGS: several words
    local common=("data.root=$DATA" "folds.n_folds=$(( (cars + 2) / 5 ))" ${TRAIN_ARGS:-})
    mkdir -p "$work"
    "$py" -m pipeline.folds "${cfg[@]}" --data-root "$DATA" --out "$out/folds.csv" \
        "${common[@]}"
    local train=("$py" -m pipeline.train --fold 0 "${cfg[@]}" -m smp_unet_resnet34
                 --folds "$out/folds.csv" --checkpoints "$work/checkpoints"
                 --metrics "$work/metrics" --live "$work/live" --no-progress "${common[@]}"
                 train.live=false "train.time_budget_min=${TRAIN_MINUTES:-5}")
    if ! "${train[@]}" 2>&1 | tee "$out/train.log"; then
        # a machine whose /dev/shm cannot hold the workers' batches: train without workers
        grep -q "/dev/shm" "$out/train.log" || return 1
        "${train[@]}" train.num_workers=0 2>&1 | tee "$out/train.log"
    fi
    "$py" -m pipeline.evaluate "${cfg[@]}" -m smp_unet_resnet34 --folds "$out/folds.csv" \
        --checkpoints "$work/checkpoints" --data-root "$DATA" --out-dir "$work/reports" \
        --metrics-out "$out/cv.json" "${common[@]}" 2>&1 | tee "$out/evaluate.log"
}

run() {
    local what=${1:-all} out=${OUT:-.device/out} py=${PYTHON:-python3}
    DATA=${DATA_ROOT:-$DATA}
    PROFILE_YAML=configs/profiles/${PROFILE:-gpu_full}.yaml
    [ -f "$PROFILE_YAML" ] || { echo "$PROFILE_YAML: no such profile (PROFILE)" >&2; exit 2; }
    mkdir -p "$out"
    [ -n "${SKIP_INSTALL:-}" ] || install "$py"
    case $what in
        bench) bench "$py" "$out" ;;
        accuracy) accuracy "$py" "$out" ;;
        predict) predict "$py" "$out" ;;
        all) bench "$py" "$out"; accuracy "$py" "$out" ;;
        *) echo "run what? bench, accuracy, predict or all" >&2; exit 2 ;;
    esac
}

case ${1:-} in
    prepare) shift; prepare "$@" ;;
    run) shift; run "$@" ;;
    *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
