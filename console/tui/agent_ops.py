"""What the agents screen does to boxes: list them, check one, trust a host key. No Textual.

Everything goes through the same functions as ``fleetscan agents``: the inventory
parser, ``console.fleet.ssh.link.check`` (connect, bootstrap, ping), ``console.fleet.ssh.link.fetch_host_key``
and ``console.fleet.ssh.hostkeys.record_host_key``. Trusting is two steps on purpose: first the
fingerprint is fetched and shown, and only the operator's yes records it.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any

from console.errors import FleetscanError


@dataclass(frozen=True)
class BoxEntry:
    """One box of the agents source, as the screen lists it."""

    name: str
    address: str
    kind: str  # "ssh" or "local"
    host_key: str  # "trusted", "unknown", "see ssh config", or "-" (local: no SSH)
    spec: Any = field(compare=False, default=None)


@dataclass(frozen=True)
class CheckOutcome:
    name: str
    ok: bool
    summary: str


@dataclass(frozen=True)
class OfferedKey:
    """A key a box presented, not trusted yet."""

    box: str
    host: str
    port: int
    fingerprint: str
    known: tuple[str, ...]
    key: Any = field(compare=False, default=None)


def list_entries(agents_source: str) -> list[BoxEntry]:
    """The boxes of the agents source with whether their host key is trusted (no network)."""
    from console.fleet.inventory import load_inventory, local_agent_names, parse_agents_source
    from console.fleet.ssh import link as ssh

    kind, value = parse_agents_source(agents_source)
    if kind == "local":
        return [BoxEntry(name, "localhost", "local", "-") for name in local_agent_names(int(value))]
    specs = list(load_inventory(value))
    rows = {row["name"]: row for row in ssh.list_boxes(specs)}
    return [
        BoxEntry(spec.name, str(rows.get(spec.name, {}).get("address", "")), "ssh",
                 str(rows.get(spec.name, {}).get("host_key", "unknown")), spec)
        for spec in specs
    ]


def _report_summary(report: Any) -> str:
    if not report.ok:
        return str(report.error)
    parts = [f"python {report.python}" if report.python else "", f"host {report.hostname}" if report.hostname else ""]
    if report.latency_ms is not None:
        parts.append(f"ping {report.latency_ms:g} ms")
    if report.archive:
        parts.append(f"archive {report.archive}")
    programs = getattr(report, "programs", {}) or {}
    if programs:
        parts.append("programs: " + ", ".join(sorted(programs)))
    return "ok · " + " · ".join(p for p in parts if p)


async def check_entry(entry: BoxEntry) -> CheckOutcome:
    """Connect (or spawn), bootstrap and ping one box; failures become the outcome's message."""
    from console.fleet.ssh import link as ssh

    if entry.kind == "local":
        from agentkit.archive import build_archive
        from console.fleet.links import LocalLink

        archive, sha256 = build_archive()
        link = LocalLink(entry.name)
        try:
            hello = await link.start(archive, sha256)
            rtt = await ssh.ping(link)
        except FleetscanError as err:
            return CheckOutcome(entry.name, False, str(err))
        finally:
            with contextlib.suppress(Exception):
                await link.close()
        return CheckOutcome(entry.name, True, f"ok · python {hello.python} · ping {rtt * 1000:.2f} ms")
    reports = await ssh.check([entry.spec])
    report = reports[0]
    return CheckOutcome(entry.name, bool(report.ok), _report_summary(report))


async def offered_key(entry: BoxEntry) -> OfferedKey:
    """Step one of trusting: what key does the box present, and what did we trust before?"""
    from console.fleet.ssh import hostkeys
    from console.fleet.ssh import link as ssh

    if entry.kind == "local":
        raise FleetscanError(f"{entry.name}: a local agent has no SSH host key")
    key = await ssh.fetch_host_key(entry.spec)
    host, port = await ssh.resolve_endpoint(entry.spec)
    known = tuple(hostkeys.trusted_fingerprints(host, port))
    return OfferedKey(entry.name, host, port, hostkeys.fingerprint(key), known, key)


def record_trust(offer: OfferedKey) -> str:
    """Step two, after the operator said yes: record the key; returns where."""
    from console.fleet.ssh import hostkeys

    record = hostkeys.record_host_key(offer.host, offer.port, offer.key)
    return f"{record.entry} {record.fingerprint} recorded in {record.path}"
