"""Studies: the proposal's questions answered with sweeps of training runs and the analyses.

Each study is one module with one public function that a ``nrecur`` command calls
(and a spec or script in ``examples/`` reruns).
"""

from nrecur.studies.faster_default import FasterDefaultResult, faster_default
from nrecur.studies.grokking import GrokkingResult, classify, grokking_diagram
from nrecur.studies.icl_rate import IclRateResult, icl_rate
from nrecur.studies.minimal_arch import MinimalArchResult, candidates, minimal_arch
from nrecur.studies.modular_diversity import ModularDiversityResult, modular_diversity
from nrecur.studies.rule_diversity import RuleDiversityResult, rule_diversity
from nrecur.studies.spec import STUDIES, load_study, run_study
from nrecur.studies.variants import VARIANTS, VariantsResult, variants_study

__all__ = [
    "STUDIES",
    "VARIANTS",
    "FasterDefaultResult",
    "GrokkingResult",
    "IclRateResult",
    "MinimalArchResult",
    "ModularDiversityResult",
    "RuleDiversityResult",
    "VariantsResult",
    "candidates",
    "classify",
    "faster_default",
    "grokking_diagram",
    "icl_rate",
    "load_study",
    "minimal_arch",
    "modular_diversity",
    "rule_diversity",
    "run_study",
    "variants_study",
]  # fmt: skip
