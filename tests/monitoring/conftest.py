"""promtool (Debian package ``prometheus``) for the monitoring tests: skipped
when missing, a failure under CI=true."""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import _unavailable


@pytest.fixture(scope="session")
def promtool() -> str:
    path = os.environ.get("PROMTOOL") or shutil.which("promtool")
    if not path:
        _unavailable(
            "promtool",
            FileNotFoundError("not on PATH (apt-get install prometheus, or set PROMTOOL)"),
        )
    assert path is not None
    return path
