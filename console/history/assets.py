"""The asset view: the latest known state of every host across runs.

For each host and each kind of record (open ports, services, certificates, baseline checks, web answers,
liveness) the newest ended run that reported that kind for that host is the truth: a later scan that
found port 80 closed replaces the earlier one that found it open, while a host no later run looked at
keeps what was last seen of it. Runs are read newest first and streamed, so memory holds the assets,
never a run.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urlsplit

from console.status import RUN_TERMINAL, RunState
from console.store.base import Store

ASSET_TYPES = ("host_up", "port_open", "service", "http", "tls_cert", "baseline")
#: how many of the newest ended runs are read
MAX_RUNS = 1000


def _host(rtype: str, target: str, data: dict[str, Any]) -> str:
    if rtype == "http":
        return urlsplit(str(data.get("url") or "")).hostname or target
    if rtype == "baseline":
        return target or str(data.get("host") or "")
    return str(data.get("host") or target)


def days_left(not_after: str, now: float) -> int | None:
    """Whole days until an ISO ``not_after`` (negative: expired); None when it cannot be read."""
    try:
        end = datetime.fromisoformat(not_after.replace("Z", "+00:00"))
    except ValueError:
        return None
    if end.tzinfo is None:
        end = end.replace(tzinfo=timezone.utc)
    return int((end.timestamp() - now) // 86400)


def _empty(host: str) -> dict[str, Any]:
    return {"host": host, "up": None, "ports": [], "services": [], "http": [], "certificates": [],
            "failing": [], "seen": None, "runs": []}


def collect(store: Store, now: float | None = None, max_runs: int = MAX_RUNS) -> list[dict[str, Any]]:
    """Every host's latest known state, sorted by host."""
    now = time.time() if now is None else now
    owner: dict[tuple[str, str], str] = {}
    assets: dict[str, dict[str, Any]] = {}
    for run in store.runs.newest(max_runs, states=RUN_TERMINAL):
        looked_for = _kinds_looked_for(store, run.id) if run.state is RunState.COMPLETED else ()
        hosts_here: set[str] = set()
        for rec in store.results.records(run.id):
            rtype = rec["type"]
            if rtype not in ASSET_TYPES:
                continue
            data = rec["data"] if isinstance(rec["data"], dict) else {}
            host = _host(rtype, rec["target"] or "", data)
            if not host:
                continue
            if host not in hosts_here:
                hosts_here.add(host)
                for kind in looked_for:  # it looked: finding nothing of a kind is news (port 80 closed)
                    owner.setdefault((host, kind), run.id)
            slot = (host, rtype)
            if owner.setdefault(slot, run.id) != run.id:
                continue  # a newer run already said what this host's records of this kind are
            asset = assets.setdefault(host, _empty(host))
            if run.id not in asset["runs"]:
                asset["runs"].append(run.id)
                seen = run.ended or run.created
                asset["seen"] = max(asset["seen"] or 0.0, seen or 0.0) or None
            _add(asset, rtype, data, now)
    for asset in assets.values():
        asset["ports"].sort(key=lambda p: (p["proto"], p["port"]))
        for name in ("services", "certificates"):
            asset[name].sort(key=lambda s: s["port"])
        asset["http"].sort(key=lambda h: h["url"])
        asset["failing"].sort(key=lambda f: f["rule"])
    return [assets[h] for h in sorted(assets)]


def _kinds_looked_for(store: Store, run_id: str) -> tuple[str, ...]:
    """The record kinds a run's stages produce (their ``output``): a completed run that reported a host
    at all and had a stage for port_open says which of its ports are open, even when none is; without
    this a host whose every port closed kept the old ones for ever."""
    stages = store.runs.definition(run_id).get("stages") or []
    kinds = {k for st in stages if isinstance(st, dict) for k in (st.get("output") or []) if k in ASSET_TYPES}
    return tuple(sorted(kinds))


def _add(asset: dict[str, Any], rtype: str, data: dict[str, Any], now: float) -> None:
    if rtype == "host_up":
        asset["up"] = True
    elif rtype == "port_open":
        asset["ports"].append({"port": data.get("port"), "proto": data.get("proto") or "tcp"})
    elif rtype == "service":
        asset["services"].append({k: data.get(k) for k in ("port", "name", "product", "version", "banner", "tls")})
    elif rtype == "http":
        asset["http"].append({k: data.get(k) for k in ("url", "status", "title", "server")})
    elif rtype == "tls_cert":
        cert = {k: data.get(k) for k in ("port", "subject", "issuer", "not_after")}
        cert["days_left"] = days_left(str(data.get("not_after") or ""), now)
        asset["certificates"].append(cert)
    elif rtype == "baseline" and data.get("status") in ("fail", "error"):
        asset["failing"].append({k: data.get(k) for k in ("rule", "title", "security", "status")})


def lines(assets: Iterable[dict[str, Any]]) -> list[str]:
    """The asset view for people: one block per host."""
    out: list[str] = []
    for a in assets:
        seen = datetime.fromtimestamp(a["seen"]).strftime("%Y-%m-%d %H:%M") if a["seen"] else "-"
        out.append(f"{a['host']}  (last seen {seen}; runs {', '.join(a['runs'])})")
        if a["ports"]:
            out.append("  ports: " + ", ".join(f"{p['port']}/{p['proto']}" for p in a["ports"]))
        for s in a["services"]:
            what = " ".join(str(s[k]) for k in ("name", "product", "version") if s.get(k)) or repr(s.get("banner") or "")
            out.append(f"  service {s['port']}: {what}")
        for h in a["http"]:
            out.append(f"  http {h['url']}: {h['status']} {h.get('title') or ''}".rstrip())
        for c in a["certificates"]:
            left = "?" if c["days_left"] is None else f"{c['days_left']} day(s)"
            out.append(f"  certificate {c['port']}: {c.get('subject') or ''} expires {c.get('not_after')} ({left})")
        for f in a["failing"]:
            out.append(f"  baseline {f['status']}: {f['rule']} {f.get('title') or ''}".rstrip())
    return out
