"""``python -m kernel_model``: the mmulab command."""

import sys

from kernel_model.cli import main

sys.exit(main())
