"""Jobs: what runs many trainings and ties them together — the main job (``nrecur run``).

A job only calls the training API (``nrecur.train``) and reads run folders; it
never reaches into the training loop.
"""

from nrecur.jobs.main import MainJobResult, RunRow, run_main_job

__all__ = ["MainJobResult", "RunRow", "run_main_job"]
