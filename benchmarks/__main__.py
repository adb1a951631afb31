"""``python -m benchmarks SCENARIO [options]`` (what ``./run bench SCENARIO`` runs)."""

import sys

from . import main

sys.exit(main())
