"""SshLink against real OpenSSH sshd boxes on 127.0.0.2 / 127.0.0.3 (tests/fixtures/sshd.py)."""

from __future__ import annotations

import asyncio
import socket
import time
from pathlib import Path
from typing import Any

import asyncssh
import pytest

from agentkit import wire
from agentkit.archive import build_archive
from console.errors import HostKeyError, TransportError, TransportTimeout
from console.fleet.inventory import BoxSpec, load_inventory
from console.fleet.ssh import link as ssh
from tests.fixtures.sshd import SshdBox, SshdFleet, current_user, free_port, read_only_dir

pytestmark = pytest.mark.ssh

POLL_DEADLINE = 30.0


def box_specs(fleet: SshdFleet, tmp_path: Path) -> list[BoxSpec]:
    """The fleet's boxes as the user would write them: an inventory file, loaded for real."""
    return load_inventory(fleet.write_inventory(tmp_path / "agents.yaml"))


def spec_of(fleet: SshdFleet, tmp_path: Path, name: str = "box1", **fields: Any) -> BoxSpec:
    """Box ``name`` from the inventory, with ``fields`` changed (e.g. another python or port)."""
    spec = next(spec for spec in box_specs(fleet, tmp_path) if spec.name == name)
    return spec.model_copy(update=fields)


def host_key_fingerprint(box: SshdBox) -> str:
    return asyncssh.read_public_key(str(box.host_key.with_suffix(".pub"))).get_fingerprint("sha256")


async def run_task(
    link: ssh.SshLink, task: wire.Task, deadline: float = POLL_DEADLINE
) -> tuple[list, wire.Done]:
    """Send one task and collect its records until its done."""
    await link.send(task)
    records: list[wire.Record] = []

    async def collect() -> wire.Done:
        while True:
            message = await link.recv()
            assert message is not None, "agent channel closed before done"
            if isinstance(message, wire.Results) and message.id == task.id:
                records.extend(message.records)
            elif isinstance(message, wire.Done) and message.id == task.id:
                return message

    done = await asyncio.wait_for(collect(), deadline)
    return records, done


def noop(task_id: str, **params: Any) -> wire.Task:
    return wire.Task(op="task", id=task_id, tool="noop", params=params, targets=["127.0.0.1"])


async def wait_sessions(box: SshdBox, expected: tuple[int, int]) -> tuple[int, int]:
    """Poll the box's sshd process tree until it shows ``expected`` (or the deadline passes)."""
    deadline = time.monotonic() + POLL_DEADLINE
    seen = box.sessions()
    while seen != expected and time.monotonic() < deadline:
        await asyncio.sleep(0.1)
        seen = box.sessions()
    return seen


@pytest.fixture
def archive() -> tuple[bytes, str]:
    return build_archive()


