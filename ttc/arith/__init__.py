"""Alias of `ttc.builtin.arith`, kept so that the documented `python -m ttc.arith` and `import ttc.arith`
keep working; the code lives in ttc/builtin/arith/."""

from ttc.builtin.arith import *  # noqa: F401, F403
from ttc.builtin.arith import __all__  # noqa: F401
