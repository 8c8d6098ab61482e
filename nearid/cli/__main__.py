"""``python -m nearid.cli``: the same as the ``nearid`` console script (flows start their children this way)."""

import sys

from nearid.cli import main


sys.exit(main())
