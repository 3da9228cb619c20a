#!/usr/bin/env bash
# MAIL-RN18 vs the plain pair, same budget, 3 seeds: embedded MedMNIST at 32 px, 2 epochs, batch 32,
# Adam 1e-3 with a cosine schedule, BN momentum 0.9, random augmentation (the medmnist defaults).
# Resumable: a finished run is skipped, an interrupted one continues.
set -u
cd "$(dirname "$0")/../.."
. results/lib.sh
pair_over_seeds results/trainability/medmnist32 --dataset medmnist --image_size 32 --epochs 2 --batch_size 32 \
  --learning_rate 1e-3 --lr_schedule cosine --early_stopping_patience 0
