"""Helpers the entry points share for reading flags."""


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
    import sys

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
