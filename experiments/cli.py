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
