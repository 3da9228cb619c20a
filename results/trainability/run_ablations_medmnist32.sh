#!/usr/bin/env bash
# Learning-rate sweep and MAIL ablations on the §4 budget (embedded MedMNIST, 32 px, 2 epochs, batch
# 32, Adam with a cosine schedule, BN momentum 0.9, random augmentation, seed 0). Learning rate
# 1e-3 and MAIL's defaults are the seed-0 runs of run_medmnist32.sh. Resumable.
set -u
cd "$(dirname "$0")/../.."
. results/lib.sh
run() {   # run NAME MODEL ARGS...
  local out=results/trainability/ablations32/$1 model=$2; shift 2
  train_once "$out" --dataset medmnist --model "$model" --image_size 32 --epochs 2 --batch_size 32 \
    --lr_schedule cosine --early_stopping_patience 0 --seed 0 "$@"
}
for lr in 3e-3 3e-4; do
  run mail_rn18-lr$lr mail_rn18 --learning_rate $lr
  run resnet18_pair-lr$lr resnet18_pair --learning_rate $lr
done
run mail_rn18-nodropout mail_rn18 --learning_rate 1e-3 --model_option dropout=0
for fusion in none cascaded mfifa emsca; do
  run mail_rn18-fusion_$fusion mail_rn18 --learning_rate 1e-3 --model_option fusion=$fusion
done
run mail_rn18-block_plain mail_rn18 --learning_rate 1e-3 --model_option block=plain   # EMCAM on plain blocks
