"""The layers our agents share: CleanRL's initialisation and its tanh MLP.

Both follow CleanRL's ``ppo.py`` / sb3's ``MlpPolicy`` (orthogonal weights, gain sqrt(2) in
hidden layers, zero bias), which the PPO comparisons in BENCHMARKS.md rely on. Moving a
layer's construction here changes no parameter: the init calls draw from the global
generator in the same order (the goldens' bitwise checks guard it).
"""

from __future__ import annotations

import math

from torch import nn

__all__ = ["layer_init", "tanh_mlp"]


def layer_init(layer: nn.Linear | nn.Conv2d, std: float = math.sqrt(2)) -> nn.Module:
    """CleanRL init, in place: orthogonal weights with gain ``std``, zero bias."""
    nn.init.orthogonal_(layer.weight, std)
    nn.init.constant_(layer.bias, 0.0)
    return layer


def tanh_mlp(
    in_size: int, hidden_sizes: tuple[int, ...], out_size: int, out_std: float
) -> nn.Sequential:
    """``Linear -> Tanh`` per hidden size, then a linear output initialised with gain
    ``out_std`` (0.01 for policy logits, 1.0 for a value, as sb3/CleanRL).

    Returns:
        ``(N, in_size)`` float32 -> ``(N, out_size)``.
    """
    layers: list[nn.Module] = []
    for size in hidden_sizes:
        layers += [layer_init(nn.Linear(in_size, size)), nn.Tanh()]
        in_size = size
    layers.append(layer_init(nn.Linear(in_size, out_size), std=out_std))
    return nn.Sequential(*layers)
