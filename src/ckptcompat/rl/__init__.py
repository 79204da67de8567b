"""ckptcompat.rl."""
