"""The agent archive is kept in the user's cache under its sources' hash: same bytes, built once."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import agentkit.archive as archive_module
from agentkit.archive import _zip, build_archive, package_files


@pytest.fixture
def cache_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    saved = archive_module._CACHE
    archive_module._CACHE = None
    try:
        yield tmp_path / "fleetscan"
    finally:
        archive_module._CACHE = saved


def test_the_cached_archive_is_the_built_one_and_private(cache_home: Path) -> None:
    fresh = _zip(package_files())
    assert fresh == _zip(package_files())  # deterministic
    data, digest = build_archive()
    assert data == fresh and digest == hashlib.sha256(fresh).hexdigest()
    (cached,) = cache_home.glob("archive-*.pyz")
    assert cached.read_bytes() == fresh
    assert cached.stat().st_mode & 0o077 == 0 and cache_home.stat().st_mode & 0o077 == 0
    archive_module._CACHE = None
    assert build_archive() == (data, digest)  # read back


def test_a_cached_archive_anyone_else_could_write_is_never_used(cache_home: Path) -> None:
    build_archive()
    (cached,) = cache_home.glob("archive-*.pyz")
    cached.write_bytes(b"#!/usr/bin/env python3\nnot the agent")
    os.chmod(cached, 0o666)
    archive_module._CACHE = None
    data, _ = build_archive()
    assert data == _zip(package_files())
