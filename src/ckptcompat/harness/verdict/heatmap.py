"""Matrix panels (producer x consumer per artifact kind and loader) and their heatmap PNG.

A *panel* groups the cells of one scenario, artifact kind and loader (evaluations: one
panel per evaluating cell Z) on a producer x consumer grid; a grid square holds that pair's
cells for every agent. The Markdown table, the HTML table and the PNG all draw from
:func:`panels` and :func:`square_status`: a square takes the most severe baseline status of
its cells, which sets both its mark (:data:`MARKS`) and its colour (:data:`STATUS_COLOURS`),
so a regression is red and nothing else is. Checks of a team's own checkpoint files have
no producing cell; their producer axis reads :data:`NO_PRODUCER`. matplotlib is imported
only by :func:`render_png` (the ``report`` extra).
"""

from __future__ import annotations

import textwrap
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from ckptcompat.harness import versions
from ckptcompat.harness.verdict.matrix import MatrixCell, status_line

if TYPE_CHECKING:
    from matplotlib.axes import Axes

__all__ = [
    "EMPTY_COLOUR",
    "LEGEND_ORDER",
    "MARKS",
    "NO_PRODUCER",
    "STATUS_COLOURS",
    "STATUS_LABELS",
    "Panel",
    "cell_order",
    "mark",
    "mark_colour",
    "panels",
    "render_png",
    "square_colour",
    "square_status",
]

#: Square status -> mark, most severe first; a square shows its most severe cell's.
#: ``expected`` is a known failure: status ok, but not a pass (its reason in the baseline).
MARKS: dict[str, str] = {
    "regression": "!",
    "missing": "-",
    "unknown": "?",
    "unexpected_pass": "+",
    "expected": "✗",
    "ok": "✓",
}
#: Square status -> colour. Red is for regressions only; a known failure is grey, so a run
#: with a regression looks different from a green run at a glance.
STATUS_COLOURS: dict[str, str] = {
    "regression": "#d7191c",
    "missing": "#ffffff",
    "unknown": "#fee08b",
    "unexpected_pass": "#2c7bb6",
    "expected": "#bdbdbd",
    "ok": "#1b7837",
}
#: Square status -> legend text (Markdown, HTML and PNG).
STATUS_LABELS: dict[str, str] = {
    "regression": "regression (worse than the baseline)",
    "missing": "no record",
    "unknown": "not in the baseline",
    "unexpected_pass": "unexpected pass (better than the baseline)",
    "expected": "known failure (reason in the baseline)",
    "ok": "pass",
}
#: The statuses in the order the legends list them.
LEGEND_ORDER: tuple[str, ...] = (
    "ok",
    "expected",
    "regression",
    "unexpected_pass",
    "missing",
    "unknown",
)
#: A square with no cell at all (e.g. train off the diagonal): not applicable.
EMPTY_COLOUR = "#f4f4f4"
#: Producer label of checks on a file no cell produced (a team's own checkpoints).
NO_PRODUCER = "file"
_SCENARIOS = ("train", "resume", "evaluate", "golden", "checkpoints", "doctor", "dcp")
_LOADERS = ("safe", "allowlist", "naive", "trusted", "dcp")
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


def _kind_order(kind: str) -> tuple[int, int, str]:
    """Golden generation first (``<kind>_gen<N>``; none: 1), then the kind's order."""
    base, _, generation = kind.rpartition("_gen")
    if base and generation.isdigit():
        return int(generation), _index(_KINDS, base), kind
    return 1, _index(_KINDS, kind), kind


