"""Runs the conformance spec on every backend of the ``backend`` fixture (see conftest)."""

from .conformance import *  # noqa: F403
from .conformance_recovery import *  # noqa: F403
from .conformance_sweep import *  # noqa: F403
from .conformance_unreadable import *  # noqa: F403
