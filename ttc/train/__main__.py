"""`python -m ttc.train`: runs `python -m ttc.builtin.train` (rebuild and measure the built-in pair)."""

import sys

from ttc.builtin.train.__main__ import main

sys.exit(main())
