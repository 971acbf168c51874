"""Target SPECs, scopes, lazy target sets, and strict value validation."""

from __future__ import annotations

import ipaddress
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from console.errors import BadInput
from console.targets.sets import (
    Scope,
    TargetSet,
    as_kind,
    host_of,
    parse_scope,
    parse_targets,
    validate_value,
)

# -- parsing --------------------------------------------------------------------------


def test_spec_kinds_and_order() -> None:
    ts = parse_targets("192.0.2.1-3, www.Example.COM., 198.51.100.0/30,[2001:db8::1]:8443,http://a.example/x?y=1")
    assert list(ts) == [
        "192.0.2.1",
        "192.0.2.2",
        "192.0.2.3",
        "198.51.100.0",
        "198.51.100.1",
        "198.51.100.2",
        "198.51.100.3",
        "www.example.com",
        "[2001:db8::1]:8443",
        "http://a.example/x?y=1",
    ]
    assert len(ts) == 10


def test_ranges_short_and_full_forms_agree() -> None:
    assert parse_targets("198.51.100.1-20") == parse_targets("198.51.100.1-198.51.100.20")
    assert len(parse_targets("198.51.100.1-20")) == 20
    assert len(parse_targets("2001:db8::1-2001:db8::ff")) == 255


def test_overlaps_are_merged_and_duplicates_dropped() -> None:
    ts = parse_targets("127.0.0.0/24,127.0.0.5,127.0.0.200-127.0.1.10,host.example,HOST.example")
    assert len(ts) == 256 + 11 + 1
    assert ts.format() == "127.0.0.0-127.0.1.10,host.example"


def test_cidr_with_host_bits_is_its_network() -> None:
    assert parse_targets("192.0.2.77/24") == parse_targets("192.0.2.0/24")


