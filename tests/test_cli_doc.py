"""docs/CLI.md is current, and every entry point follows the flag conventions."""

import subprocess
import sys

from experiments import cli_doc

PRESET_MODEL = {"train", "input_benchmark"}     # where --model names a preset (or "none")


def test_cli_doc_is_current_and_flags_follow_the_conventions():
    proc = subprocess.run([sys.executable, "-m", "experiments.cli_doc", "--check"], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-1000:]
    for name in cli_doc.entry_points():
        info = cli_doc.describe(name)
        flags = {row[0] for row in info["rows"]}
        assert all("-" not in f and f == f.lower() for f in flags), (name, flags)
        # One spelling per meaning: a run directory is --run, an output path --out.
        assert not flags & {"output_dir", "json", "output"}, (name, flags)
        assert ("model" in flags) == (name in PRESET_MODEL), name
