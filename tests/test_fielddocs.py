"""Field docstrings become descriptions (console/workflow/fielddocs.py) exactly as pydantic's own
``use_attribute_docstrings`` makes them, without its per-class source walk."""

from __future__ import annotations

from typing import Annotated, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from console.workflow.fielddocs import DocumentedModel


class Ours(DocumentedModel):
    required: int
    """A required field.

        Indented second line."""
    plain: str = "x"
    """A plain default."""
    bounded: Annotated[int, Field(gt=0, alias="b")] = 3
    """Annotated metadata and a default."""
    listed: list[int] = []
    undocumented: int = 0
    counter: ClassVar[int] = 0
    """A class variable: not a field."""

    class Inner(DocumentedModel):
        value: int = 1
        """Inner's own."""


class Theirs(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    required: int
    """A required field.

        Indented second line."""
    plain: str = "x"
    """A plain default."""
    bounded: Annotated[int, Field(gt=0, alias="b")] = 3
    """Annotated metadata and a default."""
    listed: list[int] = []
    undocumented: int = 0
    counter: ClassVar[int] = 0
    """A class variable: not a field."""


def test_same_fields_as_pydantic_docstrings() -> None:
    mine, theirs = Ours.model_fields, Theirs.model_fields
    assert list(mine) == list(theirs) == ["required", "plain", "bounded", "listed", "undocumented"]
    for name in mine:
        assert mine[name].description == theirs[name].description, name
        assert mine[name].is_required() == theirs[name].is_required(), name
        assert mine[name].alias == theirs[name].alias, name
    assert mine["required"].description == "A required field.\n\nIndented second line."
    assert mine["undocumented"].description is None
    assert Ours.Inner.model_fields["value"].description == "Inner's own."
    assert Ours.model_json_schema()["properties"] == Theirs.model_json_schema()["properties"]


def test_validation_unchanged() -> None:
    one = Ours.model_validate({"required": 1})
    assert (one.plain, one.bounded, one.listed) == ("x", 3, [])
    one.listed.append(1)
    assert Ours.model_validate({"required": 2}).listed == []  # a mutable default is not shared
    with pytest.raises(ValidationError):
        Ours.model_validate({"plain": "y"})
    with pytest.raises(ValidationError):
        Ours.model_validate({"required": 1, "b": 0})
