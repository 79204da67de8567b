"""ckptcompat.evaluation."""
