"""docs/CLI.md: every entry point's flags, written from the flag definitions themselves.

  python -m experiments.cli_doc            # rewrite docs/CLI.md
  python -m experiments.cli_doc --check    # exit 1 if docs/CLI.md differs from the flags

Each entry point is imported in a process of its own: several define flags of the same name, which
one absl registry refuses.
"""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "CLI.md"
NOT_CLIS = {"__init__", "cli", "cli_doc"}

_DUMP = """
import importlib, json, sys
from absl import flags
module = importlib.import_module(sys.argv[1])
rows, aliases = [], {}
for flag in flags.FLAGS.get_flags_for_module(sys.argv[1]):
    if type(flag).__name__ == "_FlagAlias":
        aliases.setdefault(flag.help.removeprefix("Alias for --").rstrip("."), []).append(flag.name)
    else:
        default = flag.default_as_str if flag.default is not None else ""
        kind = "list" if flag.flag_type().startswith("comma separated list") else flag.flag_type()
        rows.append([flag.name, kind, default.strip("'"), " ".join(flag.help.split())])
print(json.dumps({"doc": (module.__doc__ or "").strip().splitlines()[0], "rows": rows, "aliases": aliases}))
"""


def entry_points():
    return sorted(p.stem for p in (ROOT / "experiments").glob("*.py") if p.stem not in NOT_CLIS)


def describe(name):
    out = subprocess.run([sys.executable, "-c", _DUMP, f"experiments.{name}"], capture_output=True, text=True,
                         cwd=ROOT, check=True)
    return json.loads(out.stdout)


def markdown():
    lines = ["# Command-line entry points", "",
             "Written by `python -m experiments.cli_doc` from the flag definitions (a test checks it is",
             "current). Conventions: snake_case flags; `--run` is a run directory, `--model` a preset name,",
             "`--out` an output path. Old spellings are accepted as aliases (last column).", ""]
    for name in entry_points():
        info = describe(name)
        lines += [f"## `python -m experiments.{name}`", "", info["doc"], "",
                  "| flag | type | default | meaning | also spelled |", "|---|---|---|---|---|"]
        for flag, kind, default, text in info["rows"]:
            aliases = ", ".join(f"`--{a}`" for a in info["aliases"].get(flag, []))
            default = f"`{default}`" if default else ""
            lines.append(f"| `--{flag}` | {kind} | {default} | {text.replace('|', '/')} | {aliases} |")
        lines.append("")
    return "\n".join(lines)


def main(argv):
    text = markdown()
    if "--check" in argv:
        if not DOC.exists() or DOC.read_text() != text:
            sys.exit(f"error: {DOC} is out of date; run python -m experiments.cli_doc")
        return
    DOC.write_text(text)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main(sys.argv[1:])