@pytest.mark.parametrize(
    ("spec", "reason"),
    [
        ("127.0.0.5-1", "ends before it starts"),
        ("127.0.0.1-300", "not"),
        ("127.0.0.256", "not"),
        ("host:0", "not"),
        ("host:65536", "not"),
        ("ftp://a.example/", "http(s)"),
        ("http://user@a.example/", "user@"),
        ("http://a.example/../etc/passwd", "'..'"),
        ("http://a.example/#frag", "http(s)"),
        ("fe80::1%eth0", "not"),
        ("a_b.example", "not"),
        ("-oProxyCommand=x", "starts with '-'"),
        ("", "no targets"),
        (",,", "no targets"),
    ],
)
def test_bad_entries_are_named(spec: str, reason: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_targets(spec)
    assert reason in str(info.value)
    assert "\n" not in str(info.value)
    assert str(info.value).startswith("--targets: ")


def test_huge_ipv6_target_set_refused_but_scope_allowed() -> None:
    with pytest.raises(BadInput, match="too many targets"):
        parse_targets("2001:db8::/32")
    scope = parse_scope("2001:db8::/32")
    assert scope.contains("2001:db8:ffff::1")
    assert not scope.contains("2001:db9::1")


# -- @file ----------------------------------------------------------------------------


def test_at_file_with_comments(tmp_path: Path) -> None:
    spec = tmp_path / "targets.txt"
    spec.write_text("# lab hosts\n192.0.2.1\n\n  192.0.2.2   # second\nweb.example:8080\n")
    ts = parse_targets(f"@{spec},192.0.2.9")
    assert list(ts) == ["192.0.2.1", "192.0.2.2", "192.0.2.9", "web.example:8080"]


def test_at_file_error_names_file_and_line(tmp_path: Path) -> None:
    spec = tmp_path / "targets.txt"
    spec.write_text("192.0.2.1\n# ok\n192.0.2.1;reboot\n")
    with pytest.raises(BadInput) as info:
        parse_targets(f"@{spec}")
    assert info.value.file == str(spec)
    assert info.value.line == 3
    assert str(info.value).startswith(f"{spec}:3: ")
    assert "192.0.2.1;reboot" in str(info.value)


def test_at_file_missing_and_nested(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="no such targets file"):
        parse_targets(f"@{tmp_path / 'nope.txt'}")
    nested = tmp_path / "n.txt"
    nested.write_text("@other.txt\n")
    with pytest.raises(BadInput, match="cannot nest"):
        parse_targets(f"@{nested}")


# -- lazy sets ------------------------------------------------------------------------


def test_slash8_is_planned_chunk_by_chunk_in_constant_memory() -> None:
    tracemalloc.start()
    try:
        ts = parse_targets("127.0.0.0/8")
        assert len(ts) == 2**24
        chunks = ts.chunks(256)
        first = next(chunks)
        second = next(chunks)
        assert first[0] == "127.0.0.0" and first[-1] == "127.0.0.255"
        assert second[0] == "127.0.1.0"
        # seek to the last chunk by arithmetic: chunk k starts at k * 256
        last = list(ts.chunks(256, start=(2**24 // 256 - 1) * 256))
        assert len(last) == 1 and last[0][0] == "127.255.255.0" and last[0][-1] == "127.255.255.255"
        middle = next(ts.chunks(1000, start=5_000_000))
        assert middle[0] == str(ipaddress.IPv4Address(int(ipaddress.IPv4Address("127.0.0.0")) + 5_000_000))
        assert len(middle) == 1000
        assert ts[-1] == "127.255.255.255"
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 5_000_000  # a materialised /8 would need over a gigabyte


def test_iter_from_crosses_span_and_name_boundaries() -> None:
    ts = parse_targets("192.0.2.0/31,198.51.100.7,a.example,b.example")
    for offset in range(len(ts) + 1):
        assert list(ts.iter_from(offset)) == list(ts)[offset:]
    assert [len(c) for c in ts.chunks(2, start=1)] == [2, 2]


def test_iter_from_kind_keeps_positions() -> None:
    ts = parse_targets("192.0.2.1,a.example:8443,https://b.example/x")
    assert list(ts.iter_from(0, "url")) == ["http://192.0.2.1/", "https://a.example:8443/", "https://b.example/x"]
    assert list(ts.iter_from(0, "port")) == ["192.0.2.1:443", "a.example:8443", "b.example:443"]
    assert list(ts.iter_from(0, "host")) == ["192.0.2.1", "a.example", "b.example"]
    assert list(ts.iter_from(0, "ip")) == ["192.0.2.1", "", ""]


def test_bad_chunk_and_offset() -> None:
    ts = parse_targets("192.0.2.1")
    with pytest.raises(ValueError):
        next(ts.chunks(0))
    with pytest.raises(ValueError):
        next(ts.iter_from(-1))


# -- scope ----------------------------------------------------------------------------


def test_scope_rules() -> None:
    scope = parse_scope("192.0.2.0/28,app.example,198.51.100.5:8080,https://portal.example/login")
    assert scope.contains("192.0.2.15")
    assert not scope.contains("192.0.2.16")
    assert scope.contains("192.0.2.3:22")
    assert scope.contains("http://192.0.2.3:8080/x")
    assert scope.contains("https://[::ffff:192.0.2.3]/")
    assert scope.contains("198.51.100.5")  # a host:port entry puts its host in scope
    assert scope.contains("APP.example.")
    assert scope.contains("portal.example:443")
    assert not scope.contains("sub.app.example")  # names are listed one by one
    assert not scope.contains("http://app.example@evil.example/")
    assert not scope.contains("-192.0.2.1")
    assert not scope.contains("192.0.2.1 ")
    assert not scope.contains("")
    assert not scope.contains(None)  # type: ignore[arg-type]


def test_scope_from_targets_round_trip() -> None:
    ts = parse_targets("192.0.2.0/30,a.example:22")
    scope = Scope.from_targets(ts)
    assert scope.contains("a.example") and scope.contains("192.0.2.3") and not scope.contains("192.0.2.4")
    assert parse_scope(scope.format()) == scope


# -- validate_value -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "expected"),
    [
        ("ip", "192.0.2.1", "192.0.2.1"),
        ("ip", "2001:DB8::0001", "2001:db8::1"),
        ("ip", "::ffff:192.0.2.1", "192.0.2.1"),
        ("host", "Web.Example.", "web.example"),
        ("port", "[2001:db8::1]:443", "[2001:db8::1]:443"),
        ("port", "web.example:0080", "web.example:80"),
        ("url", "HTTP://Web.Example:80", "http://web.example/"),
        ("url", "https://web.example:8443/a/b?c=d&e=f", "https://web.example:8443/a/b?c=d&e=f"),
        ("url", "http://[2001:db8::1]:8080/", "http://[2001:db8::1]:8080/"),
    ],
)
def test_validate_value_normalises(kind: str, value: str, expected: str) -> None:
    assert validate_value(kind, value) == expected
    assert validate_value(kind, expected) == expected


@pytest.mark.parametrize(
    ("kind", "value"),
    [
        ("ip", "web.example"),
        ("host", "-rf"),
        ("host", "a b"),
        ("host", "a\x00b"),
        ("host", "$(reboot)"),
        ("host", "exa\u0430mple.com"),
        ("port", "web.example"),
        ("port", "web.example:-1"),
        ("url", "javascript:alert(1)"),
        ("url", "http://a.example/`id`"),
        ("url", "http://a.example/$(id)"),
        ("url", "http://a.example/x;rm"),
        ("url", "http://a.example:99999/"),
        ("nope", "192.0.2.1"),
    ],
)
def test_validate_value_refuses(kind: str, value: str) -> None:
    with pytest.raises(BadInput):
        validate_value(kind, value)


def test_validate_value_refuses_non_strings() -> None:
    with pytest.raises(BadInput):
        validate_value("host", 3)


# -- properties -----------------------------------------------------------------------

ipv4 = st.integers(min_value=0, max_value=2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))
ipv6 = st.integers(min_value=0, max_value=2**128 - 1).map(lambda n: str(ipaddress.IPv6Address(n)))
label = st.from_regex(r"\A[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?\Z")
hostname = st.lists(label, min_size=1, max_size=4).map(".".join).filter(lambda h: any(c.isalpha() for c in h.split(".")[-1]))
port = st.integers(min_value=1, max_value=65535)


@st.composite
def v4_cidr(draw: st.DrawFn) -> str:
    prefix = draw(st.integers(min_value=12, max_value=32))
    net = ipaddress.IPv4Network((draw(st.integers(0, 2**32 - 1)), prefix), strict=False)
    return str(net)


@st.composite
def v4_range(draw: st.DrawFn) -> str:
    start = draw(st.integers(0, 2**32 - 1))
    end = draw(st.integers(start, min(start + 5000, 2**32 - 1)))
    return f"{ipaddress.IPv4Address(start)}-{ipaddress.IPv4Address(end)}"


entry = st.one_of(
    ipv4,
    ipv6,
    v4_cidr(),
    v4_range(),
    hostname,
    st.tuples(hostname, port).map(lambda hp: f"{hp[0]}:{hp[1]}"),
    st.tuples(ipv6, port).map(lambda hp: f"[{hp[0]}]:{hp[1]}"),
    st.tuples(st.sampled_from(["http", "https"]), hostname, port).map(lambda u: f"{u[0]}://{u[1]}:{u[2]}/"),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(entry, min_size=1, max_size=8))
def test_parse_format_round_trip(entries: list[str]) -> None:
    ts = parse_targets(",".join(entries))
    again = parse_targets(ts.format())
    assert again == ts
    assert len(again) == len(ts)
    assert again.format() == ts.format()
    scope = parse_scope(",".join(entries))
    assert parse_scope(scope.format()) == scope


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(v4_cidr(), v4_range(), ipv4), min_size=1, max_size=5), st.lists(ipv4, max_size=20))
def test_scope_never_admits_an_address_outside(scope_entries: list[str], probes: list[str]) -> None:
    scope = parse_scope(",".join(scope_entries))
    networks: list[tuple[int, int]] = []
    for item in scope_entries:
        if "/" in item:
            net = ipaddress.IPv4Network(item, strict=False)
            networks.append((int(net.network_address), int(net.broadcast_address)))
        elif "-" in item:
            a, b = item.split("-")
            networks.append((int(ipaddress.IPv4Address(a)), int(ipaddress.IPv4Address(b))))
        else:
            networks.append((int(ipaddress.IPv4Address(item)),) * 2)
    edges = [str(ipaddress.IPv4Address(n)) for lo, hi in networks for n in (lo - 1, lo, hi, hi + 1) if 0 <= n < 2**32]
    for probe in [*probes, *edges]:
        number = int(ipaddress.IPv4Address(probe))
        inside = any(lo <= number <= hi for lo, hi in networks)
        assert scope.contains(probe) == inside
        assert scope.contains(f"{probe}:443") == inside
        assert scope.contains(f"http://{probe}:8080/") == inside


