"""service vs nmap -sV: does our ``service`` name what nmap names, on real servers? (goal >= 90%)

The servers are the test suite's (tests/fixtures/daemons.py: nginx HTTP, nginx HTTPS on
443 and on a non-standard port, openssl s_server limited to TLS 1.0 with a legacy
cipher, exim4 with STARTTLS, redis-server), each on its own 127.77.0.x address. For
every port, our ``service`` record (through a real agent subprocess) and nmap's
``-sV`` verdict (``nmap -sT -sV -Pn -n -p PORT ADDRESS -oX -``) are compared on the
service name and on TLS (nmap's ``tunnel="ssl"``); nmap's own aliases (``https``,
``ms-wbt-server``, ``microsoft-ds``) are mapped to our names first. The table printed
is server x record type: what service, tls_cert and http_probe report on each port,
beside nmap's name, with the wall time of both identifications.

    python -m benchmarks.bench_service
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ElementTree
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from tests.fixtures.agent_process import AgentProcess
from tests.fixtures.daemons import (
    LEGACY_IP,
    NGINX_IP,
    REDIS_IP,
    SMTP_IP,
    SSHD_IP,
    Absent,
    start_legacy_tls,
    start_nginx,
    start_redis,
    start_smtp,
    start_sshd,
)

GOAL = 0.90
NMAP_ALIASES = {"https": "http", "ms-wbt-server": "rdp", "microsoft-ds": "smb", "netbios-ssn": "smb",
                "mongod": "mongodb", "ssl": "ssl", "postgres": "postgresql"}  # fmt: skip
COMMAND = "python -m benchmarks.bench_service"


def nmap_names(nmap: str, host: str, ports: list[int]) -> tuple[dict[int, tuple[str, bool]], float]:
    """nmap -sV's (name, tls) per open port of ``host``, and its wall time."""
    started = time.perf_counter()
    out = subprocess.run(
        [nmap, "-sT", "-sV", "-Pn", "-n", "-p", ",".join(map(str, ports)), host, "-oX", "-"],
        capture_output=True, check=True, timeout=600,
    ).stdout  # fmt: skip
    elapsed = time.perf_counter() - started
    names: dict[int, tuple[str, bool]] = {}
    for port in ElementTree.fromstring(out).iter("port"):
        state, service = port.find("state"), port.find("service")
        if state is None or state.get("state") != "open":
            continue
        name = service.get("name", "unknown") if service is not None else "unknown"
        tls = service is not None and service.get("tunnel") == "ssl"
        if tls and name == "unknown":
            name = "ssl"
        names[int(port.get("portid") or 0)] = (NMAP_ALIASES.get(name, name), tls)
    return names, elapsed


def agent_records(agent: AgentProcess, tool: str, targets: list[str], params: dict[str, Any]) -> dict[str, dict[str, Any]]:
    done, records = agent.run_task(f"{tool}-{time.monotonic_ns()}", tool, targets, params)
    if not done.get("ok"):
        raise RuntimeError(f"{tool}: {done.get('error')}")
    return {record["target"]: record["data"] for record in records}


@contextlib.contextmanager
def servers(folder: Path) -> Iterator[tuple[list[tuple[str, str]], list[str]]]:
    """Start every server that is installed: ([(label, host:port)], [what is absent])."""
    targets: list[tuple[str, str]] = []
    absent: list[str] = []
    with contextlib.ExitStack() as stack:
        for label, starter in (("nginx", start_nginx), ("openssl s_server", start_legacy_tls),
                               ("exim4", start_smtp), ("redis-server", start_redis),
                               ("sshd", start_sshd)):  # fmt: skip
            sub = folder / label.replace(" ", "-")
            sub.mkdir()
            try:
                server = stack.enter_context(starter(sub))
            except Absent as err:
                absent.append(f"{label} ({err})")
                continue
            if label == "nginx":
                targets.append(("nginx http", f"{NGINX_IP}:{server.http_port}"))
                targets.append(("nginx https (non-standard port)", f"{NGINX_IP}:{server.tls_port}"))
                if server.https_443:
                    targets.append(("nginx https :443", f"{NGINX_IP}:443"))
            elif label == "openssl s_server":
                targets.append(("s_server TLS 1.0 " + "AES128-SHA", f"{LEGACY_IP}:{server.port}"))
            elif label == "exim4":
                targets.append(("exim4 SMTP+STARTTLS", f"{SMTP_IP}:{server.port}"))
            elif label == "sshd":
                targets.append(("OpenSSH sshd", f"{SSHD_IP}:{server.port}"))
            else:
                targets.append(("redis-server", f"{REDIS_IP}:{server.port}"))
        yield targets, absent


