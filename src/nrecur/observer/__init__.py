"""Exact observers: the fast n-recurrence filter, the dense HMM filter, modular arithmetic, the Bayes floor."""

from nrecur.observer.bayes import BayesCrossEntropy, bayes_cross_entropy
from nrecur.observer.hmm import hmm_posterior
from nrecur.observer.modular import ModularPosterior, modular_posterior
from nrecur.observer.nrecurrence import nrecurrence_posterior
from nrecur.observer.results import HMMPosterior, ImpossibleSequenceError, Posterior

__all__ = [
    "BayesCrossEntropy",
    "HMMPosterior",
    "ImpossibleSequenceError",
    "ModularPosterior",
    "Posterior",
    "bayes_cross_entropy",
    "hmm_posterior",
    "modular_posterior",
    "nrecurrence_posterior",
]
