# Sourced by the results scripts: the one way they start a training run, so every script skips a
# finished run and continues an interrupted one the same way.
PY=${PY:-.venv/bin/python}
DATA=${DATA:-../shared/data}

# train_once OUT ARGS...: python -m experiments.train ARGS --run OUT; nothing when OUT has finished
# (metrics.json), --resume when it was interrupted (config.json without metrics.json).
train_once() {
  local out=$1; shift
  [ -f "$out/metrics.json" ] && return 0
  local resume=""; [ -f "$out/config.json" ] && resume="--resume"
  $PY -m experiments.train "$@" --run "$out" $resume
}

# pair_over_seeds DIR ARGS...: MAIL-RN18 and the plain ResNet-18 pair on seeds 0-2 ($SEEDS), each
# with the same ARGS, into DIR/<model>-s<seed>: the same-budget comparison of the trainability study.
pair_over_seeds() {
  local dir=$1 seed model; shift
  for seed in ${SEEDS:-0 1 2}; do
    for model in mail_rn18 resnet18_pair; do
      train_once "$dir/$model-s$seed" --model $model --seed $seed "$@"
    done
  done
}
