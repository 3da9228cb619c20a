"""Helpers the entry points share for reading flags."""

import contextlib
import sys

# The flags most entry points have, each with one name, type and meaning everywhere. An entry point
# picks its default and, where its use is narrower, its own help text (`define_shared`).
SHARED = {
    "run": (str, "Run directory of experiments.train."),
    "models": (list, "Model presets."),
    "dataset": (str, "Named experiment or KIND[:OPTION]=ROOT,... spec."),
    "data_dir": (str, "Folder holding the downloaded datasets (default $MAIL_TF_DATA_DIR or ./data)."),
    "image_size": (int, "Square image size of every modality."),
    "batch_size": (int, "Image pairs per batch."),
    "seed": (int, "Random seed."),
    "out": (str, "Output path."),
    "model": (str, "Model preset."),
    "split": (str, "Split to use.", ("train", "val", "test")),
    "num_samples": (int, "At most this many pairs per task (default: all)."),
    "eps": (float, "l-inf radius per modality, in [0, 1] pixel units."),
    "iters": (int, "Attack iterations."),
    "warmup": (int, "Untimed steps before timing."),
    "steps": (int, "Timed steps per measurement."),
    "repeats": (int, "Timed measurements; the median is reported."),
    "top": (int, "Rows to print."),
    "inter_op_threads": (int, "TensorFlow threads running independent ops at once (0: its choice, one per core)."),
    "intra_op_threads": (int, "TensorFlow threads splitting one op (0: its choice; -1: auto, one on a CPU-only "
                              "machine of at most 4 cores; mail_tf.threads)."),
}
THREADS = {"inter_op_threads": 0, "intra_op_threads": -1}   # the defaults of every entry point that computes


def define_shared(module_name, **flags):
    """Define shared flags for `module_name`: NAME=DEFAULT, or NAME=(DEFAULT, HELP) where the entry
    point says more than SHARED's help. Returns the names."""
    settings = []
    for name, value in flags.items():
        kind, text, *choices = SHARED[name]
        default, text = value if isinstance(value, tuple) else (value, text)
        settings.append((name, kind, default, text, choices[0] if choices else None))
    return define_flags(settings, module_name)


def with_threads(main):
    """`main` run after TensorFlow's CPU thread pools are set from --inter_op_threads and
    --intra_op_threads (`define_shared(__name__, **THREADS)`), before it runs anything."""

    def run(argv):
        from absl import flags

        with refusing():
            check_ranges(flags.FLAGS, {"inter_op_threads": (0, None), "intra_op_threads": (-1, None)})
            from mail_tf.threads import configure

            configure(flags.FLAGS.inter_op_threads, flags.FLAGS.intra_op_threads)
        return main(argv)

    return run


@contextlib.contextmanager
def refusing(*errors):
    """Turn a ValueError (or `errors`) raised inside into the one-line `error: ...` exit every entry
    point gives for bad input."""
    try:
        yield
    except (ValueError, *errors) as e:
        sys.exit(f"error: {e}")


def no_arguments(argv):
    """Exit with one line if anything but --flags was given."""
    if len(argv) > 1:
        sys.exit(f"error: unexpected arguments {argv[1:]}; settings are --flags (see --help)")


def number_list(flag, values, kind, valid, expected):
    """A comma-separated flag (absl's list of strings) as numbers of `kind`, each passing `valid`,
    or a ValueError naming the flag, its value and what was expected."""
    try:
        numbers = [kind(v) for v in values]
    except ValueError:
        numbers = []
    if not numbers or not all(valid(n) for n in numbers):
        raise ValueError(f"{flag}={','.join(values)}: expected a comma-separated list of {expected}")
    return numbers


def check_ranges(flag_values, bounds):
    """Every numeric flag in range before anything loads. bounds: {flag: (low, high)}, None for an
    open end; an unset (None) flag is skipped. ValueError: one line naming the flag and the range."""
    for name, (low, high) in bounds.items():
        value = flag_values[name].value
        if value is None:
            continue
        if (low is not None and value < low) or (high is not None and value > high):
            expected = (f"in [{low}, {high}]" if low is not None and high is not None
                        else f">= {low}" if low is not None else f"<= {high}")
            raise ValueError(f"--{name}={value}: expected {expected}")


def check_presets(flag, names):
    """Every name a model preset, or a ValueError naming the flag and the presets there are."""
    from mail_tf.models import PRESETS

    unknown = [m for m in names if m not in PRESETS]
    if unknown:
        raise ValueError(f"{flag}: unknown {unknown}; choose from {', '.join(sorted(PRESETS))}")


def write_json(path, obj):
    """Write `obj` as indented JSON to `path` (its folder created) and say so."""
    import json
    import os

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
    print(f"wrote {path}")


def define_flags(settings, module_name):
    """One absl flag per (name, type, default, help, choices) -- e.g. `TrainConfig.flag_settings()`,
    so a setting is defined, documented and defaulted in one place -- attributed to `module_name`
    (the entry point's --help and docs/CLI.md list them). Returns the names."""
    from absl import flags

    if module_name == "__main__":      # absl files the main module's flags under its script path
        module_name = sys.argv[0]
    define = {bool: flags.DEFINE_bool, int: flags.DEFINE_integer, float: flags.DEFINE_float,
              list: flags.DEFINE_list, str: flags.DEFINE_string}
    for name, kind, default, text, choices in settings:
        if choices:
            flags.DEFINE_enum(name, default, list(choices), text, module_name=module_name)
        else:
            define[kind](name, default, text, module_name=module_name)
    return tuple(name for name, *_ in settings)
