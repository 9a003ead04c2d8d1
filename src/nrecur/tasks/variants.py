"""Variants of n-recurrence (SPEC §2.3): what a rule change may change, where fake tokens come from.

Multipliers of the period used by the task's definition live here too.
"""

from __future__ import annotations

#: Fake tokens drawn from the last ``RECENT_WINDOW * n`` positions (SPEC §2.3): a multiplier of n.
RECENT_WINDOW = 3
#: Contexts shorter than ``IDENTIFIABLE_CONTEXT * max(periods)`` get a warning (SPEC §2.3): a multiplier of n.
IDENTIFIABLE_CONTEXT = 3
