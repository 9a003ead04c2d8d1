"""The subspace edit (issue 31 item 3): the donor's coordinates along a basis at the context positions, its
references (a full basis is the patch; the complement and the positions after p are left alone), a fit that lowers
its objective, and its place among the edit analysis's candidates with its budget."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from nrecur import NRecurrence
from nrecur.analysis.das import random_basis
from nrecur.analysis.edit import edit_belief, edit_problems, method_candidates
from nrecur.analysis.edit_subspace import _swap, fit_edit_subspace, subspace_hooks, subspace_width
from nrecur.model import GPT, GPTConfig

from test_analysis_edit import LENGTH, POSITION, TASK, problems, untrained  # noqa: F401  (the edit tests' problems and model)


@pytest.fixture(scope="module")
def model(untrained) -> GPT:
    return untrained


def test_the_swap_sets_the_donors_coordinates_along_the_basis_and_leaves_the_rest():
    generator = torch.Generator().manual_seed(0)
    base, source = torch.randn(3, 7, 2, 4, generator=generator), torch.randn(3, 7, 2, 4, generator=generator)  # [batch, pos, head, d_head]
    basis = random_basis(8, 3, generator)
    edited = _swap(source, basis, slice(0, 5))(base, None)
    flat, flat_source, flat_edited = base.flatten(2), source.flatten(2), edited.flatten(2)
    inside = basis @ basis.T
    torch.testing.assert_close(flat_edited[:, :5] @ inside, flat_source[:, :5] @ inside)  # the donor's coordinates
    torch.testing.assert_close(flat_edited[:, :5] - flat_edited[:, :5] @ inside, flat[:, :5] - flat[:, :5] @ inside)  # the complement kept
    torch.testing.assert_close(edited[:, 5:], base[:, 5:])  # after p: untouched


@pytest.mark.parametrize("hook", ["blocks.0.attn.hook_v", "blocks.1.hook_resid_pre"])
def test_a_subspace_edit_of_full_rank_is_the_patch(model, problems, hook):
    width = subspace_width(model, hook)
    full = random_basis(width, width, torch.Generator().manual_seed(1))
    kwargs = dict(position=POSITION, hook=hook, donor=problems.donor)
    patched = edit_belief(model, problems.tokens, problems.period, problems.target, method="patch", **kwargs)
    swapped = edit_belief(model, problems.tokens, problems.period, problems.target, method="subspace", basis=full, **kwargs)
    torch.testing.assert_close(swapped.log_probs, patched.log_probs, atol=1e-5, rtol=1e-5)
    # and a subspace of lower rank is not (the model reads more than one direction there)
    low = edit_belief(model, problems.tokens, problems.period, problems.target, method="subspace", basis=full[:, :1], **kwargs)
    assert (low.log_probs - patched.log_probs).abs().max() > 1e-3


def _objective(model, hook, problems, basis):
    with torch.no_grad():
        edited = edit_belief(model, problems.tokens, problems.period, problems.target, position=POSITION, method="subspace", hook=hook, donor=problems.donor, basis=basis)
    desired = torch.as_tensor(problems.desired[:, POSITION:])
    return float(-(desired * edited.log_probs[:, POSITION:]).sum(-1).mean())


def test_the_fit_lowers_its_objective_from_its_starting_basis(model, problems):
    hook = "blocks.0.attn.hook_v"
    start = fit_edit_subspace(model, hook, problems, ranks=(2,), steps=0, batch_size=16, lr=0.05, seed=0)
    fitted = fit_edit_subspace(model, hook, problems, ranks=(2,), steps=150, batch_size=16, lr=0.05, seed=0)
    torch.testing.assert_close(start.T @ start, torch.eye(2), atol=1e-5, rtol=0)
    torch.testing.assert_close(fitted.T @ fitted, torch.eye(2), atol=1e-5, rtol=0)
    assert _objective(model, hook, problems, fitted) < _objective(model, hook, problems, start) - 0.02
    assert all(p.requires_grad for p in model.parameters())  # the model's parameters are as they were


def test_ranks_wider_than_the_hook_are_refused_with_its_width(model, problems):
    hook = "blocks.0.attn.hook_v"
    width = subspace_width(model, hook)
    with pytest.raises(ValueError, match=rf"width {width}; ranks must lie in 1\.\.{width}"):
        fit_edit_subspace(model, hook, problems, ranks=(width + 1, 2 * width), steps=0, batch_size=16, lr=0.05, seed=0)
    assert fit_edit_subspace(model, hook, problems, ranks=(2, 2 * width), steps=0, batch_size=16, lr=0.05, seed=0).shape == (width, 2)


def test_the_subspace_candidates_name_their_hook_and_rank_within_the_budget(model):
    candidates = [c for c in method_candidates(model, (2, 16)) if c.method == "subspace"]
    assert sorted({c.rank for c in candidates}) == [2, 16]
    assert {c.hook for c in candidates} == set(subspace_hooks(model)) == {"blocks.0.attn.hook_v", "blocks.0.hook_resid_mid", "blocks.1.hook_resid_pre"}
    assert not any(c.hook == "blocks.0.hook_resid_pre" for c in candidates)  # the embeddings are the ceiling's
    for c in candidates:
        budget = c.budget(model, POSITION, 3)
        assert budget.hooks == (c.hook,) and budget.positions == "0..p" and budget.rank == c.rank <= 16 and f"k={c.rank}" in c.name
        assert not c.persistent and not c.automatic(model)
    assert not any(c.method == "subspace" for c in method_candidates(model))


def test_subspace_ranks_outside_the_budget_are_refused():
    from nrecur.analysis import ANALYSES, OptionError

    for ranks in ((32,), (8, 4), ()):
        with pytest.raises(OptionError, match="subspace_ranks"):
            ANALYSES["edit"].make_options({"subspace_ranks": ranks})
    assert ANALYSES["edit"].make_options({"subspace_ranks": (8,)}).subspace_ranks == (8,)
