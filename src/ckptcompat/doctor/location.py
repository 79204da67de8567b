"""Where a checkpoint's storages were saved, and whether this machine can restore them.

``torch.save`` records a location tag per storage (the fourth field of its persistent id,
``("storage", type, key, location, numel)``): ``"cpu"``, ``"cuda:0"``, ``"mps"``,
``"xpu:0"``... ``torch.load`` without ``map_location`` restores each storage to its tag,
plain and weights-only alike, on every torch 2.4 ... 2.15 (``default_restore_location`` in
torch/serialization.py). A ``cuda`` tag therefore fails on a machine without CUDA
("Attempting to deserialize object on a CUDA device but torch.cuda.is_available() is
False. If you are running on a CPU-only machine, please use torch.load with
map_location=torch.device('cpu') ..."), and ``cuda:N`` fails where fewer than N + 1 devices
are visible ("Attempting to deserialize object on CUDA device N but
torch.cuda.device_count() is M"). ``map_location="cpu"`` loads the same tensors anywhere.

The per-version predictions of the doctor assume the storages can be restored; this
module says whether that holds here. The number of CUDA devices is read without torch:
NVIDIA's driver creates one ``/dev/nvidia<N>`` node per GPU, and ``CUDA_VISIBLE_DEVICES``
limits what a process sees (an empty value or ``-1`` hides every device). Tags of other
backends (``mps``, ``xpu``, ``hpu``...) need that backend, which the doctor cannot detect
without torch: they are reported as needing ``map_location`` unless the backend is known
here. Standard library only.
"""

from __future__ import annotations

import os
import platform
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

__all__ = ["DeviceCheck", "check_devices", "visible_cuda_devices"]

_CUDA = re.compile(r"cuda(?::(\d+))?\Z")
_NVIDIA_NODE = re.compile(r"nvidia(\d+)\Z")
#: Tags every torch restores on any machine: the CPU, and the meta device (no data).
_ANYWHERE = frozenset({"cpu", "meta"})
_FIX = 'torch.load(FILE, map_location="cpu") (or ckptcompat migrate, which loads to the CPU)'


def visible_cuda_devices(environ: Mapping[str, str] | None = None, dev: str = "/dev") -> int:
    """CUDA devices a process started here would see, read without importing torch.

    Counts the ``/dev/nvidia<N>`` nodes NVIDIA's driver creates per GPU (0 on a machine
    without the driver), then applies ``CUDA_VISIBLE_DEVICES`` when set: an empty value or
    one starting with ``-1`` hides every device, otherwise at most as many devices as it
    lists are visible.
    """
    environ = os.environ if environ is None else environ
    try:
        nodes = sum(1 for name in os.listdir(dev) if _NVIDIA_NODE.match(name))
    except OSError:
        nodes = 0
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return nodes
    listed = [item.strip() for item in visible.split(",") if item.strip()]
    if not listed or listed[0].startswith("-1"):
        return 0
    return min(nodes, len(listed))


@dataclass(frozen=True)
class DeviceCheck:
    """The storages' location tags and what they mean for a load here.

    Attributes:
        locations: location tag -> number of storages saved there, e.g. ``{"cuda:0": 4}``.
        cuda_devices: CUDA devices visible here (:func:`visible_cuda_devices`).
        problem: why ``torch.load`` without ``map_location`` fails (or may fail) here, on
            every torch version, plain and weights-only; None when every tag can be
            restored here.
        certain: True when the failure is certain (a ``cuda`` tag without the device,
            ``mps`` off macOS); False when it depends on a backend the doctor cannot see.
        fix: what to do instead; None when nothing is needed.
    """

    locations: dict[str, int]
    cuda_devices: int
    problem: str | None
    certain: bool
    fix: str | None

    @property
    def off_cpu(self) -> dict[str, int]:
        """The tags other than the CPU's (and meta): the devices the file was saved on."""
        return {tag: n for tag, n in self.locations.items() if tag not in _ANYWHERE}


def _unrestorable(tag: str, cuda_devices: int) -> tuple[str, bool] | None:
    """Why ``tag`` cannot be restored here and whether that is certain; None if it can."""
    if tag in _ANYWHERE:
        return None
    cuda = _CUDA.match(tag)
    if cuda is None:
        backend = tag.split(":", 1)[0]
        if backend == "mps" and platform.system() != "Darwin":
            return f"{tag} needs Apple's MPS backend, which only macOS has", True
        return f"{tag} needs torch's {backend} backend, which the doctor cannot see", False
    index = int(cuda.group(1) or 0)
    if cuda_devices == 0:
        return f"{tag} needs CUDA, and this machine has no visible CUDA device", True
    if index >= cuda_devices:
        return f"{tag} needs CUDA device {index}, and {cuda_devices} are visible here", True
    return None


def check_devices(locations: Iterable[str | None], cuda_devices: int) -> DeviceCheck:
    """Count ``locations`` (one tag per storage; None for a storage whose tag the scan
    could not read, ignored) and say whether a load without ``map_location`` can restore
    them on a machine with ``cuda_devices`` visible CUDA devices."""
    counts = dict(sorted(Counter(tag for tag in locations if tag is not None).items()))
    reasons = [r for tag in counts if (r := _unrestorable(tag, cuda_devices)) is not None]
    if not reasons:
        return DeviceCheck(counts, cuda_devices, None, True, None)
    certain = any(sure for _, sure in reasons)
    problem = "; ".join(reason for reason, _ in reasons) + (
        ": torch.load without map_location "
        + ("fails" if certain else "may fail")
        + " here on every torch version, plain and weights-only"
    )
    return DeviceCheck(counts, cuda_devices, problem, certain, _FIX)
