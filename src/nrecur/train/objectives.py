"""Training objectives: what the model is asked to predict at each position.

* ``next_token``: cross-entropy with the observed next token — the model only
  ever sees samples, as a language model does. This is the research setting.
* ``observer``: cross-entropy with the exact observer's predictive
  distribution (distillation). Same optimum — the Bayes predictive — but far
  less gradient noise, since each position carries the whole distribution
  instead of one sample of it. Useful as a reference for how fast a model
  *could* learn; it tells the model the answer's uncertainty, so results about
  in-context learning from data should use ``next_token``.

An objective is ``fn(model, tokens [batch, pos + 1], task) -> scalar loss``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from nrecur.tasks import Task


def next_token_loss(model: nn.Module, tokens: Tensor, task: Task) -> Tensor:
    """Mean -log q(x[i+1] | x[0..i]) over ``tokens [batch, pos + 1]``: inputs ``[:, :-1]``, targets ``[:, 1:]``."""
    logits = model(tokens[:, :-1])  # [batch, pos, vocab]
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), tokens[:, 1:].reshape(-1))


def observer_loss(model: nn.Module, tokens: Tensor, task: Task) -> Tensor:
    """Mean cross-entropy between the observer's predictive and the model's, over all ``pos`` positions.

    Equals KL(observer || model) plus the observer's entropy (a constant for the model).
    """
    inputs = tokens[:, :-1]  # [batch, pos]
    predictive = task.posterior(inputs.cpu().numpy()).predictive  # [batch, pos, vocab] float64
    target = torch.as_tensor(np.asarray(predictive), dtype=torch.float32, device=tokens.device)
    log_q = F.log_softmax(model(inputs), dim=-1)  # [batch, pos, vocab]
    return -(target * log_q).sum(-1).mean()


OBJECTIVES: dict[str, Callable[[nn.Module, Tensor, Task], Tensor]] = {
    "next_token": next_token_loss,
    "observer": observer_loss,
}
"""``TrainConfig.objective`` → loss function."""
