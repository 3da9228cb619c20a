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
