"""Hostile and malformed files against every entry point (issue 23).

* :mod:`.crafted`: small reproducers of each failure found by hand (deep nesting, a
  deflated opcode bomb, huge declared lengths, a storage-key list holding a list, a
  global named with a lone surrogate, edited tensor bytes and local headers).
* :mod:`.mutate`: seeded mutations of real checkpoints, one function per kind.
* :mod:`.runner`: runs each case through each entry point in a forked child (a crash is
  a signal, not a dead run), with a timeout and the child's peak memory, and judges it;
  ``python -m ckptcompat.harness.fuzz`` (``nox -s fuzz``) and the test suite drive it.
"""
