"""ckptcompat.agents."""
