"""``rosetta --version`` prints the version, and the three places that state it agree."""

from __future__ import annotations

import re
from importlib.metadata import version
from pathlib import Path

import pytest

import rosetta
from rosetta.cli import main


def test_version_flag_prints_the_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"rosetta {version('rosetta-ml')}"


def test_versions_agree():
    text = (Path(__file__).resolve().parents[2] / "pyproject.toml").read_text()
    project = re.search(r'^version = "([^"]+)"$', text, re.M).group(1)   # tomllib is 3.11+
    assert re.fullmatch(r"\d+\.\d+\.\d+\S*", rosetta.__version__)
    assert rosetta.__version__ == project == version("rosetta-ml")
