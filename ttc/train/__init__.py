"""Alias of `ttc.builtin.train`, kept so that the documented `python -m ttc.train ...` keeps working; the
training recipe lives in ttc/builtin/train/."""
