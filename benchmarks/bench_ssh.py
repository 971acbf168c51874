"""The SSH path against real OpenSSH sshd boxes on 127.0.0.2.. (tests/fixtures/sshd.py).

Rows: bootstrap with the archive cached (p50 of 20 connects) and with a push, split into
the SSH login and the agent's own start (a LocalLink, side by side); noop tasks/s over two
SSH boxes next to two local agents; the master's CPU time per box when 50 links connect
and bootstrap at once.

    python -m benchmarks.bench_ssh
"""

from __future__ import annotations

import asyncio
import os
import shutil
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from agentkit import wire
from agentkit.archive import build_archive
from console.fleet.inventory import BoxSpec, load_inventory
from console.fleet.links import AgentLink, LocalLink
from console.fleet.ssh import link as ssh
from tests.fixtures.sshd import SshdFleet, start_fleet

COMMAND = "python -m benchmarks.bench_ssh"
#: each round: one connect that pushes, two that find the archive cached (20 in all)
ROUNDS = 10
NOOP_TASKS = 3000
IN_FLIGHT_PER_LINK = 16
FLEET_LINKS = 50
FLEET_ADDRESSES = ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5", "127.0.0.6")


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.1f} ms"


async def _bootstrap_times(
    make: Callable[[], AgentLink], archive: tuple[bytes, str], count: int, before: Callable[[], None]
) -> list[float]:
    times = []
    for _ in range(count):
        before()
        link = make()
        await link.start(*archive)
        times.append(link.bootstrap_s)
        await link.close()
    return times


async def _login_times(spec: BoxSpec, count: int) -> list[float]:
    times = []
    for _ in range(count):
        started = time.perf_counter()
        conn = await ssh.connect_box(spec)
        times.append(time.perf_counter() - started)
        conn.close()
        await conn.wait_closed()
    return times


async def _box_python(spec: BoxSpec) -> str:
    """The path `python3` resolves to in the box's SSH sessions (what stage-0 runs there)."""
    conn = await ssh.connect_box(spec)
    try:
        result = await conn.run("command -v python3", check=True)
    finally:
        conn.close()
        await conn.wait_closed()
    stdout = result.stdout
    path = (stdout.decode() if isinstance(stdout, bytes) else str(stdout or "")).strip()
    return path or shutil.which("python3") or "python3"


