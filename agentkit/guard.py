"""The one gate between a tool and the network: resolve, hold every address against the run, connect.

A tool never connects to a name. It asks the task's :class:`Guard` (``ctx.guard``) for the
addresses of a host (:meth:`Guard.addresses`, :meth:`Guard.first_address`), for a connected
socket (:meth:`Guard.create_connection`, a drop-in for ``socket.create_connection``, also
usable as ``http.client.HTTPConnection._create_connection``), or, before it hands a host to
an external program that resolves it itself, for a verdict on all of its addresses
(:meth:`Guard.check_host`). Each resolved address is held against the task's exclusions
(never contacted, whatever name led there) and its scope; what is refused is reported to the
master (a ``blocked`` message: counted and logged there as an event) and never contacted.
A new tool that connects through these functions gets the check for free.

The scope rule for resolved addresses: an address inside the scope's addresses is in; a
name listed by name in a scope that bounds no address at all (``--targets localhost``, the
default scope of a names-only run) vouches for what it resolves to, and so does a target
of a task that came without a scope (its targets stand in for it); anything else is out.
So once the operator gives any address bound, a listed name that resolves outside it is
dropped. An excluded address is out whatever the scope says.
"""

from __future__ import annotations

import functools
import socket
import threading
from typing import Callable, List, Optional, Sequence, Set, Tuple

from agentkit.targets import IPAddress, Scope, TargetError, parse_ip

#: resolving a name never takes longer than this (getaddrinfo itself has no deadline)
RESOLVE_TIMEOUT_S = 10.0


class Blocked(OSError):
    """Every address of a host was refused (excluded or out of scope): the host is not contacted.

    An ``OSError`` so that a tool's "the host did not answer" path handles it too; the drop was
    already reported to the master by the guard. ``reason``: ``excluded`` when any refused
    address was excluded, else ``out of scope``.
    """

    def __init__(self, message: str, reason: str) -> None:
        super().__init__(message)
        self.reason = reason


Report = Callable[[str, str, str], None]


