"""ckptcompat.policy."""
