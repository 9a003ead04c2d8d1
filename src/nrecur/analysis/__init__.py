"""Analyses that open a trained model up and compare it with the exact observer (SPEC §5).

One module per method; each registers itself in :data:`ANALYSES` (``nrecur analyze --what NAME``).
"""

from nrecur.analysis.base import ANALYSES, write_analysis
from nrecur.analysis.probes import ProbeResult, probes
from nrecur.analysis.geometry import GeometryResult, geometry  # noqa: E402 - registration order: probes first
from nrecur.analysis.updates import updates  # noqa: E402
from nrecur.analysis.failure import failure  # noqa: E402
from nrecur.analysis.heads import heads  # noqa: E402
from nrecur.analysis.progress import progress  # noqa: E402
from nrecur.analysis.patching import PatchingResult, patching  # noqa: E402
from nrecur.analysis.prior import PriorResult, prior  # noqa: E402
from nrecur.analysis.edit import EditResult, edit, edit_belief  # noqa: E402

__all__ = ["ANALYSES", "EditResult", "GeometryResult", "edit", "edit_belief", "ProbeResult", "failure", "geometry", "PatchingResult", "heads", "patching", "prior", "PriorResult", "probes", "progress", "updates", "write_analysis"]
