"""Safe YAML loading that remembers where every key and value was written.

Operator files (workflows, agents inventory, baseline rules) are validated with
pydantic; a pydantic error only knows a path such as
``workflows.recon.stages.1.with.ports``. To give the operator ``FILE:LINE:COL``
we compose the YAML node tree ourselves (SafeLoader's resolver and scalar
constructors, so only plain YAML types ever come out), build the Python values,
and keep a :class:`SourceMap` from each path to the position of its node.

Everything that goes wrong here is a :class:`console.errors.BadInput` with the
file, line and column: YAML syntax errors (the parser's problem mark), unknown
tags, duplicate keys in a mapping, non-scalar keys, oversized documents.
"""

from __future__ import annotations

import stat
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from console.errors import BadInput

M = TypeVar("M", bound=BaseModel)

#: A path into a loaded document: mapping keys and sequence indexes.
DocPath = tuple[Any, ...]

#: Operator files are small; a bigger file is a mistake (or an attack), not a workflow.
MAX_FILE_BYTES = 16 * 1024 * 1024
#: Bound on built nodes, so alias bombs ("billion laughs") fail fast instead of eating memory.
MAX_NODES = 250_000


@dataclass
class SourceMap:
    """Where each node of a loaded document was written (1-based line and column).

    ``values`` holds the start of every node (mapping, sequence or scalar) by path;
    ``keys`` holds the start of the key for paths that end in a mapping key, which is
    the line an operator expects for ``key: value`` errors (unknown key, bad value).
    """

    file: str
    values: dict[DocPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[DocPath, tuple[int, int]] = field(default_factory=dict)

    def position(self, path: DocPath) -> tuple[int, int] | None:
        """Line and column of ``path``: the key's position when it has one, else the node's."""
        if path in self.keys:
            return self.keys[path]
        return self.values.get(path)

    def resolve(
        self, loc: Sequence[Any], base: DocPath = (), skip: Collection[str] = ()
    ) -> tuple[DocPath, list[str], tuple[int, int]]:
        """Map a pydantic ``loc`` (relative to ``base``) onto the document.

        Returns the deepest matching document path, the trailing loc parts that do not
        exist in the document (a missing key, say), and the position to report.
        Components that are not in the document but after which the path continues
        (discriminated-union tags such as ``tcp_connect``, ``function-after[...]``)
        are skipped, as are the labels in ``skip``.
        """
        path: DocPath = tuple(base)
        pending: list[str] = []
        for part in loc:
            candidate = (*path, part)
            if candidate in self.values or candidate in self.keys:
                path = candidate
                pending = []
                continue
            if isinstance(part, str) and _looks_like_field(part) and part not in skip:
                pending.append(part)
        pos = self.position(path) or (1, 1)
        return path, pending, pos


def _looks_like_field(part: str) -> bool:
    """True for loc parts naming a field; False for pydantic's internal union/validator labels."""
    return part.replace("_", "a").replace("-", "a").isalnum() and part not in _PYDANTIC_LABELS


_PYDANTIC_LABELS = {"int", "str", "float", "bool", "list", "dict", "none", "tagged-union"}


def format_path(path: Sequence[Any]) -> str:
    """Dotted field path as the operator reads it: ``workflows.recon.stages.1.with``."""
    return ".".join(str(p) for p in path)


def bad_input_at(smap: SourceMap, path: DocPath, message: str, *, rest: Sequence[str] = ()) -> BadInput:
    """A :class:`BadInput` located at ``path`` in the document of ``smap``."""
    pos = smap.position(path)
    probe = tuple(path)
    while pos is None and probe:  # fall back to the nearest written ancestor
        probe = probe[:-1]
        pos = smap.position(probe)
    line, col = pos or (1, 1)
    fieldname = format_path([*path, *rest]) or None
    return BadInput(message, file=smap.file, line=line, col=col, field=fieldname)


def validation_error_to_bad_input(
    exc: ValidationError, smap: SourceMap, base: DocPath = (), *, skip: Collection[str] = ()
) -> BadInput:
    """Turn the first error of a pydantic ValidationError into a one-line located BadInput.

    ``base`` is where the validated value sits in the document (for models validated
    piecewise, such as a stage's ``with`` block); ``skip`` names loc labels that are
    never document keys (the tool names of a discriminated union).
    """
    errors = exc.errors(include_url=False)
    if not errors:  # pragma: no cover - pydantic always reports at least one
        return BadInput(str(exc), file=smap.file)
    err = errors[0]
    loc = list(err.get("loc", ()))
    etype = err.get("type", "")
    ctx = err.get("ctx") or {}
    message = str(err.get("msg", "invalid value"))
    if etype == "union_tag_invalid":
        disc = str(ctx.get("discriminator", "")).strip("'")
        loc.append(disc or "tool")
        expected = str(ctx.get("expected_tags", "")).replace("'", "")
        message = f"unknown {disc or 'value'} {ctx.get('tag')!r} (known: {expected})"
    elif etype == "union_tag_not_found":
        disc = str(ctx.get("discriminator", "")).strip("'")
        loc.append(disc or "tool")
        message = "missing required key"
    elif etype == "missing":
        message = "missing required key"
    elif etype == "extra_forbidden":
        message = f"unknown key {loc[-1]!r}" if loc else "unknown key"
    elif message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    elif message.startswith("Assertion failed, "):
        message = message[len("Assertion failed, ") :]
    path, rest, _pos = smap.resolve(loc, base, skip)
    return bad_input_at(smap, path, message, rest=rest)


_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:map", "tag:yaml.org,2002:seq"})


class _Loader(yaml.SafeLoader):
    """SafeLoader: only standard YAML tags, so no Python object is ever constructed."""


def _mark_pos(mark: yaml.Mark | None) -> tuple[int, int]:
    if mark is None:
        return (1, 1)
    return (mark.line + 1, mark.column + 1)


class _Builder:
    """Builds plain Python values from a composed node tree, filling a SourceMap."""

    def __init__(self, loader: _Loader, smap: SourceMap) -> None:
        self.loader = loader
        self.smap = smap
        self.count = 0

    def build(self, node: yaml.Node, path: DocPath) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise BadInput(
                f"document too large (more than {MAX_NODES} nodes; alias expansion?)",
                file=self.smap.file,
                line=_mark_pos(node.start_mark)[0],
            )
        self.smap.values.setdefault(path, _mark_pos(node.start_mark))
        if isinstance(node, yaml.CollectionNode) and node.tag not in _PLAIN_TAGS:
            line, col = _mark_pos(node.start_mark)
            raise BadInput(f"unsupported YAML tag {node.tag!r}", file=self.smap.file, line=line, col=col)
        if isinstance(node, yaml.MappingNode):
            self.loader.flatten_mapping(node)  # YAML merge keys (<<)
            result: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode):
                    line, col = _mark_pos(key_node.start_mark)
                    raise BadInput(
                        "a mapping key must be a plain value", file=self.smap.file, line=line, col=col
                    )
                key = self.loader.construct_object(key_node, deep=True)
                if not isinstance(key, str | int | bool | float) and key is not None:
                    line, col = _mark_pos(key_node.start_mark)
                    raise BadInput(
                        "a mapping key must be a plain value", file=self.smap.file, line=line, col=col
                    )
                key_path = (*path, key)
                if key in result:
                    line, col = _mark_pos(key_node.start_mark)
                    raise BadInput(
                        f"duplicate key {key!r}",
                        file=self.smap.file,
                        line=line,
                        col=col,
                        field=format_path(key_path),
                    )
                self.smap.keys.setdefault(key_path, _mark_pos(key_node.start_mark))
                result[key] = self.build(value_node, key_path)
            return result
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, OverflowError) as exc:  # e.g. an integer of over 4,300 digits
            line, col = _mark_pos(node.start_mark)
            problem = "number too large" if "digits" in str(exc) or isinstance(exc, OverflowError) else "bad value"
            raise BadInput(f"{problem}: {str(node.value)[:40]}...", file=self.smap.file, line=line, col=col) from None


