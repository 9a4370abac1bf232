"""The progress chart of a rollout (admin page and /fleet/), as plain data an inline SVG is drawn from: one stacked
bar per stage, its segments the share of the stage's devices in each state. No JavaScript, no library."""

from dataclasses import dataclass

from .staging import StageProgress

WIDTH = 480
BAR_HEIGHT = 18
GAP = 10
LABEL_WIDTH = 90
# (count, the sensorsync.css tone, the legend's words): deployed, failed, offline, then the rest in flight.
SEGMENTS = (
    ("deployed", "deployed", "deployed"),
    ("failed", "failed", "failed"),
    ("offline", "offline", "offline"),
    ("draft", "draft", "in draft mode"),
    ("in_flight", "pending", "on the way"),
)


@dataclass(frozen=True)
class Segment:
    x: float
    width: float
    tone: str
    count: int
    title: str


@dataclass(frozen=True)
class Bar:
    y: int
    label: str
    targeted: int
    segments: list[Segment]


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    label_width: int
    bar_height: int
    bars: list[Bar]
    legend: list[tuple[str, str]]


def _counts(stage: StageProgress) -> dict[str, int]:
    done = stage.deployed + stage.failed + stage.offline + stage.draft
    return {
        "deployed": stage.deployed,
        "failed": stage.failed,
        "offline": stage.offline,
        "draft": stage.draft,
        "in_flight": max(stage.targeted - done, 0),
    }


def progress_chart(stages: list[StageProgress]) -> Chart:
    """A bar per stage, as wide as the largest stage's device count (an empty stage draws an empty track)."""
    scale_max = max((s.targeted for s in stages), default=0) or 1
    track = WIDTH - LABEL_WIDTH
    bars = []
    for index, stage in enumerate(stages):
        x = float(LABEL_WIDTH)
        segments = []
        for key, tone, words in SEGMENTS:
            count = _counts(stage)[key]
            if not count:
                continue
            width = track * count / scale_max
            segments.append(Segment(round(x, 1), round(width, 1), tone, count, f"{count} {words}"))
            x += width
        bars.append(Bar(index * (BAR_HEIGHT + GAP), f"{index + 1}: {stage.label}", stage.targeted, segments))
    height = max(len(stages) * (BAR_HEIGHT + GAP) - GAP, BAR_HEIGHT)
    return Chart(WIDTH, height, LABEL_WIDTH, BAR_HEIGHT, bars, [(tone, words) for _key, tone, words in SEGMENTS])
