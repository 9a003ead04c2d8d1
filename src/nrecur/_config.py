"""The base class of every nrecur config: a frozen pydantic model.

Each field carries an attribute docstring; pydantic turns it into the field's
description, which the CLI uses as help text (see ``nrecur.cli.options``).
Validation errors name the field and the allowed values; ``format_error``
turns them into one line for the command line. Every integer in a config,
nested in lists and tables too, is a 64-bit one (:data:`INT64`): what a results
table, numpy and torch hold, so a value beyond it is refused where it is given
rather than when a sweep's table is written.
"""

from __future__ import annotations

from typing import Any

import pydantic
from pydantic import BaseModel, ConfigDict, field_validator

INT64 = (-(2**63), 2**63 - 1)
"""The smallest and largest integer a config may hold."""


class Config(BaseModel):
    """Frozen, strict-about-names config. ``model_dump(mode="json")`` is enough to rebuild it."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
    )

    @field_validator("*", mode="after")
    @classmethod
    def _int64(cls, value: Any, info) -> Any:
        where = _beyond_int64(value)
        if where is not None:
            place, number = where
            raise ValueError(
                f"{info.field_name}{place} = {number} is beyond the 64-bit integers a results table and the trainer "
                f"hold ({INT64[0]} to {INT64[1]})"
            )
        return value


def _beyond_int64(value: Any, place: str = "") -> tuple[str, int] | None:
    """Where in ``value`` (``""``, ``"['train.steps'][1]"``) an integer lies outside :data:`INT64`, and the integer."""
    if isinstance(value, int) and not isinstance(value, bool):
        return None if INT64[0] <= value <= INT64[1] else (place, value)
    if isinstance(value, (list, tuple)):
        items = enumerate(value)
    elif isinstance(value, dict):
        items = value.items()
    else:
        return None
    for key, item in items:
        found = _beyond_int64(item, f"{place}[{key!r}]")
        if found is not None:
            return found
    return None


def format_error(error: pydantic.ValidationError) -> str:
    """One line per problem: ``field: message`` (pydantic's prefixes removed)."""
    parts = []
    for item in error.errors():
        where = ".".join(str(part) for part in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] in ("missing", "too_long") and item["loc"] and isinstance(item["loc"][-1], int):
            # A tuple field given the wrong number of values: name the field, not the slot.
            where = ".".join(str(part) for part in item["loc"][:-1])
            message = f"wrong number of values ({message.lower()} at item {item['loc'][-1] + 1})"
        if item["type"] == "missing" and item["loc"] and not isinstance(item["loc"][-1], int):
            message = f"{item['loc'][-1]} is required (option --{str(item['loc'][-1]).replace('_', '-')})"
        # Our validators already name the field; pydantic's own messages do not.
        name = where.split(".")[-1]
        parts.append(message if not where or message.startswith(name) else f"{where}: {message}")
    return "; ".join(parts)
