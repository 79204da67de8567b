"""Matrix panels (producer x consumer per artifact kind and loader) and their heatmap PNG.

A *panel* groups the cells of one scenario, artifact kind and loader (evaluations: one
panel per evaluating cell Z) on a producer x consumer grid; a grid square holds that pair's
cells for every agent. The Markdown table and the PNG both draw from :func:`panels`.
Squares are coloured by the worst outcome (:data:`OUTCOME_COLOURS`) and marked by the worst
status against the baseline (:data:`MARKS`). matplotlib is imported only by
:func:`render_png` (the ``report`` extra).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ckptcompat.harness import versions
from ckptcompat.harness.matrix import RANK, MatrixCell

__all__ = [
    "EMPTY_COLOUR",
    "MARKS",
    "MISSING_COLOUR",
    "OUTCOME_COLOURS",
    "Panel",
    "cell_order",
    "mark",
    "panels",
    "render_png",
    "worst_outcome",
]

#: Square colour per worst outcome (colour-blind-safe-ish: green, grey, vermilion, purple).
OUTCOME_COLOURS: dict[str, str] = {
    "pass": "#1b7837",
    "skip": "#bababa",
    "fail": "#d6604d",
    "error": "#542788",
}
MISSING_COLOUR = "#ffffff"
#: A square with no cell at all (e.g. train off the diagonal).
EMPTY_COLOUR = "#eeeeee"
#: Mark per status, most severe first; a square shows its most severe cell's mark.
MARKS: dict[str, str] = {
    "regression": "!",
    "missing": "-",
    "unknown": "?",
    "unexpected_pass": "+",
    "expected": "✗",  # ok, but not a pass: a known failure with its reason in the baseline
    "ok": "✓",
}
_SCENARIOS = ("train", "resume", "evaluate", "golden")
_LOADERS = ("safe", "allowlist", "naive", "trusted")
_KINDS = (
    "safe_v1",
    "trainer_state",
    "ppo_update",
    "evaluation",
    "g1",
    "g2",
    "state_dict",
    "rollout",
    "post_update",
)


def cell_order(label: str | None) -> tuple[tuple[int, ...], bool, str]:
    """Sort key of a cell label: by torch release, a numpy override after its plain cell
    (``t24, t24np1, t25``); labels of no cell last."""
    for cell in versions.CELLS:
        if cell.id == label:
            return tuple(int(x) for x in cell.torch.split(".")), cell.numpy is not None, ""
    return (1 << 30,), False, str(label)


def _index(seq: Sequence[str], item: str) -> int:
    return seq.index(item) if item in seq else len(seq)


@dataclass
class Panel:
    """One heatmap panel / Markdown row.

    Attributes:
        scenario, kind, loader: what the panel shows; evaluator: the evaluating cell of an
            ``evaluate`` panel, else None.
        producers, consumers: axis labels (cell ids), in the cell table's order.
        grid: ``(producer, consumer)`` -> the cells of that square (one per agent).
    """

    scenario: str
    kind: str
    loader: str
    evaluator: str | None
    producers: list[str] = field(default_factory=list)
    consumers: list[str] = field(default_factory=list)
    grid: dict[tuple[str, str], list[MatrixCell]] = field(default_factory=dict)

    @property
    def title(self) -> str:
        """E.g. ``"golden g1 / allowlist"``, ``"evaluate under t26 / safe"``."""
        if self.scenario == "evaluate":
            return f"evaluate under {self.evaluator} / {self.loader}"
        if self.scenario == "golden":
            return f"golden {self.kind} / {self.loader}"
        return f"{self.scenario} {self.kind} / {self.loader}"


def panels(cells: Iterable[MatrixCell]) -> list[Panel]:
    """Group cells into panels, ordered scenario, loader, kind (evaluate: by evaluator)."""
    found: dict[tuple[str, str, str, str | None], Panel] = {}
    for cell in cells:
        evaluator = cell.evaluator if cell.scenario == "evaluate" else None
        id_ = (cell.scenario, cell.kind, cell.loader, evaluator)
        panel = found.setdefault(id_, Panel(cell.scenario, cell.kind, cell.loader, evaluator))
        producer, consumer = str(cell.producer), str(cell.consumer)
        panel.grid.setdefault((producer, consumer), []).append(cell)
    for panel in found.values():
        panel.producers = sorted({p for p, _ in panel.grid}, key=cell_order)
        panel.consumers = sorted({c for _, c in panel.grid}, key=cell_order)
    return sorted(
        found.values(),
        key=lambda p: (
            _index(_SCENARIOS, p.scenario),
            _index(_LOADERS, p.loader),
            _index(_KINDS, p.kind),
            p.kind,
            cell_order(p.evaluator),
        ),
    )


def worst_outcome(cells: Iterable[MatrixCell]) -> str | None:
    """The worst recorded outcome of ``cells`` (None when none has a record)."""
    outcomes = [c.outcome for c in cells if c.outcome is not None]
    return max(outcomes, key=RANK.__getitem__) if outcomes else None


def mark(cells: Iterable[MatrixCell]) -> str:
    """The most severe :data:`MARKS` entry among ``cells`` ("·" when there are none)."""
    order = list(MARKS)
    statuses = ["expected" if c.status == "ok" and c.outcome != "pass" else c.status for c in cells]
    return MARKS[min(statuses, key=order.index)] if statuses else "·"


def _colour(square: Sequence[MatrixCell]) -> str:
    if not square:
        return EMPTY_COLOUR
    return OUTCOME_COLOURS.get(worst_outcome(square) or "", MISSING_COLOUR)


def render_png(all_panels: Sequence[Panel], path: str | Path, *, columns: int = 5) -> Path:
    """Draw every panel as a producer x consumer heatmap into ``path`` (PNG).

    Raises:
        ImportError: matplotlib is not installed (install the ``report`` extra).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Patch

    rows = max(1, -(-len(all_panels) // columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.1 * columns, 2.9 * rows + 0.8), squeeze=False
    )
    for ax, panel in zip(axes.flat, all_panels, strict=False):
        image = [
            [to_rgb(_colour(panel.grid.get((p, c), []))) for c in panel.consumers]
            for p in panel.producers
        ]
        ax.imshow(image, aspect="auto")
        for i, p in enumerate(panel.producers):
            for j, c in enumerate(panel.consumers):
                square = panel.grid.get((p, c), [])
                ax.text(
                    j,
                    i,
                    mark(square) if square else "",
                    ha="center",
                    va="center",
                    fontsize=11,
                    color="black" if worst_outcome(square) == "skip" else "white",
                )
        ax.set_xticks(range(len(panel.consumers)), panel.consumers, fontsize=8)
        ax.set_yticks(range(len(panel.producers)), panel.producers, fontsize=8)
        ax.set_title(panel.title, fontsize=9)
        ax.set_xlabel("consumer" if panel.scenario != "evaluate" else "resumed under", fontsize=8)
        ax.set_ylabel("producer", fontsize=8)
    for ax in list(axes.flat)[len(all_panels) :]:
        ax.axis("off")
    handles = [Patch(color=colour, label=outcome) for outcome, colour in OUTCOME_COLOURS.items()]
    handles.append(Patch(facecolor=MISSING_COLOUR, edgecolor="black", label="no record"))
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=len(handles),
        fontsize=9,
        title="worst outcome over agents; marks: ✓ pass  ✗ expected failure  "
        "! regression  + unexpected pass  - missing  ? not in baseline",
    )
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
