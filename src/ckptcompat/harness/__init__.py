"""ckptcompat.harness."""