def table(rows: list[list[str]]) -> str:
    head = ["server", "service (ours)", "nmap -sV", "agree", "tls_cert", "http"]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    out += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows]
    return "\n".join(out)


def run() -> list[dict[str, str]]:
    nmap = shutil.which("nmap")
    if nmap is None:
        return [{"figure": "service name agreement with nmap -sV", "value": "nmap not installed",
                 "goal": f">= {GOAL:.0%}", "command": COMMAND}]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="fleetscan-bench-service-") as folder, servers(Path(folder)) as (
        targets,
        absent,
    ):
        agent = AgentProcess.from_source()
        try:
            agent.read()
            started = time.perf_counter()
            ours = agent_records(agent, "service", [t for _, t in targets], {"timeout": 3.0})
            ours_time = time.perf_counter() - started
            certs = agent_records(agent, "tls_cert", [t for _, t in targets], {"timeout": 3.0})
            smtp = [t for label, t in targets if label.startswith("exim4")]
            if smtp:  # a non-standard SMTP port: starttls named, as an operator would
                certs.update(agent_records(agent, "tls_cert", smtp, {"timeout": 3.0, "starttls": "smtp"}))
            pages = agent_records(agent, "http_probe", [t for _, t in targets], {"timeout": 3.0})
        finally:
            agent.stop()
        theirs: dict[str, tuple[str, bool]] = {}
        nmap_time = 0.0
        by_host: dict[str, list[int]] = {}
        for _, target in targets:
            host, port = target.rsplit(":", 1)
            by_host.setdefault(host, []).append(int(port))
        for host, ports in by_host.items():
            names, elapsed = nmap_names(nmap, host, ports)
            nmap_time += elapsed
            for port, verdict in names.items():
                theirs[f"{host}:{port}"] = verdict
    rows: list[list[str]] = []
    agreed = 0
    for label, target in targets:
        mine = ours.get(target)
        mine_text = f"{mine['name']}{' (tls)' if mine['tls'] else ''} {mine['product']} {mine['version']}".strip() if mine else "-"
        nmap_verdict = theirs.get(target)
        nmap_text = f"{nmap_verdict[0]}{' (tls)' if nmap_verdict[1] else ''}" if nmap_verdict else "-"
        agree = bool(mine and nmap_verdict and (mine["name"], mine["tls"]) == nmap_verdict)
        agreed += agree
        cert = certs.get(target)
        cert_text = f"{cert['protocol']} {cert['subject']}{' via STARTTLS ' + cert['starttls'] if cert.get('starttls') else ''}" if cert else "-"
        page = pages.get(target)
        http_text = f"{page['status']} {page['title']!r}" if page else "-"
        rows.append([label, mine_text, nmap_text, "yes" if agree else "NO", cert_text, http_text])
    print(table(rows), flush=True)
    if absent:
        print("absent: " + "; ".join(absent), file=sys.stderr)
    share = agreed / len(targets) if targets else 0.0
    return [
        {"figure": f"service name agreement with nmap -sV ({len(targets)} real servers)",
         "value": f"{share:.0%} ({agreed}/{len(targets)})", "goal": f">= {GOAL:.0%}", "command": COMMAND},
        {"figure": "identification wall time: service vs nmap -sV (same ports)",
         "value": f"{ours_time:.2f} s vs {nmap_time:.2f} s", "goal": "", "command": COMMAND},
    ]  # fmt: skip


if __name__ == "__main__":
    for row in run():
        print(f"{row['figure']}: {row['value']} (goal {row['goal']})")
