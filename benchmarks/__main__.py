"""``python -m netra_actors.bench SCENARIO [options]``."""

import sys

from . import main

sys.exit(main())