def load_text(text: str, file: str) -> tuple[Any, SourceMap]:
    """Parse YAML ``text`` (named ``file`` in errors) into plain values plus their SourceMap.

    An empty document gives ``None``. More than one document is an error.
    """
    smap = SourceMap(file=file)
    if "\x00" in text:  # the YAML reader would raise outside any mark: name the line here
        line = text.count("\n", 0, text.index("\x00")) + 1
        raise BadInput("NUL byte in the file", file=file, line=line)
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:  # a control character the YAML reader refuses
        raise BadInput(f"YAML error: {' '.join(str(exc).split())[:200]}", file=file) from None
    try:
        node = loader.get_single_node()
        if node is None:
            return None, smap
        data = _Builder(loader, smap).build(node, ())
    except yaml.constructor.ConstructorError as exc:
        line, col = _mark_pos(exc.problem_mark or exc.context_mark)
        problem = " ".join((exc.problem or "not a plain YAML value").split())
        raise BadInput(f"unsupported YAML tag: {problem}", file=file, line=line, col=col) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = _mark_pos(mark)
        problem = exc.problem or exc.context or "invalid YAML"
        if exc.context and exc.problem and exc.context not in problem:
            problem = f"{exc.context}: {problem}"
        raise BadInput(f"YAML syntax error: {problem}", file=file, line=line, col=col) from None
    except yaml.YAMLError as exc:
        raise BadInput(f"YAML error: {exc}", file=file) from None
    except RecursionError:
        raise BadInput("document nested too deeply", file=file) from None
    finally:
        loader.dispose()
    return data, smap


def load_file(path: str | Path, *, display: str | None = None) -> tuple[Any, SourceMap]:
    """Read and parse a YAML file; unreadable, oversized or non-UTF-8 files are BadInput."""
    name = display if display is not None else str(path)
    p = Path(path)
    try:
        if p.is_dir():
            raise IsADirectoryError(name)
        if not stat.S_ISREG(p.stat().st_mode):  # a FIFO would hang the open, a device never end
            raise BadInput("not a regular file (a FIFO, device or socket is refused)", file=name)
        with p.open("rb") as handle:  # bounded read: /dev/zero or a huge file must not hang us
            raw = handle.read(MAX_FILE_BYTES + 1)
        if len(raw) > MAX_FILE_BYTES:
            raise BadInput(f"file too large (more than {MAX_FILE_BYTES} bytes)", file=name)
    except FileNotFoundError:
        raise BadInput("no such file", file=name) from None
    except IsADirectoryError:
        raise BadInput("is a directory, not a file", file=name) from None
    except OSError as exc:
        raise BadInput(f"cannot read: {exc.strerror or exc}", file=name) from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise BadInput("not valid UTF-8 text", file=name, line=line) from None
    return load_text(text, name)


def validate_document(
    model: type[M], data: Any, smap: SourceMap, expected: str, *, context: Any = None, skip: Collection[str] = ()
) -> M:
    """A loaded document validated into ``model``: BadInput at the document when it is not a mapping
    (``expected`` says what it should be), else at the first field pydantic refuses."""
    if not isinstance(data, dict):
        raise bad_input_at(smap, (), expected)
    try:
        return model.model_validate(data, context=context)
    except ValidationError as exc:
        raise validation_error_to_bad_input(exc, smap, skip=skip) from None
