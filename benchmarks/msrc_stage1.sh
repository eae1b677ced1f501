#!/usr/bin/env bash
# The paper's Table 2 in miniature on real photos: SIPE (IS-CAM) vs AE-SIPE (AE-IS-CAM), each with its CAM,
# trained on MSRC-21 `train` tags only (full 5-epoch recipe of configs/msrc_mobilenet.toml), judged on `val`.
# Usage: benchmarks/msrc_stage1.sh DATA_ROOT MOBILENET_WEIGHTS OUT_DIR
set -euo pipefail
data=${1:?msrc21-voc folder}; weights=${2:?mobilenet_v2 weights}; out=${3:?output folder}
bin=$(dirname "$(command -v aesipe-train || echo .venv/bin/aesipe-train)")
common=(--recipe configs/msrc_mobilenet.toml "data.root=$data" "model.pretrained=$weights")
sipe=(model.hierarchical_seeds=false model.affinity_enhancement=false model.iscam_normalisation=false
      cam.map=iscam cam.background_scale=1.0)
"$bin/aesipe-train" train "$out/aesipe" "${common[@]}"
"$bin/aesipe-train" make-cam "$out/aesipe"
"$bin/aesipe-train" train "$out/sipe" "${common[@]}" "${sipe[@]}"
"$bin/aesipe-train" make-cam "$out/sipe"
for run in aesipe sipe; do
  for key in cam maps; do
    "$bin/aesipe-train" eval-cam "$out/$run" --split val --map-key $key --sweep 0.8,1.0 --crf --protocol label \
      | tee "$out/$run-$key-label.txt"
    cp "$out/$run/cam_eval.json" "$out/$run-$key-label.json"
  done
  "$bin/aesipe-train" eval-cam "$out/$run" --split val --map-key maps --crf --protocol ir | tee "$out/$run-maps-ir.txt"
  cp "$out/$run/cam_eval.json" "$out/$run-maps-ir.json"
done