@dataclass
class Panel:
    """One heatmap panel / Markdown row.

    Attributes:
        scenario, kind, loader: what the panel shows; evaluator: the evaluating cell of an
            ``evaluate`` panel, else None.
        producers, consumers: axis labels (cell ids), in the cell table's order
            (:data:`NO_PRODUCER` for a file no cell produced).
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
        producer, consumer = cell.producer or NO_PRODUCER, str(cell.consumer)
        panel.grid.setdefault((producer, consumer), []).append(cell)
    for panel in found.values():
        panel.producers = sorted({p for p, _ in panel.grid}, key=cell_order)
        panel.consumers = sorted({c for _, c in panel.grid}, key=cell_order)
    return sorted(
        found.values(),
        key=lambda p: (
            _index(_SCENARIOS, p.scenario),
            p.scenario,
            _index(_LOADERS, p.loader),
            *_kind_order(p.kind),
            cell_order(p.evaluator),
        ),
    )


def square_status(cells: Iterable[MatrixCell]) -> str | None:
    """The most severe status (a key of :data:`MARKS`) among ``cells``; None for none.

    A cell that matches the baseline but does not pass counts as ``expected``.
    """
    order = list(MARKS)
    statuses = ["expected" if c.status == "ok" and c.outcome != "pass" else c.status for c in cells]
    return min(statuses, key=order.index) if statuses else None


def mark(cells: Iterable[MatrixCell]) -> str:
    """The mark of :func:`square_status` ("·" when there are no cells)."""
    status = square_status(cells)
    return MARKS[status] if status else "·"


def mark_colour(status: str | None) -> str:
    """The colour of a mark on a square of ``status``: white on the dark squares."""
    return "white" if status in ("regression", "unexpected_pass", "ok") else "black"


def square_colour(cells: Iterable[MatrixCell]) -> str:
    """The colour of :func:`square_status` (:data:`EMPTY_COLOUR` when there are no cells)."""
    status = square_status(cells)
    return STATUS_COLOURS[status] if status else EMPTY_COLOUR


def _draw_panel(ax: Axes, panel: Panel) -> None:
    from matplotlib.colors import to_rgb
    from matplotlib.patches import Rectangle

    image = [
        [to_rgb(square_colour(panel.grid.get((p, c), []))) for c in panel.consumers]
        for p in panel.producers
    ]
    # Square squares: a one-row panel is a strip, not one row stretched to the panel's height.
    ax.imshow(image, aspect="equal")
    for i, p in enumerate(panel.producers):
        for j, c in enumerate(panel.consumers):
            status = square_status(panel.grid.get((p, c), []))
            if status is None:
                continue
            ax.text(
                j, i, MARKS[status], ha="center", va="center", fontsize=11,
                color=mark_colour(status),
            )  # fmt: skip
            if status not in ("ok", "expected"):  # framed, so it shows even when printed grey
                ax.add_patch(
                    Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, edgecolor="black", lw=2)
                )
    ax.set_xticks(range(len(panel.consumers)), panel.consumers, fontsize=8)
    ax.set_yticks(range(len(panel.producers)), panel.producers, fontsize=8)
    ax.set_title(textwrap.fill(panel.title, 34), fontsize=9)
    ax.set_xlabel("consumer" if panel.scenario != "evaluate" else "resumed under", fontsize=8)
    ax.set_ylabel("producer" if panel.producers != [NO_PRODUCER] else "", fontsize=8)


def render_png(all_panels: Sequence[Panel], path: str | Path, *, columns: int = 5) -> Path:
    """Draw every panel as a producer x consumer heatmap into ``path`` (PNG), under a
    headline counting the cells by status (:func:`~ckptcompat.harness.verdict.matrix.status_line`),
    red when any cell differs from the baseline, and above a legend of every square status.

    Raises:
        ImportError: matplotlib is not installed (install the ``report`` extra).
    """
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    from matplotlib.patches import Patch

    rows = max(1, -(-len(all_panels) // columns))
    fig, axes = plt.subplots(
        rows, columns, figsize=(3.1 * columns, 2.9 * rows + 1.3), squeeze=False
    )
    for ax, panel in zip(axes.flat, all_panels, strict=False):
        _draw_panel(ax, panel)
    for ax in list(axes.flat)[len(all_panels) :]:
        ax.axis("off")
    cells = [c for panel in all_panels for square in panel.grid.values() for c in square]
    differs = any(c.status != "ok" for c in cells)
    fig.suptitle(
        "ckptcompat matrix: " + status_line(cells),
        fontsize=13,
        fontweight="bold",
        color=STATUS_COLOURS["regression"] if differs else STATUS_COLOURS["ok"],
    )
    handles = [
        Patch(
            facecolor=STATUS_COLOURS[status],
            edgecolor="black",
            lw=2 if status not in ("ok", "expected") else 0.5,
            label=f"{MARKS[status]} {STATUS_LABELS[status]}",
        )
        for status in LEGEND_ORDER
    ]
    handles.append(
        Patch(facecolor=EMPTY_COLOUR, edgecolor="black", lw=0.5, label="· not applicable")
    )
    fig.legend(
        handles=handles,
        loc="lower center",
        ncol=4,
        fontsize=9,
        title="each square: the most severe status over its agents",
    )
    fig.tight_layout(rect=(0, 1.1 / (2.9 * rows + 1.3), 1, 1 - 0.35 / (2.9 * rows + 1.3)))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
