"""Studies: the proposal's questions answered with sweeps of training runs and the analyses.

Each study is one module with one public function that a ``nrecur`` command calls
(and a spec or script in ``examples/`` reruns).
"""

from nrecur.studies.grokking import GrokkingResult, classify, grokking_diagram
from nrecur.studies.icl_rate import IclRateResult, icl_rate
from nrecur.studies.modular_diversity import ModularDiversityResult, modular_diversity
from nrecur.studies.minimal_arch import MinimalArchResult, candidates, minimal_arch

__all__ = ["GrokkingResult", "IclRateResult", "MinimalArchResult", "ModularDiversityResult", "candidates", "classify", "grokking_diagram", "icl_rate", "minimal_arch", "modular_diversity"]
