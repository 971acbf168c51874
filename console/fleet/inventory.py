"""The agents inventory (``--agents FILE``) and the ``--agents`` source syntax.

An inventory lists the operator's scan boxes::

    agents:
      - name: box1
        host: 203.0.113.10
        port: 22
        user: scan
        key: ~/.ssh/id_ed25519      # or none: ssh-agent / ~/.ssh/config
        slots: 4
      - name: box2
        ssh: box2                   # a Host alias from ~/.ssh/config

Every value here ends up in an SSH connection or a command line of the SSH
transport, so each is checked strictly: names, hosts, users and aliases have
narrow character sets and never start with ``-``; errors are one line with
``FILE:LINE:COL: field: message`` like workflow files.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

from pydantic import BeforeValidator, ConfigDict, Field, model_validator

from console import yamlsrc
from console.errors import BadInput

# the source syntax lives apart (no pydantic) and is re-exported here, where callers have always found it
from console.fleet.agentsource import MAX_LOCAL_AGENTS as MAX_LOCAL_AGENTS
from console.fleet.agentsource import local_agent_names as local_agent_names
from console.fleet.agentsource import parse_agents_source as parse_agents_source
from console.targets import sets as targets
from console.workflow.params import StrictModel


def _host(value: Any) -> Any:
    if not isinstance(value, str):
        raise ValueError("host must be an IP address or a hostname")
    try:
        return targets.validate_value("host", value)
    except BadInput:
        raise ValueError(f"host {value[:60]!r} is not an IP address or a hostname") from None


BoxName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}$")]
SshAlias = Annotated[str, Field(pattern=r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,252}$")]
UserName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}$")]


class BoxSpec(StrictModel):
    """One scan box the master reaches over SSH (immutable: a spec is shared by the fleet and its links)."""

    model_config = ConfigDict(frozen=True)

    name: BoxName
    """Unique name ([A-Za-z0-9._-], not starting with '-'): shown in results as the record's agent."""
    host: Annotated[str, BeforeValidator(_host)] | None = None
    """IP address or hostname to connect to (or use ``ssh``)."""
    port: Annotated[int, Field(ge=1, le=65535)] = 22
    """SSH port."""
    user: UserName | None = None
    """Login user (default: ~/.ssh/config, else the local user)."""
    key: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    """Private key file (``~`` expanded, relative to the inventory file); none: ssh-agent / ~/.ssh/config."""
    ssh: SshAlias | None = None
    """A Host alias from ~/.ssh/config, instead of ``host``."""
    slots: Annotated[int, Field(ge=1, le=1024)] = 4
    """Tasks run at once on this box."""
    python: Annotated[str, Field(pattern=r"^[A-Za-z0-9_./+][A-Za-z0-9_./+-]{0,255}$")] = "python3"
    """The Python (>= 3.8) to run the agent with on the box."""

    @model_validator(mode="after")
    def _target(self) -> BoxSpec:
        if (self.host is None) == (self.ssh is None):
            raise ValueError("give exactly one of `host` or `ssh` (a ~/.ssh/config alias)")
        if self.key is not None and ("\x00" in self.key or not self.key.isprintable()):
            raise ValueError("key must be a file path")
        return self

    @property
    def address(self) -> str:
        """What to connect to: the host (with a non-default port) or the ssh alias."""
        if self.host is not None:
            return self.host if self.port == 22 else targets.format_hostport(self.host, self.port)
        return f"ssh:{self.ssh}"


class Inventory(StrictModel):
    """An inventory file."""

    agents: Annotated[list[BoxSpec], Field(min_length=1, max_length=10_000)]
    """The boxes."""


def parse_inventory(data: Any, smap: yamlsrc.SourceMap, base_dir: Path) -> list[BoxSpec]:
    """Validate a loaded inventory document; keys resolved against ``base_dir``."""
    inventory = yamlsrc.validate_document(Inventory, data, smap, "expected a mapping with an `agents:` list")
    seen: set[str] = set()
    boxes: list[BoxSpec] = []
    for index, box in enumerate(inventory.agents):
        if box.name in seen:
            raise yamlsrc.bad_input_at(smap, ("agents", index, "name"), f"duplicate agent name {box.name!r}")
        seen.add(box.name)
        if box.key is not None:
            key = Path(box.key).expanduser()
            if not key.is_absolute():
                key = base_dir / key
            box = box.model_copy(update={"key": str(key)})
        boxes.append(box)
    return boxes


def load_inventory(path: str | Path) -> list[BoxSpec]:
    """Load an agents inventory file (BadInput with FILE:LINE:COL on any problem)."""
    file = Path(path)
    data, smap = yamlsrc.load_file(file)
    return parse_inventory(data, smap, file.resolve().parent)
