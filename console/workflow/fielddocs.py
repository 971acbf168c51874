"""Attribute docstrings as field descriptions, read from each module's source once.

The file-format models document each field with a docstring under it (Posting's habit), and that text
is the field's ``description``. pydantic's own ``use_attribute_docstrings`` finds it per class by
walking the stack, tokenizing the class's source block and parsing it again: for this package's forty
models that was a fifth of a run's start-up CPU. Here each module's source is parsed once (one C-level
``ast.parse``) and every class's docstrings are taken from that tree, before pydantic collects the
fields: a field without a default gets ``Field(description=...)``, a plain default becomes
``Field(default, description=...)``. A field whose default is already a ``Field(...)`` keeps it as it is
(put its other settings in ``Annotated`` instead); tests/test_workflow.py's check that every file-format
field has a description catches one that would lose its text.
"""

from __future__ import annotations

import ast
import inspect
import sys
from functools import cache
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo


@cache
def _module_docs(module: str) -> dict[str, dict[str, str]]:
    """``{class qualname: {attribute: docstring}}`` for every class of ``module`` not inside a function."""
    file = getattr(sys.modules.get(module), "__file__", None)
    if not file:
        return {}
    try:
        with open(file, encoding="utf-8") as handle:
            tree = ast.parse(handle.read(), filename=file)
    except (OSError, SyntaxError, UnicodeDecodeError):
        return {}
    found: dict[str, dict[str, str]] = {}

    def walk(body: list[ast.stmt], prefix: str) -> None:
        for node in body:
            if isinstance(node, ast.ClassDef):
                found[prefix + node.name] = _class_docs(node)
                walk(node.body, f"{prefix}{node.name}.")

    walk(tree.body, "")
    return found


def _class_docs(node: ast.ClassDef) -> dict[str, str]:
    """As pydantic reads them: a string statement right after an annotated assignment to a name."""
    docs: dict[str, str] = {}
    previous: ast.stmt | None = None
    for stmt in node.body:
        if (
            isinstance(previous, ast.AnnAssign) and isinstance(previous.target, ast.Name)
            and isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Constant)
            and isinstance(stmt.value.value, str)
        ):
            docs[previous.target.id] = inspect.cleandoc(stmt.value.value)
        previous = stmt
    return docs


class DocumentedModel(BaseModel):
    """A model whose fields' docstrings become their descriptions (see the module's docstring).

    Built on first use, not at import: a run pays only for the models its workflow uses."""

    model_config = ConfigDict(defer_build=True)

    @classmethod
    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        docs = _module_docs(cls.__module__).get(cls.__qualname__)
        if not docs:
            return
        own = cls.__dict__.get("__annotations__", {})
        for name, doc in docs.items():
            if name not in own or name.startswith("_") or "ClassVar" in str(own[name]):
                continue
            default = cls.__dict__.get(name, _MISSING)
            if default is _MISSING:
                setattr(cls, name, Field(description=doc))
            elif not isinstance(default, FieldInfo):
                setattr(cls, name, Field(default=default, description=doc))


_MISSING: Any = object()
