"""Transitional: analyses not yet written in the contract, registered through an adapter.

``register_analysis(name, applies, description)(fn)`` wraps ``fn(run, **options)`` as an
:class:`~nrecur.analysis.contract.Analysis` whose options are ``fn``'s keyword arguments. This module goes
away when every analysis is written in the contract.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any, Callable

import pydantic

from nrecur.analysis.base import showing_progress
from nrecur.analysis.contract import Analysis, Options, Result, register

__all__ = ["register_analysis"]


def draw(result, folder: Path) -> list[Path]:
    return result.plot(folder)


def register_analysis(name: str, applies: Callable[[Any], str | None], description: str, over_training=None):
    def decorate(fn):
        parameters = list(inspect.signature(fn).parameters.values())[1:]
        fields = {p.name: (Any, p.default) for p in parameters if p.name not in ("show_progress", "load", "seed")}
        options = pydantic.create_model(f"{name.title()}Options", __base__=Options, **fields)
        takes_progress = any(p.name == "show_progress" for p in parameters)

        def compute(run, opts):
            kwargs = opts.model_dump()
            if takes_progress:
                from nrecur.analysis.base import _PROGRESS

                kwargs["show_progress"] = _PROGRESS.get()
            return fn(run, **kwargs)

        compute.__module__ = fn.__module__
        register(Analysis(name=name, description=description, options=options, result=type(f"{name.title()}LegacyResult", (Result,), {}), compute=compute, applies=applies, figures="nrecur.analysis.legacy:draw"))
        return fn

    return decorate


_ = showing_progress
