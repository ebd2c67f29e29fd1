"""Print a dependency group of pyproject.toml as requirement lines (for pip)."""

import sys
import tomllib
from pathlib import Path

data = tomllib.loads(Path(__file__).resolve().parent.parent.joinpath("pyproject.toml").read_text())
for requirement in data["dependency-groups"][sys.argv[1]]:
    print(requirement)
