#!/usr/bin/env bash
# Robustness on the embedded data (issues 19 and 20): MAIL, MAIL-AT and Robust-MAIL with their
# defaults (no --model_option) on one budget: 32 px, batch 64, 6 epochs; adversarial training with
# PGD-5 at eps 4/255 and half the loss on clean images (--adv_clean_weight 0.5). Robust-MAIL also on
# the short budget (4 epochs, PGD-2). Then robust_eval on each: PGD-10 / PGD-20 / MIM-10 with the
# default task loss under both protocols (EOT 10, 10 classification draws), PGD-10 with the paper's
# TMTL loss, and an eps sweep on the first 64 pairs. Resumable: finished steps are skipped.
# Tables: python -m experiments.report results/robust32 (training) and the eval/*.md reports.
set -u
cd "$(dirname "$0")/../.."
. results/lib.sh
R=results/robust32
train() {   # train NAME ARGS...
  local out=$R/$1; shift
  train_once "$out" --image_size 32 --batch_size 64 --seed 0 "$@"
}
evaluate() {   # evaluate RUN NAME ARGS...
  local run=$R/$1 out=$R/eval/$1-$2.json; shift 2
  [ -f "$out" ] && return
  $PY -m experiments.robust_eval --run "$run" --protocol both --eot 10 --draws 10 --seed 0 --out "$out" "$@"
}
AT="--adv_iters 5 --epochs 6 --adv_clean_weight 0.5"
train robust_mail-s0 --model robust_mail $AT
train mail_at-s0 --model mail --adversarial $AT
train mail-s0 --model mail --epochs 6
train robust_mail_short-s0 --model robust_mail --adv_iters 2 --epochs 4 --adv_clean_weight 0.5
for run in mail-s0 mail_at-s0 robust_mail-s0; do
  evaluate $run pgd10 --attack pgd --iters 10 --num_samples 156
done
for run in mail-s0 mail_at-s0 robust_mail-s0; do
  evaluate $run pgd10-tmtl --attack pgd --iters 10 --num_samples 156 --loss tmtl --nosanity
  evaluate $run pgd20 --attack pgd --iters 20 --num_samples 156 --nosanity
  evaluate $run mim10 --attack mim --iters 10 --num_samples 156 --nosanity
done
for run in mail-s0 mail_at-s0 robust_mail-s0; do
  evaluate $run eps_sweep --attack pgd --iters 10 --num_samples 64 --eot 5 --eps_sweep --nosanity
done
