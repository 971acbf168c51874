"""`fleetscan assets`: the latest known state of every host across runs."""

from __future__ import annotations

import json
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from console.status import RunState
from console.store import open_store
from console.store.base import Store
from console.store.writes import IngestBatch
from console.targets.records import record_key
from tests.fixtures.chaos import fleetscan


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def make_run(store: Store, records: list[tuple[str, dict[str, Any]]], state: RunState = RunState.COMPLETED,
             outputs: tuple[str, ...] = ()) -> str:
    stages = [{"id": "s", "tool": "noop", "output": list(outputs)}]
    run_id = store.runs.create("fleet", {"stages": stages}, "127.0.0.0/29", None, "local")
    rows = [
        (run_id, "s", rtype, record_key(rtype, data), str(data.get("host") or "127.0.0.1"), "box1", 1,
         "2026-12-03T00:00:00Z", json.dumps(data))
        for rtype, data in records
    ]
    store.queue.apply_batch(IngestBatch(records=rows))
    store.queue.finish_run(run_id, state)
    return run_id


def test_assets_keep_the_latest_state_per_host_and_kind(tmp_path: Path) -> None:
    db = tmp_path / "state.db"
    now = time.time()
    with open_store(db) as store:
        old = make_run(store, [
            ("host_up", {"host": "127.0.0.1", "via": "tcp/22", "rtt_ms": 1.0}),
            ("port_open", {"host": "127.0.0.1", "port": 22, "proto": "tcp"}),
            ("port_open", {"host": "127.0.0.1", "port": 80, "proto": "tcp"}),
            ("port_open", {"host": "127.0.0.3", "port": 443, "proto": "tcp"}),
            ("tls_cert", {"host": "127.0.0.3", "port": 443, "subject": "CN=three", "issuer": "CN=ca",
                          "not_before": iso(now - 86400 * 300), "not_after": iso(now + 86400 * 12 + 3600)}),
            ("baseline", {"host": "box1", "rule": "1001", "title": "ssh root login", "security": "high",
                          "status": "fail", "evidence": "PermitRootLogin yes"}),
        ])
        new = make_run(store, [
            ("port_open", {"host": "127.0.0.1", "port": 22, "proto": "tcp"}),  # 80 closed since
            ("service", {"host": "127.0.0.1", "port": 22, "banner": "SSH-2.0-OpenSSH_9.7", "name": "ssh"}),
            ("baseline", {"host": "box1", "rule": "1001", "title": "ssh root login", "security": "high",
                          "status": "pass", "evidence": ""}),
            ("baseline", {"host": "box1", "rule": "1002", "title": "umask", "security": "low",
                          "status": "fail", "evidence": "022"}),
        ])
        make_run(store, [("port_open", {"host": "127.0.0.1", "port": 9999, "proto": "tcp"})],
                 state=RunState.RUNNING)  # a run still going says nothing yet (it is partial)
    out = fleetscan("assets", "--json", db=db)
    assert out.returncode == 0, out.stderr
    assets = {a["host"]: a for a in json.loads(out.stdout)["assets"]}
    assert sorted(assets) == ["127.0.0.1", "127.0.0.3", "box1"]
    one = assets["127.0.0.1"]
    assert one["ports"] == [{"port": 22, "proto": "tcp"}]
    assert one["up"] is True  # only the older run pinged it: still the latest known
    assert [s["name"] for s in one["services"]] == ["ssh"]
    assert set(one["runs"]) == {old, new}
    three = assets["127.0.0.3"]  # nothing newer looked at it
    assert three["ports"] == [{"port": 443, "proto": "tcp"}] and three["runs"] == [old]
    assert three["certificates"][0]["days_left"] == 12 and three["certificates"][0]["subject"] == "CN=three"
    assert [(f["rule"], f["status"]) for f in assets["box1"]["failing"]] == [("1002", "fail")]
    text = fleetscan("assets", db=db)
    assert text.returncode == 0
    assert "ports: 22/tcp" in text.stdout and "(12 day(s))" in text.stdout and "baseline fail: 1002 umask" in text.stdout


def test_a_later_scan_that_found_every_port_closed_empties_the_ports(tmp_path: Path) -> None:
    """recon on a host whose only listener closed: the host answers, its port stage finds nothing. The
    asset view must not keep the old port (nor its service) as the latest known state."""
    db = tmp_path / "state.db"
    recon = ("host_up", "port_open", "service")
    with open_store(db) as store:
        make_run(store, [
            ("host_up", {"host": "127.0.0.1", "via": "tcp/22", "rtt_ms": 1.0}),
            ("port_open", {"host": "127.0.0.1", "port": 8081, "proto": "tcp"}),
            ("service", {"host": "127.0.0.1", "port": 8081, "banner": "HTTP/1.0 200 OK", "name": "http"}),
            ("port_open", {"host": "127.0.0.2", "port": 22, "proto": "tcp"}),
        ], outputs=recon)
        make_run(store, [("host_up", {"host": "127.0.0.1", "via": "tcp/22", "rtt_ms": 1.0})], outputs=recon)
        make_run(store, [("host_up", {"host": "127.0.0.1", "via": "tcp/22", "rtt_ms": 1.0})], outputs=recon,
                 state=RunState.FAILED)  # a failed run may not have scanned the ports: it says nothing of them
    out = fleetscan("assets", "--json", db=db)
    assert out.returncode == 0, out.stderr
    assets = {a["host"]: a for a in json.loads(out.stdout)["assets"]}
    assert assets["127.0.0.1"]["ports"] == [] and assets["127.0.0.1"]["services"] == []
    assert assets["127.0.0.1"]["up"] is True
    assert assets["127.0.0.2"]["ports"] == [{"port": 22, "proto": "tcp"}]  # not looked at since


def test_no_runs_no_assets(tmp_path: Path) -> None:
    out = fleetscan("assets", "--json", db=tmp_path / "state.db")
    assert out.returncode == 0 and json.loads(out.stdout) == {"assets": []}