@settings(max_examples=200, deadline=None)
@given(hostname, hostname)
def test_scope_names_are_exact(listed: str, other: str) -> None:
    assume(listed != other)
    scope = parse_scope(listed)
    assert scope.contains(listed) and scope.contains(listed.upper())
    assert not scope.contains(other)
    assert not scope.contains(f"{other}.{listed}")


HOSTILE = [";", "|", "&&", "`", "$(", ")", "<", ">", "\\", "'", '"', " ", "\n", "\t", "\x00", "\r", "*", "{", "}"]


@settings(max_examples=300, deadline=None)
@given(entry, st.sampled_from(HOSTILE), st.integers(min_value=0, max_value=40), st.text(max_size=5))
def test_hostile_strings_are_rejected_never_passed_through(base: str, bad: str, where: int, tail: str) -> None:
    where = min(where, len(base))
    hostile = base[:where] + bad + base[where:] + tail
    assume(hostile.strip(" ") == hostile)  # surrounding spaces are trimmed separators, not content
    try:
        ts = parse_targets(hostile)
    except BadInput as exc:
        assert "\n" not in str(exc)
        return
    # accepted only if the hostile part ended up outside any value (e.g. nothing): never inside a target
    for value in ts:
        assert all(ch not in value for ch in ";|`$<>\\'\" \n\t\x00\r*{}")
        assert not value.startswith("-")


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(["ip", "host", "port", "url"]), st.text(max_size=80))
def test_validate_value_output_is_always_safe(kind: str, value: str) -> None:
    try:
        out = validate_value(kind, value)
    except BadInput:
        return
    assert out.isascii() and out.isprintable() and " " not in out
    assert not out.startswith("-")
    assert validate_value(kind, out) == out


