"""The base class of every nrecur config: a frozen pydantic model.

Each field carries an attribute docstring; pydantic turns it into the field's
description, which the CLI uses as help text (see ``nrecur.cli.options``).
Validation errors name the field and the allowed values; ``format_error``
turns them into one line for the command line.
"""

from __future__ import annotations

import pydantic
from pydantic import BaseModel, ConfigDict


class Config(BaseModel):
    """Frozen, strict-about-names config. ``model_dump(mode="json")`` is enough to rebuild it."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        use_attribute_docstrings=True,
        validate_default=True,
    )


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
