"""A training worker process: ``python -m nrecur.jobs.worker RUN_DIR [--no-progress]``.

Resumes (or starts) the run folder ``RUN_DIR`` and prints one line when it
ends. Jobs start workers so that each training has its own process, its own
thread count and ``OMP_WAIT_POLICY=PASSIVE`` (see :mod:`nrecur.jobs.main`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from nrecur.train import resume


def main(argv: list[str]) -> int:
    folder = Path(argv[0])
    result = resume(folder, progress=False if "--no-progress" in argv else folder.name)
    print(f"{folder}: {result.stop_reason} after {result.steps} steps, {result.seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