async def test_bootstrap_runs_a_scan_task_and_returns_records(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path, archive: tuple[bytes, str]
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    link = ssh.SshLink(spec_of(sshd_boxes, tmp_path))
    try:
        hello = await link.start(*archive)
        assert hello.hash == archive[1]
        assert "tcp_connect" in hello.tools
        task = wire.Task(
            op="task",
            id="7.1",
            tool="tcp_connect",
            params={"ports": [port], "timeout": 2.0},
            targets=["127.0.0.1"],
        )
        records, done = await run_task(link, task)
    finally:
        await link.close()
        listener.close()
    assert done.ok, done.error
    assert [(r.type, r.data["port"]) for r in records] == [("port_open", port)]


async def test_first_connect_pushes_the_archive_and_the_next_uses_the_cache(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path, archive: tuple[bytes, str]
) -> None:
    box = sshd_boxes.box("box1")
    cached = box.cache_dir / f"agent-{archive[1]}.pyz"
    assert not cached.exists()
    first = ssh.SshLink(spec_of(sshd_boxes, tmp_path))
    await first.start(*archive)
    await first.close()
    assert first.pushed
    assert cached.read_bytes() == archive[0]

    second = ssh.SshLink(spec_of(sshd_boxes, tmp_path))
    try:
        await second.start(*archive)
        records, done = await run_task(second, noop("1.1", records=2))
    finally:
        await second.close()
    assert not second.pushed
    assert done.ok and len(records) == 2


async def test_a_read_only_home_still_bootstraps_and_runs(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path, archive: tuple[bytes, str]
) -> None:
    box = sshd_boxes.box("box2")
    with read_only_dir(box.home):
        with pytest.raises(OSError):
            (box.home / "probe").write_text("x")  # really read-only, even for root
        link = ssh.SshLink(spec_of(sshd_boxes, tmp_path, "box2"))
        try:
            await link.start(*archive)
            records, done = await run_task(link, noop("2.1", records=3))
        finally:
            await link.close()
    assert link.pushed
    assert done.ok and len(records) == 3
    assert not box.cache_dir.exists()


async def test_an_unknown_host_key_is_refused_naming_box_and_fingerprint(
    sshd_boxes: SshdFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive: tuple[bytes, str]
) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    monkeypatch.setenv("FLEETSCAN_KNOWN_HOSTS", str(empty))
    link = ssh.SshLink(spec_of(sshd_boxes, tmp_path), known_hosts=[empty])
    with pytest.raises(HostKeyError) as caught:
        await link.start(*archive)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("box1: ")
    assert host_key_fingerprint(sshd_boxes.box("box1")) in message
    assert "fleetscan agents --trust box1" in message
    assert link.hello is None
    assert not sshd_boxes.box("box1").cache_dir.exists()  # nothing ran on the box


async def test_a_changed_host_key_is_refused(
    sshd_boxes: SshdFleet, tmp_path: Path, archive: tuple[bytes, str]
) -> None:
    box = sshd_boxes.box("box1")
    impostor = asyncssh.generate_private_key("ssh-ed25519")
    known = tmp_path / "known_hosts"
    known.write_text(f"[{box.address}]:{box.port} {impostor.export_public_key().decode().strip()}\n")
    link = ssh.SshLink(spec_of(sshd_boxes, tmp_path), known_hosts=[known])
    with pytest.raises(HostKeyError) as caught:
        await link.start(*archive)
    message = str(caught.value)
    assert "CHANGED" in message
    assert host_key_fingerprint(box) in message
    assert impostor.get_fingerprint("sha256") in message
    assert "fleetscan agents --trust box1" in message


async def test_trust_records_the_key_and_the_next_connect_works(
    sshd_boxes: SshdFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive: tuple[bytes, str]
) -> None:
    own = tmp_path / "fleetscan_known_hosts"
    monkeypatch.setenv("FLEETSCAN_KNOWN_HOSTS", str(own))
    user_file = tmp_path / "user_known_hosts"  # stands in for ~/.ssh/known_hosts: never written
    settings = ssh.SshSettings(known_hosts=[user_file, own])
    spec = spec_of(sshd_boxes, tmp_path)
    with pytest.raises(HostKeyError):
        await ssh.SshLink(spec, settings=settings).start(*archive)

    record = await ssh.trust(spec, ssh.SshSettings(known_hosts=[user_file, own]))
    box = sshd_boxes.box("box1")
    assert record.fingerprint == host_key_fingerprint(box)
    assert record.entry == f"[{box.address}]:{box.port}"
    assert record.path == own and own.stat().st_mode & 0o777 == 0o600
    assert not user_file.exists()

    link = ssh.SshLink(spec, settings=ssh.SshSettings(known_hosts=[user_file, own]))
    try:
        await link.start(*archive)
    finally:
        await link.close()
    assert link.hello is not None


async def test_trust_replaces_a_changed_key_after_the_operator_confirms(
    sshd_boxes: SshdFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, archive: tuple[bytes, str]
) -> None:
    box = sshd_boxes.box("box2")
    own = tmp_path / "known_hosts"
    old = asyncssh.generate_private_key("ssh-ed25519")
    own.write_text(f"[{box.address}]:{box.port} {old.export_public_key().decode().strip()}\n")
    monkeypatch.setenv("FLEETSCAN_KNOWN_HOSTS", str(own))
    spec = spec_of(sshd_boxes, tmp_path, "box2")
    record = await ssh.trust(spec, ssh.SshSettings(known_hosts=[own]))
    assert record.replaced == (old.get_fingerprint("sha256"),)
    link = ssh.SshLink(spec, known_hosts=[own])
    try:
        await link.start(*archive)
    finally:
        await link.close()
    assert old.export_public_key().decode().split()[1] not in own.read_text()


async def test_one_connection_and_one_channel_carry_many_tasks(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path, archive: tuple[bytes, str]
) -> None:
    box = sshd_boxes.box("box1")
    assert await wait_sessions(box, (0, 0)) == (0, 0)  # earlier tests' links are gone
    link = ssh.SshLink(spec_of(sshd_boxes, tmp_path, slots=4))
    try:
        await link.start(*archive)
        await link.send_many([noop(f"{n}.1", sleep=30) for n in range(4)])
        await ssh.ping(link)  # answered after the agent took the four tasks (it reads in order)
        during = box.sessions()
        await link.send_many([wire.Cancel(op="cancel", id=f"{n}.1") for n in range(4)])
        finished: set[str] = set()
        while len(finished) < 4:
            message = await asyncio.wait_for(link.recv(), POLL_DEADLINE)
            assert message is not None
            if isinstance(message, wire.Done):
                finished.add(message.id)
    finally:
        await link.close()
    assert during == (1, 1)
    assert finished == {f"{n}.1" for n in range(4)}
    assert await wait_sessions(box, (0, 0)) == (0, 0)  # close() leaves nothing behind on the box


async def test_an_unreachable_box_fails_fast_naming_it(
    sshd_boxes: SshdFleet, tmp_path: Path, archive: tuple[bytes, str]
) -> None:
    with socket.socket() as probe:  # a loopback port with nothing listening
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    spec = spec_of(sshd_boxes, tmp_path).model_copy(
        update={"name": "ghost", "host": "127.0.0.1", "port": dead_port}
    )
    link = ssh.SshLink(spec, settings=ssh.SshSettings(connect_timeout=60, login_timeout=60))
    with pytest.raises(TransportError) as caught:
        await link.start(*archive)
    assert not isinstance(caught.value, (HostKeyError, TransportTimeout))  # refused, not waited out
    assert str(caught.value).startswith("ghost: ")
    assert f"127.0.0.1:{dead_port}" in str(caught.value)


async def test_a_missing_python_is_reported_with_what_the_box_said(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path, archive: tuple[bytes, str]
) -> None:
    spec = spec_of(sshd_boxes, tmp_path, python="/nonexistent/python3")
    with pytest.raises(TransportError) as caught:
        await ssh.SshLink(spec).start(*archive)
    assert "box1" in str(caught.value)
    assert "/nonexistent/python3" in str(caught.value)


async def test_a_box_whose_sshd_dies_ends_the_link(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path, archive: tuple[bytes, str]
) -> None:
    box = sshd_boxes.box("box2")
    link = ssh.SshLink(spec_of(sshd_boxes, tmp_path, "box2"))
    try:
        await link.start(*archive)
        await link.send(noop("9.1", sleep=60))
        box.kill()

        ended = ""
        try:
            while await asyncio.wait_for(link.recv(), POLL_DEADLINE) is not None:
                pass
            ended = "eof"
        except TransportError:
            ended = "error"
        assert ended in ("eof", "error")  # the link notices; a wait past the deadline fails the test
    finally:
        link.kill()
        box.start()


async def test_an_ssh_config_alias_is_resolved(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path, archive: tuple[bytes, str]
) -> None:
    box = sshd_boxes.box("box2")
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host scanner-two\n  HostName {box.address}\n  Port {box.port}\n"
        f"  User {current_user()}\n  IdentityFile {sshd_boxes.user_key}\n"
    )
    spec = BoxSpec.model_validate({"name": "aliased", "ssh": "scanner-two"})
    link = ssh.SshLink(spec, settings=ssh.SshSettings(ssh_config=[config]))
    try:
        hello = await link.start(*archive)
    finally:
        await link.close()
    assert hello.hash == archive[1]
    assert link.address == "ssh:scanner-two"


