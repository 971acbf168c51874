"""fleetscan's known_hosts: trusted files, [host]:port names, hashed entries, atomic trust records."""

from __future__ import annotations

from pathlib import Path

import asyncssh
import paramiko
import pytest

from console.fleet.ssh import hostkeys


def new_key() -> asyncssh.SSHKey:
    return asyncssh.generate_private_key("ssh-ed25519").convert_to_public()


def line(name: str, key: asyncssh.SSHKey) -> str:
    return f"{name} {key.export_public_key().decode().strip()}\n"


def test_entry_names_follow_openssh() -> None:
    assert hostkeys.host_entry_name("127.0.0.2", 22) == "127.0.0.2"
    assert hostkeys.host_entry_name("127.0.0.2", 2222) == "[127.0.0.2]:2222"


def test_fleetscan_file_honours_the_override_and_defaults_to_the_data_dir(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("FLEETSCAN_KNOWN_HOSTS", str(tmp_path / "kh"))
    assert hostkeys.fleetscan_known_hosts() == tmp_path / "kh"
    monkeypatch.delenv("FLEETSCAN_KNOWN_HOSTS")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert hostkeys.fleetscan_known_hosts() == tmp_path / "data" / "fleetscan" / "known_hosts"
    assert hostkeys.known_hosts_files()[0] == Path("~/.ssh/known_hosts").expanduser()


def test_record_creates_a_private_file_that_then_trusts_the_key(tmp_path: Path) -> None:
    path = tmp_path / "new" / "known_hosts"
    key = new_key()
    record = hostkeys.record_host_key("127.0.0.2", 2222, key, path)
    assert record.entry == "[127.0.0.2]:2222"
    assert record.fingerprint == key.get_fingerprint("sha256")
    assert record.replaced == ()
    assert path.stat().st_mode & 0o777 == 0o600
    assert hostkeys.trusted_fingerprints("127.0.0.2", 2222, files=[path]) == [record.fingerprint]
    # the port is part of the name: the same address on another port is still unknown
    assert hostkeys.trusted_fingerprints("127.0.0.2", 22, files=[path]) == []
    assert hostkeys.trusted_fingerprints("127.0.0.3", 2222, files=[path]) == []


def test_recording_twice_keeps_one_entry_and_a_new_key_replaces_the_old(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    other = new_key()
    path.write_text(line("127.0.0.9", other))
    old, new = new_key(), new_key()
    hostkeys.record_host_key("127.0.0.2", 2222, old, path)
    again = hostkeys.record_host_key("127.0.0.2", 2222, old, path)
    assert again.replaced == ()
    assert path.read_text().count("[127.0.0.2]:2222") == 1
    swapped = hostkeys.record_host_key("127.0.0.2", 2222, new, path)
    assert swapped.replaced == (old.get_fingerprint("sha256"),)
    assert hostkeys.trusted_fingerprints("127.0.0.2", 2222, files=[path]) == [new.get_fingerprint("sha256")]
    # unrelated entries survive the rewrite
    assert hostkeys.trusted_fingerprints("127.0.0.9", 22, files=[path]) == [other.get_fingerprint("sha256")]


def test_hashed_entries_are_matched_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "known_hosts"
    hashed_key = new_key()
    hashed_name = paramiko.HostKeys.hash_host("[127.0.0.4]:2200")
    path.write_text(line(hashed_name, hashed_key))
    assert hostkeys.trusted_fingerprints("127.0.0.4", 2200, files=[path]) == [
        hashed_key.get_fingerprint("sha256")
    ]
    hostkeys.record_host_key("127.0.0.5", 2200, new_key(), path)
    assert hashed_name in path.read_text()
    assert hostkeys.trusted_fingerprints("127.0.0.4", 2200, files=[path]) == [
        hashed_key.get_fingerprint("sha256")
    ]


def test_both_files_are_trusted_and_missing_files_trust_nothing(tmp_path: Path) -> None:
    user, own = tmp_path / "user", tmp_path / "own"
    a, b = new_key(), new_key()
    user.write_text(line("[127.0.0.2]:2222", a))
    own.write_text(line("[127.0.0.3]:2222", b))
    files = [user, own, tmp_path / "missing"]
    assert hostkeys.trusted_fingerprints("127.0.0.2", 2222, files=files) == [a.get_fingerprint("sha256")]
    assert hostkeys.trusted_fingerprints("127.0.0.3", 2222, files=files) == [b.get_fingerprint("sha256")]
    assert hostkeys.trusted_fingerprints("127.0.0.2", 2222, files=[tmp_path / "missing"]) == []
