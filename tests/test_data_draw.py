"""Training batches of many sources at once (an ensemble's members) are the ones each source gives alone."""

import numpy as np

from nrecur import NRecurrence
from nrecur.tasks import Mess3
from nrecur.train.data import FiniteData, OnlineData, draw_batches


def test_draw_batches_equals_each_sources_own_batch():
    det, noisy = NRecurrence(), NRecurrence(p_noise=0.1, p_transition=0.05)
    sources = [
        OnlineData(det, 33, 16, seed=1),
        OnlineData(noisy, 33, 16, seed=2),  # another task
        OnlineData(det, 33, 16, seed=3),
        OnlineData(det, 21, 16, seed=4),  # another length
        OnlineData(det, 33, 8, seed=5),  # another batch size
        OnlineData(det, 33, 16, seed=6, held_out=frozenset({(2, 0)})),  # held-out rules: drawn alone
        FiniteData(det, 33, size=40, batch_size=16, seed=7),
        OnlineData(Mess3(), 17, 16, seed=8),  # a kind without its own sample_many
    ]
    for step in (0, 5):
        drawn = draw_batches(sources, step)
        assert len(drawn) == len(sources)
        for source, batch in zip(sources, drawn):
            np.testing.assert_array_equal(batch, source.batch(step))
