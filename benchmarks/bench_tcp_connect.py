"""tcp_connect vs nmap -sT: all 65,535 ports of 127.0.0.1, side by side in one run.

The agent is measured through a real agent subprocess (stage-0 bootstrap,
JSON lines over pipes): wall time from writing the ``task`` line to reading its
``done``, so protocol and batching costs are included. nmap is
``nmap -sT -p- -T4 -n -Pn 127.0.0.1 -oG -``. The benchmark opens a few
listeners of its own first; both scans must find exactly the same open set.
Runs alternate (nmap, agent) ROUNDS times and the medians are compared, since
the machine may be shared.

    python -m benchmarks.bench_tcp_connect
"""

from __future__ import annotations

import json
import shutil
import socket
import statistics
import subprocess
import sys
import time
from typing import Any

from agentkit.bootstrap import start_local_agent

ROUNDS = 3
LISTENERS = 5
NMAP_ARGV = ["nmap", "-sT", "-p-", "-T4", "-n", "-Pn", "127.0.0.1", "-oG", "-"]
AGENT_PARAMS: dict[str, Any] = {"ports": "1-65535", "timeout": 1.0}


def listening_ports() -> set[int]:
    """Ports listening on 127.0.0.1 (or any address) now, from /proc/net/tcp{,6}; empty off Linux."""
    ports: set[int] = set()
    loopback = {
        "0100007F",
        "00000000",
        "00000000000000000000000000000000",
        "00000000000000000000000001000000",
    }
    for name in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(name) as handle:
                next(handle)
                for line in handle:
                    fields = line.split()
                    address, port = fields[1].split(":")
                    if fields[3] == "0A" and address in loopback:
                        ports.add(int(port, 16))
        except OSError:
            continue
    return ports


def nmap_scan(nmap: str) -> tuple[float, set[int]]:
    started = time.perf_counter()
    out = subprocess.run(
        [nmap, *NMAP_ARGV[1:]], capture_output=True, text=True, check=True, timeout=600
    ).stdout
    wall = time.perf_counter() - started
    found: set[int] = set()
    for line in out.splitlines():
        if "Ports:" in line:
            for item in line.split("Ports:", 1)[1].split("\t")[0].split(","):
                fields = item.strip().split("/")
                if len(fields) > 1 and fields[1] == "open":
                    found.add(int(fields[0]))
    return wall, found


def agent_scan(proc: subprocess.Popen[bytes], task_id: str) -> tuple[float, set[int]]:
    assert proc.stdin is not None and proc.stdout is not None
    task = {
        "op": "task",
        "id": task_id,
        "tool": "tcp_connect",
        "targets": ["127.0.0.1"],
        "params": AGENT_PARAMS,
    }
    started = time.perf_counter()
    proc.stdin.write(json.dumps(task).encode() + b"\n")
    proc.stdin.flush()
    found: set[int] = set()
    while True:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the agent exited during the scan")
        message = json.loads(line)
        if message.get("id") != task_id:
            continue
        if message["op"] == "results":
            found.update(record["data"]["port"] for record in message["records"])
        elif message["op"] == "done":
            if not message["ok"]:
                raise RuntimeError(f"tcp_connect failed: {message['error']}")
            return time.perf_counter() - started, found


def run() -> list[dict[str, str]]:
    nmap = shutil.which("nmap")
    command = "python -m benchmarks.bench_tcp_connect"
    if nmap is None:
        return [
            {
                "figure": "tcp_connect vs nmap -sT",
                "value": "skipped: nmap not installed",
                "goal": "",
                "command": command,
            }
        ]
    listeners = []
    for _ in range(LISTENERS):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        listeners.append(sock)
    mine = {sock.getsockname()[1] for sock in listeners}
    proc, _, _ = start_local_agent()
    nmap_walls: list[float] = []
    agent_walls: list[float] = []
    identical = True
    differences: set[int] = set()
    ignored: set[int] = set()
    try:
        for round_number in range(ROUNDS):
            before = listening_ports()
            nmap_wall, nmap_open = nmap_scan(nmap)
            agent_wall, agent_open = agent_scan(proc, f"bench-{round_number}")
            after = listening_ports()
            nmap_walls.append(nmap_wall)
            agent_walls.append(agent_wall)
            # Other processes on a shared machine open and close listeners during a round. A port
            # both scanners must agree on is one listening before AND after the round (and ours);
            # a disagreement on any other port says only that something came or went meanwhile.
            stable = (before & after) | mine
            disagree = nmap_open ^ agent_open
            if disagree & stable or not mine <= agent_open:
                identical = False
                differences |= disagree & stable
            ignored |= disagree - stable
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        proc.wait(10)
        for sock in listeners:
            sock.close()
    nmap_median = statistics.median(nmap_walls)
    agent_median = statistics.median(agent_walls)
    ratio = agent_median / nmap_median
    runs = lambda walls: ", ".join(f"{w:.2f}" for w in walls)  # noqa: E731
    same = "yes" if identical else f"NO (differing ports: {sorted(differences)[:10]})"
    if ignored:
        same += f" (ignored {sorted(ignored)[:5]}: not listening both before and after the round)"
    return [
        {"figure": "nmap -sT -p- 127.0.0.1 wall (median)", "value": f"{nmap_median:.2f} s ({runs(nmap_walls)})",
         "goal": "reference", "command": " ".join(NMAP_ARGV)},
        {"figure": "agent tcp_connect 1-65535 wall (median, via agent subprocess)",
         "value": f"{agent_median:.2f} s ({runs(agent_walls)})", "goal": "<= 1.5x nmap", "command": command},
        {"figure": "agent / nmap ratio", "value": f"{ratio:.2f}x", "goal": "<= 1.5x", "command": command},
        {"figure": "open sets identical (incl. the benchmark's own listeners)", "value": same, "goal": "yes",
         "command": command},
    ]  # fmt: skip


def main() -> int:
    from benchmarks.run import table

    print(table(run()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