@pytest.mark.parametrize(
    "value",
    [
        "-oProxyCommand=sh",
        "a" * 10_000,
        "..",
        "a..b",
        "host name",
        "x\nrm -rf /",
        "\x00",
        "ex\u0430mple.com",
        "http://evil.example@good.example/",
        "http://good.example\\@evil.example/",
        "$(id)",
        "`id`",
        "a;b",
        "a|b",
        "192.0.2.1&&id",
    ],
)
def test_hostile_examples(value: str) -> None:
    with pytest.raises(BadInput) as info:
        parse_targets(value)
    assert "\n" not in str(info.value) and "\x00" not in str(info.value)
    for kind in ("ip", "host", "port", "url"):
        with pytest.raises(BadInput):
            validate_value(kind, value)


def test_host_of_and_as_kind() -> None:
    assert host_of("https://[2001:db8::1]:8443/x") == "2001:db8::1"
    assert host_of("a.example:22") == "a.example"
    assert host_of("not a host") is None
    assert as_kind("192.0.2.1:443", "url") == "https://192.0.2.1/"
    assert as_kind("192.0.2.1:8080", "url") == "http://192.0.2.1:8080/"
    assert as_kind("http://a.example/", "port") == "a.example:80"
    assert as_kind("garbage here", "host") is None


def test_empty_target_set_is_usable() -> None:
    ts = TargetSet([], [])
    assert len(ts) == 0 and list(ts) == [] and list(ts.chunks(5)) == []


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.text(max_size=60), entry))
def test_scope_contains_never_raises(value: str) -> None:
    scope = parse_scope("192.0.2.0/24,a.example,2001:db8::/48")
    assert scope.contains(value) in (True, False)


def test_at_file_lines_may_hold_several_entries(tmp_path: Path) -> None:
    spec = tmp_path / "t.txt"
    spec.write_text("192.0.2.1, 192.0.2.2  # two\r\na.example\n")
    assert list(parse_targets(f"@{spec}")) == ["192.0.2.1", "192.0.2.2", "a.example"]


