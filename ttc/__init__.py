"""ttc: budgeted reasoning. Spend a fixed amount of inference compute on a problem, get a better answer."""

__version__ = "0.1.0"
