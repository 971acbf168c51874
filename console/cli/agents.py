"""`fleetscan agents`: list the boxes, `--check` them (connect, bootstrap, ping), `--trust NAME`.

Local agents go through the same checks as SSH boxes (same stage-0, same hello, same ping),
so `fleetscan agents --check` on the embedded default proves the local path too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from typing import Any

from console.errors import BadInput, FleetscanError
from console.fleet.inventory import local_agent_names
from console.sanitize import safe_line

EXIT_OK, EXIT_SOME_FAILED = 0, 1


def _specs(source: str) -> tuple[str, list[Any]]:
    from console.fleet.inventory import load_inventory, parse_agents_source

    kind, value = parse_agents_source(source)
    if kind == "local":
        return "local", [int(value)]
    return "inventory", list(load_inventory(value))


async def _check_local(count: int) -> list[dict[str, Any]]:
    from agentkit.archive import build_archive
    from console.fleet.links import LocalLink
    from console.fleet.ssh.link import ping

    archive, sha256 = build_archive()

    async def one(name: str) -> dict[str, Any]:
        link = LocalLink(name)
        row: dict[str, Any] = {"name": name, "address": "localhost", "ok": False, "error": ""}
        try:
            hello = await link.start(archive, sha256)
            row.update(ok=True, python=hello.python, hostname=hello.hostname, programs=dict(hello.programs),
                       archive="pushed" if link.pushed else "cached",
                       bootstrap_ms=round(link.bootstrap_s * 1000, 1),
                       latency_ms=round(await ping(link) * 1000, 2))
        except FleetscanError as err:
            row["error"] = str(err)
        finally:
            with contextlib.suppress(Exception):
                await link.close()
        return row

    return list(await asyncio.gather(*(one(n) for n in local_agent_names(count))))


def _print_check(rows: list[dict[str, Any]]) -> None:
    for row in rows:
        if row["ok"]:
            tools = ",".join(sorted(row.get("programs") or {})) or "-"
            print(safe_line(f"{row['name']:<16} ok    {row['address']:<22} python {row.get('python', '?'):<8} "
                            f"rtt {row.get('latency_ms')} ms  bootstrap {row.get('bootstrap_ms')} ms "
                            f"({row.get('archive')})  tools {tools}", None))
        else:
            print(safe_line(f"{row['name']:<16} FAIL  {row['address']:<22} {row['error']}", None))


def _trust(specs: list[Any], name: str, assume_yes: bool) -> int:
    from console.fleet.ssh import hostkeys
    from console.fleet.ssh import link as ssh

    spec = next((s for s in specs if s.name == name), None)
    if spec is None:
        known = ", ".join(s.name for s in specs) or "none"
        raise BadInput(f"no box named {name!r} in the inventory (boxes: {known})", field="--trust")

    async def fetch() -> tuple[Any, str, int]:
        key = await ssh.fetch_host_key(spec)
        host, port = await ssh.resolve_endpoint(spec)
        return key, host, port

    key, host, port = asyncio.run(fetch())
    print(f"{name} ({host}:{port}) offers a {key.get_algorithm()} host key {hostkeys.fingerprint(key)}")
    if not assume_yes:
        if not sys.stdin.isatty():
            raise BadInput("confirm trusting this key with --yes (stdin is not a terminal)", field="--trust")
        answer = input("Compare it with `ssh-keygen -lf /etc/ssh/ssh_host_*_key.pub` on the box. Trust it? [y/N] ")
        if answer.strip().lower() not in ("y", "yes"):
            print("not trusted", file=sys.stderr)
            return EXIT_SOME_FAILED
    record = hostkeys.record_host_key(host, port, key)
    for old in record.replaced:
        print(f"replaced the previously trusted key {old}", file=sys.stderr)
    print(f"trusted {record.entry} {record.fingerprint} in {record.path}")
    return EXIT_OK


def _listing(kind: str, specs: list[Any]) -> list[dict[str, Any]]:
    """Every box as listed (name, kind, address, slots; host_key for SSH boxes): also the base of each
    ``--check --json`` object, so a script reads the same keys with or without --check."""
    if kind == "local":
        from console.fleet.links import LOCAL_SLOTS

        return [
            {"name": n, "kind": "local", "address": "localhost", "slots": LOCAL_SLOTS} for n in local_agent_names(specs[0])
        ]
    from console.fleet.ssh.link import list_boxes

    return [dict(row, kind="ssh") for row in list_boxes(specs)]


def agents_command(args: argparse.Namespace, source: str) -> int:
    kind, specs = _specs(source)
    if args.trust:
        if kind == "local":
            raise BadInput("local agents have no host key; pass an inventory file with --agents", field="--trust")
        return _trust(specs, args.trust, args.yes)
    if args.check:
        if kind == "local":
            rows = asyncio.run(_check_local(specs[0]))
        else:
            from console.fleet.ssh.link import check

            rows = [r.as_dict() for r in asyncio.run(check(specs))]
        if getattr(args, "json", False):
            listed = {box["name"]: box for box in _listing(kind, specs)}
            print(json.dumps({"agents": [{**listed.get(r["name"], {}), **r} for r in rows]}))
        else:
            _print_check(rows)
        return EXIT_OK if all(r["ok"] for r in rows) else EXIT_SOME_FAILED
    boxes = _listing(kind, specs)
    if getattr(args, "json", False):
        print(json.dumps({"agents": boxes}))
        return EXIT_OK
    for row in boxes:
        if row["kind"] == "local":
            print(f"{row['name']:<16} local  localhost")
        else:
            print(safe_line(
                f"{row['name']:<16} ssh    {row['address']:<22} slots {row['slots']:<3} host key {row['host_key']}", None
            ))
    return EXIT_OK