class Guard:
    """Scope and exclusions of one task, and the resolver/connector every tool goes through."""

    def __init__(
        self,
        scope: Sequence[str],
        exclude: Sequence[str],
        report: Optional[Report] = None,
        names_vouch: bool = False,
    ) -> None:
        try:
            self.scope: Optional[Scope] = parsed_scope(tuple(scope)) if scope else None
            self.exclude = parsed_scope(tuple(exclude))
        except TargetError as err:
            raise ValueError("scope: %s" % err) from None
        self._report = report
        #: a name in scope vouches for its addresses even when the scope bounds addresses (used when
        #: the task's own targets stand in for a scope the master did not send)
        self._names_vouch = names_vouch
        self._reported: Set[Tuple[str, str]] = set()
        self._lock = threading.Lock()

    # -- verdicts --------------------------------------------------------------------

    def verdict(self, host: str, addr: IPAddress, port: Optional[int] = None) -> Optional[str]:
        """Why ``addr`` (what ``host`` resolved to) may not be contacted, or None when it may."""
        if self.exclude.contains_address(addr, port) or (
            parse_ip(host) is None and self.exclude.contains(host, port)
        ):
            return "excluded"
        scope = self.scope
        if scope is None or scope.contains_address(addr, port):
            return None
        vouching = self._names_vouch or not scope.has_addresses
        if vouching and parse_ip(host) is None and scope.contains(host, port):
            return None
        return "out of scope"

    def allowed(self, host: str, address: str, port: Optional[int] = None) -> bool:
        """Check one resolved address; a refused one is reported (once per host and address)."""
        return self.refusal(host, address, port) is None

    def refusal(self, host: str, address: str, port: Optional[int] = None) -> Optional[str]:
        """:meth:`verdict` for an address string; a refused one is reported (once per host and address)."""
        addr = parse_ip(address)
        if addr is None:
            return "out of scope"
        why = self.verdict(host, addr, port)
        if why is not None:
            self._blocked(host, str(addr), why)
        return why

    def _blocked(self, host: str, address: str, why: str) -> None:
        with self._lock:
            if (host, address) in self._reported:
                return
            self._reported.add((host, address))
        if self._report is not None:
            self._report(host, address, why)

    # -- resolving -------------------------------------------------------------------

    def addresses(self, host: str, port: Optional[int] = None, family: int = 0) -> List[Tuple[int, str]]:
        """``(family, address)`` of every address of ``host`` the task may contact, resolver order.

        Raises :class:`Blocked` when the host resolves but every address is refused, and a
        plain ``OSError`` (``socket.gaierror``) when it does not resolve.
        """
        kept: List[Tuple[int, str]] = []
        reasons: Set[str] = set()
        for fam, address in resolve(host, family):
            why = self.refusal(host, address, port)
            if why is None:
                kept.append((fam, address))
            else:
                reasons.add(why)
        if not kept:
            reason = "excluded" if "excluded" in reasons else "out of scope"
            raise Blocked("%s: not contacted (%s)" % (host, reason), reason)
        return kept

    def first_address(self, host: str, port: Optional[int] = None) -> Tuple[int, str]:
        """The first address of ``host`` the task may contact (the probe tools use one per host)."""
        return self.addresses(host, port)[0]

    def check_host(self, host: str, port: Optional[int] = None) -> None:
        """For a program that resolves ``host`` itself: every address must be allowed, or Blocked."""
        refused = [(address, why) for _, address in resolve(host, 0) for why in [self.refusal(host, address, port)] if why]
        if refused:
            reason = "excluded" if any(why == "excluded" for _, why in refused) else "out of scope"
            shown = ", ".join(address for address, _ in refused[:3])
            raise Blocked("%s resolves to %s: not contacted (%s)" % (host, shown, reason), reason)

    # -- connecting ------------------------------------------------------------------

    def create_connection(
        self,
        address: Tuple[str, int],
        timeout: Optional[float] = None,
        source_address: Optional[Tuple[str, int]] = None,
    ) -> socket.socket:
        """``socket.create_connection`` that only ever connects to allowed addresses."""
        host, port = address[0], int(address[1])
        last: Optional[OSError] = None
        for family, numeric in self.addresses(host, port):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                if timeout is not None:
                    sock.settimeout(timeout)
                if source_address is not None:
                    sock.bind(source_address)
                sock.connect((numeric, port))
                return sock
            except OSError as err:
                sock.close()
                last = err
        raise last if last is not None else OSError("no address to connect to for %s" % host)


@functools.lru_cache(maxsize=16)
def parsed_scope(entries: Tuple[str, ...]) -> Scope:
    """A run's scope is the same for every task of it: parsed once per agent, shared (read-only)."""
    return Scope(entries)


def resolve(host: str, family: int = 0) -> List[Tuple[int, str]]:
    """``(family, numeric address)`` of a host, de-duplicated, in the resolver's order.

    An address literal is returned as is (no lookup); a name goes through getaddrinfo on a
    worker thread so :data:`RESOLVE_TIMEOUT_S` bounds it.
    """
    literal = parse_ip(host)
    if literal is not None:
        return [(socket.AF_INET if literal.version == 4 else socket.AF_INET6, str(literal))]
    found: List[Tuple[int, str]] = []
    failure: List[BaseException] = []
    ready = threading.Event()

    def lookup() -> None:
        try:
            for fam, _, _, _, sockaddr in socket.getaddrinfo(host, None, family, socket.SOCK_STREAM):
                item = (int(fam), str(sockaddr[0]).partition("%")[0])
                if item not in found:
                    found.append(item)
        except (OSError, UnicodeError) as err:
            failure.append(err)
        finally:
            ready.set()

    threading.Thread(target=lookup, daemon=True, name="resolve-" + host[:32]).start()
    if not ready.wait(RESOLVE_TIMEOUT_S):
        raise socket.gaierror("resolving %s timed out" % host)
    if failure or not found:
        raise socket.gaierror("%s does not resolve" % host)
    return found