async def test_handshakes_are_bounded_so_maxstartups_never_drops_a_box(
    sshd_boxes: SshdFleet, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A box whose sshd drops every unauthenticated connection past 4 (MaxStartups 4:100:4):
    with the handshake bound at 2, sixteen links connecting at once all get in; unbounded,
    sshd drops some (the control, proving the limit is real). The bound sits below the limit
    with slack, as 8 sits below sshd's default 10: sshd counts a connection as a startup a
    little after the client saw its login succeed."""
    narrow = SshdBox(
        name="narrow",
        address="127.0.0.4",
        port=free_port("127.0.0.4"),
        workdir=tmp_path / "narrow",
        user_pubkey=sshd_boxes.user_key.with_suffix(".pub"),
        max_startups="4:100:4",
    )
    narrow.prepare()
    narrow.start()
    try:
        known = tmp_path / "known_hosts"
        known.write_text(narrow.known_hosts_line())
        spec = spec_of(sshd_boxes, tmp_path).model_copy(update={"host": narrow.address, "port": narrow.port})
        settings = ssh.SshSettings(known_hosts=[known])

        async def connect_all(count: int) -> list[BaseException | None]:
            async def one() -> BaseException | None:
                try:
                    conn = await ssh.connect_box(spec, settings)
                except TransportError as err:
                    return err
                conn.close()
                await conn.wait_closed()
                return None

            return list(await asyncio.gather(*(one() for _ in range(count))))

        monkeypatch.setenv("FLEETSCAN_SSH_HANDSHAKES", "2")
        assert await connect_all(16) == [None] * 16
    finally:
        narrow.kill()

    # unbounded, in a fresh loop (the bound is per event loop and read when first used)
    narrow.start()
    try:
        monkeypatch.setenv("FLEETSCAN_SSH_HANDSHAKES", "100")
        failures = await asyncio.to_thread(lambda: asyncio.run(connect_all(16)))
    finally:
        narrow.kill()
    assert any(isinstance(f, TransportError) for f in failures)


async def test_check_reports_each_box_and_names_the_one_that_failed(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path
) -> None:
    specs = box_specs(sshd_boxes, tmp_path)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        dead = specs[0].model_copy(
            update={"name": "ghost", "host": "127.0.0.1", "port": probe.getsockname()[1]}
        )
    first = await ssh.check([*specs, dead])
    second = await ssh.check(specs)
    assert [r.name for r in first] == ["box1", "box2", "ghost"]
    for report in first[:2]:
        assert report.ok, report.error
        assert report.archive == "pushed"
        assert report.python.startswith("3.")
        assert report.latency_ms is not None and report.latency_ms > 0
        assert report.bootstrap_ms is not None and report.bootstrap_ms > 0
        assert "sh" in report.programs  # hello.programs: what the box has on PATH
    assert [r.archive for r in second] == ["cached", "cached"]
    assert not first[2].ok and first[2].error.startswith("ghost: ")
    assert first[2].as_dict()["ok"] is False


def test_list_boxes_shows_which_host_keys_are_trusted(sshd_boxes: SshdFleet, tmp_path: Path) -> None:
    specs = box_specs(sshd_boxes, tmp_path)
    known = tmp_path / "known_hosts"
    known.write_text(sshd_boxes.box("box1").known_hosts_line())
    rows = ssh.list_boxes(specs, ssh.SshSettings(known_hosts=[known]))
    assert [(r["name"], r["host_key"]) for r in rows] == [("box1", "trusted"), ("box2", "unknown")]


async def test_trust_of_an_alias_records_the_resolved_host_and_port(
    sshd_boxes: SshdFleet, tmp_path: Path, archive: tuple[bytes, str]
) -> None:
    box = sshd_boxes.box("box2")
    config = tmp_path / "ssh_config"
    config.write_text(
        f"Host scanner-two\n  HostName {box.address}\n  Port {box.port}\n"
        f"  User {current_user()}\n  IdentityFile {sshd_boxes.user_key}\n"
    )
    own = tmp_path / "known_hosts"
    settings = ssh.SshSettings(ssh_config=[config], known_hosts=[own])
    spec = BoxSpec.model_validate({"name": "aliased", "ssh": "scanner-two"})
    record = await ssh.trust(spec, settings, path=own)
    assert record.entry == f"[{box.address}]:{box.port}"
    assert record.fingerprint == host_key_fingerprint(box)
    link = ssh.SshLink(spec, settings=settings)
    try:
        await link.start(*archive)
    finally:
        await link.close()
    assert link.hello is not None


async def test_a_box_that_never_speaks_ssh_times_out_naming_it(
    sshd_boxes: SshdFleet, tmp_path: Path, archive: tuple[bytes, str]
) -> None:
    silent = socket.create_server(("127.0.0.1", 0))  # the kernel accepts; nobody ever answers
    try:
        spec = spec_of(sshd_boxes, tmp_path).model_copy(
            update={"name": "mute", "host": "127.0.0.1", "port": silent.getsockname()[1]}
        )
        link = ssh.SshLink(spec, settings=ssh.SshSettings(connect_timeout=1.0, login_timeout=1.0))
        with pytest.raises(TransportTimeout) as caught:
            await link.start(*archive)
    finally:
        silent.close()
    assert isinstance(caught.value, TimeoutError)
    assert str(caught.value).startswith("mute: ")


async def test_a_hung_box_misses_its_pong_and_answers_again_once_it_resumes(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path, archive: tuple[bytes, str]
) -> None:
    box = sshd_boxes.box("box1")
    link = ssh.SshLink(spec_of(sshd_boxes, tmp_path))
    try:
        await link.start(*archive)
        box.freeze()
        try:
            with pytest.raises(TransportTimeout):
                await ssh.ping(link, seq=1, timeout=1.0)
        finally:
            box.thaw()
        # the late pong for seq 1 is skipped; seq 2 proves the same channel works again
        assert await ssh.ping(link, seq=2, timeout=POLL_DEADLINE) > 0
    finally:
        await link.close()


async def test_closing_a_link_to_a_hung_box_does_not_hang(
    sshd_boxes: SshdFleet, ssh_known_hosts: Path, tmp_path: Path, archive: tuple[bytes, str]
) -> None:
    box = sshd_boxes.box("box2")
    link = ssh.SshLink(spec_of(sshd_boxes, tmp_path, "box2"))
    await link.start(*archive)
    box.freeze()
    try:
        await asyncio.wait_for(link.close(grace=0.5), POLL_DEADLINE)  # past the deadline: a hang
    finally:
        box.thaw()
    assert link.conn is not None and link.conn.is_closed()
