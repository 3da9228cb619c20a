#!/usr/bin/env bash
# The paper's own data (issue 21): HAM10000 (split by lesion_id) + Nickparvar brain MRI from
# ../shared/data, every model on one CPU-feasible budget: 64 px, 6 epochs, batch 32, Adam 1e-3 with a
# cosine schedule, BN momentum 0.9, random rotation/translation (no 4x paper augmentation).
# MAIL-RN18 and the plain pair on 3 seeds, DRIFA-Net and the Table 4 ablations (plain blocks, no
# fusion) on one, then the leakage study: MAIL-RN18 under the reference notebooks' protocol
# (--split_protocol notebook). Resumable: a finished run is skipped, an interrupted one continues.
# Tables: python -m experiments.report results/paper_data --out docs/reproduction
set -u
cd "$(dirname "$0")/../.."
. results/lib.sh
run() {   # run NAME SEED MODEL ARGS...
  local out=results/paper_data/$1 seed=$2 model=$3; shift 3
  train_once "$out" --dataset ham10000_brainmri --data_dir "$DATA" --model "$model" --image_size 64 \
    --epochs 6 --batch_size 32 --learning_rate 1e-3 --lr_schedule cosine --bn_momentum 0.9 \
    --nopaper_augment --random_augment --early_stopping_patience 0 --seed "$seed" "$@"
}
for seed in 0 1 2; do
  run mail_rn18-s$seed $seed mail_rn18
  run resnet18_pair-s$seed $seed resnet18_pair
done
run drifa_net-s0 0 drifa_net
run mail_rn18-block_plain-s0 0 mail_rn18 --model_option block=plain
run mail_rn18-fusion_none-s0 0 mail_rn18 --model_option fusion=none
run mail_rn18-notebook_split-s0 0 mail_rn18 --split_protocol notebook
