"""Write the example's two old-format checkpoints into checkpoints/ (run once, in any cell).

``python make_checkpoints.py`` with team_agents importable (installed, or src on PYTHONPATH):
* ``mlp__e3__s384__t0__sc0.pt``: G2, a whole pickled MLPAgent (``torch.save(agent)``);
* ``mlp_state_dict.pt``: a bare state_dict of the same agent.
Seeded, so the weights are the same every time (the zip bytes may differ across torch).
"""

from pathlib import Path

import torch
from team_agents import MLPAgent

from ckptcompat.checkpoint import legacy

out = Path(__file__).parent / "checkpoints"
out.mkdir(exist_ok=True)
torch.manual_seed(0)
agent = MLPAgent(hidden=16)
legacy.write_g2(agent, out / legacy.g2_filename("mlp", 3, agent_step=384))
legacy.write_state_dict(agent.state_dict(), out / "mlp_state_dict.pt")
print(sorted(p.name for p in out.iterdir()))