async def _noop_rate(links: list[AgentLink], archive: tuple[bytes, str], total: int) -> tuple[float, float]:
    """(tasks/s, master CPU s per task) with ``IN_FLIGHT_PER_LINK`` noop tasks in flight per link."""
    await asyncio.gather(*(link.start(*archive) for link in links))
    per_link = total // len(links)

    async def drive(link: AgentLink, prefix: int) -> None:
        sent = done = 0
        window = min(IN_FLIGHT_PER_LINK, per_link)
        await link.send_many([_noop(prefix, n) for n in range(window)])
        sent = window
        while done < per_link:
            message = await link.recv()
            if message is None:
                raise RuntimeError(f"{link.name} closed during the benchmark")
            if isinstance(message, wire.Done):
                done += 1
                if sent < per_link:
                    await link.send(_noop(prefix, sent))
                    sent += 1

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(drive(link, i) for i, link in enumerate(links)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await asyncio.gather(*(link.close() for link in links))
    done = per_link * len(links)
    return done / elapsed, cpu / done


def _noop(prefix: int, n: int) -> wire.Task:
    return wire.Task(op="task", id=f"{prefix}{n:07d}.1", tool="noop", params={}, targets=["127.0.0.1"])


async def _fleet_cpu(specs: list[BoxSpec], archive: tuple[bytes, str]) -> tuple[float, float, float, int]:
    """(master CPU s per link, of it in the kernel, wall s, links up) for FLEET_LINKS links at once.

    CPU is the process time (user + system, what time.process_time sums), split to show the kernel.

    On loopback the kernel's TCP work for both ends is partly charged to the sender, so the
    system share overstates what a real network costs the master.
    """
    links = [
        ssh.SshLink(specs[i % len(specs)].model_copy(update={"name": f"b{i}"})) for i in range(FLEET_LINKS)
    ]
    before, wall0 = os.times(), time.perf_counter()
    results = await asyncio.gather(*(link.start(*archive) for link in links), return_exceptions=True)
    after, wall = os.times(), time.perf_counter() - wall0
    await asyncio.gather(*(link.close() for link in links), return_exceptions=True)
    up = sum(1 for r in results if not isinstance(r, BaseException))
    user, system = after.user - before.user, after.system - before.system
    return (user + system) / FLEET_LINKS, system / FLEET_LINKS, wall, up


async def _measure(fleet: SshdFleet, tmp: Path) -> list[dict[str, str]]:
    os.environ["FLEETSCAN_KNOWN_HOSTS"] = str(fleet.known_hosts)
    specs = load_inventory(fleet.write_inventory(tmp / "agents.yaml", slots=IN_FLIGHT_PER_LINK))
    archive = build_archive()
    box = fleet.boxes[0]

    def clear_cache() -> None:
        shutil.rmtree(box.cache_dir, ignore_errors=True)

    # the same interpreter the boxes run (their `python3`), so the difference is the SSH part:
    # asked of the box itself, since the master's PATH may resolve `python3` elsewhere (e.g. a
    # pyenv shim, a bash script that alone costs ~60 ms per start)
    box_python = await _box_python(specs[0])
    pushed: list[float] = []
    cached: list[float] = []
    logins: list[float] = []
    local: list[float] = []
    # interleaved rounds, so a load change on the (shared) machine hits every figure alike
    for _ in range(ROUNDS):
        pushed += await _bootstrap_times(lambda: ssh.SshLink(specs[0]), archive, 1, clear_cache)
        cached += await _bootstrap_times(lambda: ssh.SshLink(specs[0]), archive, 2, lambda: None)
        logins += await _login_times(specs[0], 2)
        local += await _bootstrap_times(
            lambda: LocalLink("local", python=box_python), archive, 2, lambda: None
        )

    ssh_rate, ssh_cpu = await _noop_rate([ssh.SshLink(s) for s in specs[:2]], archive, NOOP_TASKS)
    local_rate, local_cpu = await _noop_rate([LocalLink("l1"), LocalLink("l2")], archive, NOOP_TASKS)

    for spec in specs:  # the 50 links bootstrap from each box's cache, as in a daily run
        warm = ssh.SshLink(spec)
        await warm.start(*archive)
        await warm.close()
    cpu_per_box, kernel_per_box, wall, up = await _fleet_cpu(specs, archive)

    p50 = statistics.median
    return [
        _row(f"SSH bootstrap, archive cached (p50 of {len(cached)})", _ms(p50(cached)), "<= 100 ms"),
        _row("  of which SSH connect + login (p50)", _ms(p50(logins)), "-"),
        _row("  agent start to hello, local pipe (p50, same stage-0 and python3)", _ms(p50(local)), "-"),
        _row(f"SSH bootstrap, first push (p50 of {len(pushed)})", _ms(p50(pushed)), "<= 150 ms"),
        _row(
            f"noop tasks/s over SSH, 2 boxes ({IN_FLIGHT_PER_LINK} in flight each)", f"{ssh_rate:.0f}/s", "-"
        ),
        _row("noop tasks/s, 2 local agents (same load)", f"{local_rate:.0f}/s", "-"),
        _row(
            "  master CPU per noop task: SSH / local", f"{ssh_cpu * 1e6:.0f} / {local_cpu * 1e6:.0f} µs", "-"
        ),
        _row(
            f"master CPU per box, {FLEET_LINKS} SSH links connect + bootstrap "
            f"({up}/{FLEET_LINKS} up, {len(fleet.boxes)} sshd, {wall:.1f} s wall)",
            f"{_ms(cpu_per_box)} ({_ms(kernel_per_box)} of it in the kernel)",
            "<= 5 ms",
        ),
    ]


def _row(figure: str, value: str, goal: str) -> dict[str, str]:
    return {"figure": figure, "value": value, "goal": goal, "command": COMMAND}


def run() -> list[dict[str, str]]:
    fleet = start_fleet(FLEET_ADDRESSES)
    try:
        return asyncio.run(_measure(fleet, fleet.root))
    finally:
        fleet.close()


if __name__ == "__main__":
    from benchmarks.run import table

    print(table(run()))
