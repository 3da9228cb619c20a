#!/usr/bin/env bash
# MAIL-RN18 vs the plain pair, same budget, 3 seeds: HAM10000 + Nickparvar brain MRI (../shared/data)
# at 32 px, 3 epochs, batch 32, Adam 1e-3 with a cosine schedule, BN momentum 0.9, random
# rotation/translation (no 4x paper augmentation). Resumable: a finished run is skipped, an
# interrupted one continues.
set -u
cd "$(dirname "$0")/../.."
. results/lib.sh
pair_over_seeds results/trainability/ham_mri32 --dataset ham10000_brainmri --data_dir "$DATA" --image_size 32 \
  --epochs 3 --batch_size 32 --learning_rate 1e-3 --lr_schedule cosine --bn_momentum 0.9 --nopaper_augment \
  --random_augment --early_stopping_patience 0
