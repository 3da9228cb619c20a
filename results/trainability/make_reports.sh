#!/usr/bin/env bash
# Tables and figures of docs/TRAINABILITY.md from the finished runs under results/trainability
# (a run still in progress is left out until its metrics.json exists).
set -eu
cd "$(dirname "$0")/../.."
PY=${PY:-.venv/bin/python}
finished() { for d in "$@"; do [ -f "$d/metrics.json" ] && echo "$d"; done; }
$PY -m experiments.report $(finished results/trainability/ham_mri32/*) --out docs/trainability/ham_mri32
$PY -m experiments.report $(finished results/trainability/medmnist32/*-s0 results/trainability/ablations32/*) \
    --out docs/trainability/ablations32
$PY -m experiments.report $(finished results/trainability/medmnist32/*) --out docs/trainability/medmnist32
