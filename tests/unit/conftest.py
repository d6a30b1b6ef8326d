"""Fixtures for the shell commands' tests."""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest

from moderation.cli import main


@pytest.fixture
def cli(tmp_path, monkeypatch, capsys) -> Callable[..., tuple[int, list[dict], str]]:
    """Run `moderation ARGS...` on a fresh embedded SQLite database; returns the exit
    code, the JSON objects printed on standard output, and standard error."""
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{tmp_path}/cli.db")

    def run(*args: str) -> tuple[int, list[dict], str]:
        code = main(list(args))
        out, err = capsys.readouterr()
        rows = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
        return code, rows, err

    return run
