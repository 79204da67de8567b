"""What a training run is given and what it gives back: its config and its result.

The config is saved in every trainer state (``extra["trainer_config"]``, as
:meth:`TrainerConfig.to_json`) so that a resume continues with exactly the settings the
run started with; :mod:`ckptcompat.rl.trainer` runs it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from ckptcompat.agents.registry import validate_config
from ckptcompat.errors import InputError
from ckptcompat.rl.ppo import PPOConfig

__all__ = [
    "CHECKPOINT_FORMATS",
    "DEFAULT_AGENT",
    "MLP_AGENT",
    "RECURRENT_AGENT",
    "RESUME_SOURCES",
    "TrainResult",
    "TrainerConfig",
    "check_choice",
]

#: Default agent: the LSTM actor-critic with separate actor and critic LSTMs (an MLP encoder
#: on vector observations, a CNN on images); default since issue 21, where it learned
#: CartPole as fast as sb3-contrib's RecurrentPPO and the shared-trunk agent did not.
DEFAULT_AGENT = "ckptcompat.agents.split_lstm.SplitLSTMAgent"
#: The earlier default, one LSTM trunk shared by actor and critic (the goldens of
#: generations 1 and 2 hold it): select it with ``agent_class_path=RECURRENT_AGENT``.
RECURRENT_AGENT = "ckptcompat.agents.recurrent.RecurrentAgent"
#: The feed-forward actor-critic (CleanRL ppo.py's, sb3's MlpPolicy): select it with
#: ``TrainerConfig(agent_class_path=MLP_AGENT)``; PPO trains it on flat minibatches.
MLP_AGENT = "ckptcompat.agents.mlp.MLPAgent"

#: ``safe``: rank 0's safe files only; ``dcp``: those plus a DCP directory from every rank.
CHECKPOINT_FORMATS = ("safe", "dcp")
#: Where a resume takes the agent's and optimizer's state from (RNG and counters always
#: come from the safe trainer state).
RESUME_SOURCES = ("safe", "dcp")


def check_choice(name: str, value: str, choices: tuple[str, ...]) -> str:
    """Return ``value`` if it is one of ``choices``.

    Raises:
        InputError: otherwise (naming ``name`` and the choices).
    """
    if value not in choices:
        raise InputError(
            f"unknown {name} {value!r}",
            expected=f"one of {list(choices)}",
            found=repr(value),
        )
    return value


@dataclass(frozen=True)
class TrainerConfig:
    """Everything a run needs besides its name, directory and target epoch count.

    Saved in every trainer state (``extra["trainer_config"]``) so that a resume continues with
    exactly the settings the run started with.

    Attributes:
        env_id: a key of :data:`ckptcompat.rl.envs.ENV_SPECS`.
        seed: seeds torch, numpy and python once, and (plus the epoch) the env resets.
        checkpoint_every: save agent + trainer state after every this many epochs (>= 1).
            Every sub-env is also reset at these epochs, so no training episode is longer
            than ``checkpoint_every * num_steps`` steps: keep that well above the env's
            episode limit (default 50 * 32 = 1,600 steps vs CartPole's 500).
        agent_class_path: the agent class, ``"package.module.ClassName"``.
        agent_kwargs: constructor arguments besides the spaces (JSON primitives), e.g.
            ``{"hidden_size": 64}``; ``observation_space``/``action_space`` come from the env.
        ppo: PPO hyperparameters.
    """

    env_id: str = "CartPole-v1"
    seed: int = 0
    checkpoint_every: int = 50
    agent_class_path: str = DEFAULT_AGENT
    agent_kwargs: dict[str, Any] = field(default_factory=dict)
    ppo: PPOConfig = field(default_factory=PPOConfig)

    def __post_init__(self) -> None:
        if self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be >= 1, got {self.checkpoint_every}")
        validate_config(self.agent_kwargs, name="agent_kwargs")

    def to_json(self) -> dict[str, Any]:
        """JSON primitives; :meth:`from_json` inverts it."""
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TrainerConfig:
        """Rebuild from :meth:`to_json` output."""
        return cls(**{**data, "ppo": PPOConfig(**data["ppo"])})


@dataclass
class TrainResult:
    """Where a :meth:`Trainer.train` call left the run.

    Attributes:
        run: run name.
        epoch: completed epochs (the checkpoint version of ``uri``).
        agent_step: env steps taken by the run, all processes together.
        uri: ``file://`` URI of the last agent checkpoint, None if none was saved yet.
        stats: loss stats of the last PPO update (:func:`~ckptcompat.rl.ppo.ppo_update`).
        episode_returns: returns of the episodes finished in this call, in order.
        total_time_s: wall time of the run, seconds (rank 0's in a distributed run).
        contract: the resume contract of a resumed run
            (:class:`~ckptcompat.rl.resume_contract.ResumeContract`), None otherwise.
    """

    run: str
    epoch: int
    agent_step: int
    uri: str | None
    stats: dict[str, float]
    episode_returns: list[float]
    total_time_s: float
    contract: Any = None