def test_percent_encoded_dot_segments_are_refused() -> None:
    for value in ("http://a.example/%2e%2e/etc", "http://a.example/x/%2E/y"):
        with pytest.raises(BadInput):
            validate_value("url", value)
    assert validate_value("url", "http://a.example/a%20b") == "http://a.example/a%20b"


@st.composite
def v6_cidr(draw: st.DrawFn) -> str:
    prefix = draw(st.integers(min_value=32, max_value=128))
    return str(ipaddress.IPv6Network((draw(st.integers(0, 2**128 - 1)), prefix), strict=False))


@settings(max_examples=200, deadline=None)
@given(st.lists(v6_cidr(), min_size=1, max_size=4), st.lists(ipv6, max_size=10))
def test_v6_scope_never_admits_an_address_outside(cidrs: list[str], probes: list[str]) -> None:
    scope = parse_scope(",".join(cidrs))
    nets = [ipaddress.IPv6Network(c) for c in cidrs]
    edges = [str(ipaddress.IPv6Address(n)) for net in nets
             for n in (int(net.network_address) - 1, int(net.broadcast_address) + 1,
                       int(net.network_address), int(net.broadcast_address)) if 0 <= n < 2**128]
    for probe in [*probes, *edges]:
        addr = ipaddress.IPv6Address(probe)
        if addr.ipv4_mapped is not None:
            continue  # folded to IPv4 on both sides
        inside = any(addr in net for net in nets)
        assert scope.contains(probe) == inside
        assert scope.contains(f"[{probe}]:443") == inside


def test_kind_of() -> None:
    from console.targets.sets import kind_of

    assert [kind_of(v) for v in ("192.0.2.1", "::1", "a.example", "a.example:80", "[::1]:22",
                                 "https://a.example/", "a b", "-x", "ftp://a/")] == [
        "ip", "ip", "host", "port", "port", "url", None, None, None]
    for value in parse_targets("192.0.2.1,a.example,a.example:8080,http://a.example/x"):
        assert kind_of(value) is not None


@settings(max_examples=500, deadline=None)
@given(st.integers(0, 2**32 - 1), st.sampled_from(["", "0", " ", "\n", ".0", "x"]), st.integers(0, 3))
def test_the_fast_ipv4_reading_agrees_with_ipaddress(number: int, noise: str, where: int) -> None:
    """``dotted_quad`` (the fast path of long address lists) reads exactly the canonical dotted quads, the
    same numbers ipaddress reads; anything else (a leading zero, a stray character) is left to the slow
    path, which decides as before."""
    import ipaddress

    from agentkit.targets import canonical_ip, dotted_quad

    text = str(ipaddress.IPv4Address(number))
    assert dotted_quad(text) == number == int(canonical_ip(text))  # type: ignore[arg-type]
    octets = text.split(".")
    octets[where] = noise + octets[where] if noise in ("0", "x") else octets[where] + noise
    odd = ".".join(octets)
    try:
        expected: int | None = int(ipaddress.IPv4Address(odd))
    except ValueError:
        expected = None
    assert dotted_quad(odd) in (None, expected)
    assert (canonical_ip(odd) is None) == (expected is None)


def test_a_canonical_spec_made_in_this_process_is_read_back_without_parsing() -> None:
    """`fleetscan run` writes a run's canonical targets, scope and exclusions, then its planner reads them
    back from the store: the same objects, not a second parse (a 400,000-entry scope took ~1.2 s)."""
    from console.targets.sets import canonical

    scope = parse_scope("127.0.0.0/30,198.51.100.7-198.51.100.9,scan.example.test")
    text = canonical(scope)
    assert parse_scope(text, stored=True) is scope
    assert parse_scope(text) is not scope and parse_scope(text) == scope  # typed input is always parsed
    other = parse_scope(text + ",127.0.0.9", stored=True)
    assert other is not scope and other.contains("127.0.0.9") and not scope.contains("127.0.0.9")
    targets = parse_targets("127.0.0.1-127.0.0.9,scan.example.test:8443")
    assert parse_targets(canonical(targets), stored=True) is targets
    with pytest.raises(BadInput, match="too many targets"):  # the limit holds for a remembered set too
        parse_targets(canonical(targets), stored=True, limit=3)
