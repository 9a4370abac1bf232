"""The fleet page's two charts as SVG geometry, computed on the server (the page needs no script): the
time-to-converge histogram and the hourly p50/p95 line chart on a log scale. Plain data in, coordinates out."""

import math
from dataclasses import dataclass

from django.utils import timezone

# Time-to-converge histogram buckets: (upper bound in seconds, label, bar tone).
BUCKETS = (
    (10, "< 10 s", ""),
    (30, "10–30 s", ""),
    (60, "30 s–1 min", ""),
    (300, "1–5 min", ""),
    (900, "5–15 min", "slow"),
    (3600, "15–60 min", "slow"),
    (4 * 3600, "1–4 h", "very-slow"),
    (math.inf, "> 4 h", "very-slow"),
)
# The hourly chart's logarithmic y axis.
LOG_TICKS = ((1, "1 s"), (10, "10 s"), (60, "1 min"), (600, "10 min"), (3600, "1 h"), (6 * 3600, "6 h"), (86400, "1 d"))

# Chart geometry (SVG user units; the SVG scales to its container).
WIDTH, HEIGHT = 560, 230
LEFT, RIGHT, TOP, BOTTOM = 48, 12, 20, 40


def duration_text(seconds: float | None) -> str:
    """ "4.2 s", "3 min 5 s", "2 h 10 min": short, and exact enough for an operator."""
    if seconds is None:
        return "-"
    if seconds < 10:
        return f"{seconds:.1f} s"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {seconds} s" if seconds and minutes < 10 else f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{hours // 24} d {hours % 24} h"


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    label: str
    count: int
    tone: str
    label_x: float


@dataclass(frozen=True)
class Tick:
    y: float
    label: str


def histogram(durations: list[float]) -> dict:
    """Bars of the time-to-converge histogram, already placed in the SVG's coordinates."""
    counts = [0] * len(BUCKETS)
    for seconds in durations:
        counts[next(index for index, (upper, _, _) in enumerate(BUCKETS) if seconds < upper)] += 1
    top = max(counts, default=0)
    scale_max = max(4, math.ceil(top / 4) * 4)  # four even gridline steps
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / len(BUCKETS)
    bar_w = slot * 0.72
    bars = []
    for index, ((_, label, tone), count) in enumerate(zip(BUCKETS, counts, strict=True)):
        height = plot_h * count / scale_max
        x = LEFT + index * slot + (slot - bar_w) / 2
        bars.append(
            Bar(
                x=round(x, 1),
                y=round(TOP + plot_h - height, 1),
                width=round(bar_w, 1),
                height=round(height, 1),
                label=label,
                count=count,
                tone=tone,
                label_x=round(x + bar_w / 2, 1),
            )
        )
    ticks = [Tick(y=round(TOP + plot_h - plot_h * step / 4, 1), label=str(scale_max * step // 4)) for step in range(5)]
    return {"bars": bars, "ticks": ticks, "empty": not durations, **_frame()}


def _frame() -> dict:
    return {
        "width": WIDTH,
        "height": HEIGHT,
        "left": LEFT,
        "right": WIDTH - RIGHT,
        "top": TOP,
        "bottom": HEIGHT - BOTTOM,
        "label_y": HEIGHT - BOTTOM + 16,
        "middle_x": LEFT + (WIDTH - LEFT - RIGHT) / 2,
        "middle_y": TOP + (HEIGHT - TOP - BOTTOM) / 2,
    }


def hourly_chart(hours: list[dict]) -> dict:
    """p50 and p95 of time-to-converge per hour, on a log scale: lines through the hours that had episodes."""
    values = [h[key] for h in hours for key in ("p50Seconds", "p95Seconds") if h[key] is not None]
    top_value = max(values, default=60)
    ticks = [tick for tick in LOG_TICKS if tick[0] <= max(top_value, 60)]
    if ticks[-1][0] < top_value:
        ticks.append(next((tick for tick in LOG_TICKS if tick[0] >= top_value), LOG_TICKS[-1]))
    ceiling = math.log10(ticks[-1][0])
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / max(1, len(hours))

    def y_of(seconds: float) -> float:
        return round(TOP + plot_h - plot_h * min(1.0, math.log10(max(seconds, 1)) / ceiling), 1)

    series = {}
    for key in ("p50Seconds", "p95Seconds"):
        points: list[dict] = []
        segments: list[list[str]] = []
        current: list[str] = []
        for index, hour in enumerate(hours):
            value = hour[key]
            if value is None:
                if current:
                    segments.append(current)
                current = []
                continue
            x = round(LEFT + (index + 0.5) * slot, 1)
            y = y_of(value)
            points.append(
                {
                    "x": x,
                    "y": y,
                    "title": f"{timezone.localtime(hour['start']):%H:00}: {key[:3]} {duration_text(value)} "
                    f"({hour['episodes']} episode{'' if hour['episodes'] == 1 else 's'})",
                }
            )
            current.append(f"{x},{y}")
        if current:
            segments.append(current)
        series[key[:3]] = {"points": points, "lines": [" ".join(s) for s in segments if len(s) > 1]}
    labels = [
        {"x": round(LEFT + (index + 0.5) * slot, 1), "label": f"{timezone.localtime(hour['start']):%H:%M}"}
        for index, hour in enumerate(hours)
        if index % 3 == 0
    ]
    return {
        "p50": series["p50"],
        "p95": series["p95"],
        "ticks": [Tick(y=y_of(seconds), label=label) for seconds, label in ticks],
        "x_labels": labels,
        "empty": not values,
        **_frame(),
    }
