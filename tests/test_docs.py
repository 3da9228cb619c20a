"""README's code map points at files and names that exist."""

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def code_map_rows():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Code map", 1)[1].split("\n## ", 1)[0]
    return [line.split("|")[1:-1] for line in section.splitlines() if line.startswith("| ") and "`" in line]


def test_every_file_and_name_in_the_code_map_exists():
    rows = code_map_rows()
    assert len(rows) >= 15
    for paper, _, code in rows:
        files, names = [], []
        for token in re.findall(r"`([^`]+)`", code):
            if token.endswith(".py") or "/" in token:
                path = ROOT / token if token.startswith("mail_tf/") else ROOT / "mail_tf" / token
                assert path.is_file(), (paper, token)
                files.append(path.read_text())
            elif token.isidentifier():
                names.append(token)
        assert files, paper
        for name in names:       # a function, class or argument of one of the row's files
            assert any(re.search(rf"\b(def|class) {name}\b|\b{name}\b\s*[=:]", f) for f in files), (paper, name)
