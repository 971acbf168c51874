"""Suite-wide isolation: no test ever touches the operator's real data dir or DB."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

# Before anything imports platformdirs-based defaults: a private data/config/cache home for the whole run.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="fleetscan-tests-"))
for _var in ("XDG_DATA_HOME", "XDG_CONFIG_HOME", "XDG_STATE_HOME"):
    os.environ[_var] = str(_SESSION_HOME / _var.lower())
os.environ.setdefault("FLEETSCAN_KNOWN_HOSTS", str(_SESSION_HOME / "known_hosts"))

pytest_plugins: list[str] = []
for _plugin in ("tests.fixtures.servers", "tests.fixtures.sshd", "tests.fixtures.postgres"):
    if (Path(__file__).parent / "fixtures" / (_plugin.rsplit(".", 1)[1] + ".py")).exists():
        pytest_plugins.append(_plugin)


@pytest.fixture(autouse=True)
def _private_db(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own default DB path (FLEETSCAN_DB), so a forgotten --db never leaks."""
    db = tmp_path / "fleetscan.db"
    monkeypatch.setenv("FLEETSCAN_DB", str(db))
    return db
