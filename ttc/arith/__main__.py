"""`python -m ttc.arith`: runs `python -m ttc.builtin.arith` (the problem writer)."""

import sys

from ttc.builtin.arith.__main__ import main

sys.exit(main())
