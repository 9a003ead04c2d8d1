"""``python -m nrecur`` is the ``nrecur`` command."""

import sys

from nrecur.cli import main

sys.exit(main())
