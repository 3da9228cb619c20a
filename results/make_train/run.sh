#!/usr/bin/env bash
# `make train` as a new user runs it (embedded MedMNIST, MAIL-RN18, the experiment's defaults), one
# run directory per seed. Resumable: a finished seed is skipped, an interrupted one continues.
set -u
cd "$(dirname "$0")/../.."
for seed in ${SEEDS:-0 1 2}; do
  out=results/make_train/mail_rn18-s$seed
  [ -f "$out/metrics.json" ] && continue
  if [ -f "$out/config.json" ]; then make train OUT="$out" RESUME=1; else make train OUT="$out" SEED="$seed"; fi
done
