"""Tests of the fuzz runner and its children (:mod:`ckptcompat.harness.fuzz`)."""
