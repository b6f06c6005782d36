"""The plots of one run (`write_plots`) and of a sweep (`write_sweep_plot`), as PNG files.

matplotlib is imported here only, inside the functions, with the Agg backend (files, no
window): importing `simulations` never needs it (`pip install '.[sim]'` brings it).  Figures
are made with `matplotlib.figure.Figure` directly, so nothing is left in pyplot's registry.

- `propagation.png`: the time each checkpoint took to reach each honest node (histogram and
  CDF, p50 and p99 marked) and the gossip hops it travelled, against the bound ceil(log2 N)+3.
- `detection.png`: when each honest node first held evidence against the attacked log, as the
  share of the expected detectors reached over time.
- `traffic.png`: messages and bytes received per honest node.
- `sweep.png`: detection and propagation times, then wall time and peak memory, against the
  node count, one line per degree (and attacker fraction).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .metrics import Series

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.typing import LineStyleType

__all__ = ["context_title", "topology_label", "write_plots", "write_sweep_plot"]

DPI = 100


def _figure(width: float, height: float) -> Figure:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), layout="constrained")


def topology_label(summary: Mapping[str, Any]) -> str:
    """'random-regular d=8': the summary's topology, with the degree if it does not say it."""
    topology = str(summary.get("topology", "?"))
    if "d=" not in topology and summary.get("degree") is not None:
        topology += f" d={summary['degree']}"
    return topology


def context_title(summary: Mapping[str, Any]) -> str:
    """'split-view · 200 nodes · seed 1 · random-regular d=8 · events driver'."""
    parts = [
        str(summary.get("scenario", "?")),
        f"{summary.get('nodes', '?')} nodes",
        f"seed {summary.get('seed', '?')}",
        topology_label(summary),
    ]
    if summary.get("driver"):
        parts.append(f"{summary['driver']} driver")
    return " · ".join(parts)


def _bins(n: int) -> int:
    return max(5, min(60, math.isqrt(max(n, 1)) + 1))


def _empty(ax: Axes, message: str) -> None:
    ax.text(0.5, 0.5, message, ha="center", va="center", fontsize=14, transform=ax.transAxes)
    ax.set_xticks([])
    ax.set_yticks([])


def _unit(values: Iterable[float]) -> tuple[float, str]:
    """A decimal unit (scale, name) that keeps byte counts readable."""
    top = max(values, default=0.0)
    for scale, name in ((1e9, "GB"), (1e6, "MB"), (1e3, "kB")):
        if top >= scale:
            return scale, name
    return 1.0, "B"


def _save(fig: Figure, path: Path) -> Path:
    fig.savefig(path, dpi=DPI)
    return path


# -- one run -----------------------------------------------------------------------------------


def _propagation(summary: Mapping[str, Any], series: Series, path: Path) -> Path:
    prop: Mapping[str, Any] = summary.get("propagation", {})
    fig = _figure(12, 4.8)
    fig.suptitle(f"propagation — {context_title(summary)}")
    times_ax, hops_ax = fig.subplots(1, 2)

    times = sorted(series.propagation)
    if times:
        times_ax.hist(times, bins=_bins(len(times)), color="C0", alpha=0.6, label="samples")
        times_ax.set_xlabel("time from signing to arrival (s)")
        times_ax.set_ylabel("(checkpoint, node) pairs")
        cdf_ax = times_ax.twinx()
        n = len(times)
        cdf_ax.step(times, [(i + 1) / n for i in range(n)], where="post", color="C1", label="CDF")
        cdf_ax.set_ylim(0, 1.02)
        cdf_ax.set_ylabel("cumulative share")
        for key, style in (("p50", "--"), ("p99", ":")):
            if key in prop:
                value = float(prop[key])
                times_ax.axvline(value, color="k", linestyle=style, label=f"{key} {value:.3g} s")
        handles, labels = times_ax.get_legend_handles_labels()
        more_handles, more_labels = cdf_ax.get_legend_handles_labels()
        times_ax.legend(handles + more_handles, labels + more_labels, loc="center right")
        coverage = prop.get("coverage")
        checkpoints = prop.get("checkpoints")
        note = f"{n} arrivals"
        if checkpoints is not None:
            note += f" of {checkpoints} checkpoints"
        if coverage is not None:
            note += f", coverage {float(coverage):.1%}"
        times_ax.set_title(note)
    else:
        _empty(times_ax, "no checkpoint propagated")

    from matplotlib.ticker import MaxNLocator

    hops = series.hops
    bound = prop.get("hops_bound")
    if hops:
        top = max([*hops, int(bound) if bound is not None else 0])
        hops_ax.hist(hops, bins=[h - 0.5 for h in range(top + 2)], color="C2", rwidth=0.85)
        if bound is not None:
            hops_ax.axvline(
                float(bound), color="C3", linewidth=2, label=f"bound ⌈log₂ N⌉+3 = {bound}"
            )
            hops_ax.legend(loc="upper right")
        hops_ax.set_xlabel("gossip hops from the builder")
        hops_ax.set_ylabel("(checkpoint, node) pairs")
        hops_ax.set_title(
            f"hops p99 {prop.get('hops_p99', '?')}, max {prop.get('hops_max', max(hops))}"
        )
        hops_ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    else:
        _empty(hops_ax, "no hop counts")
    return _save(fig, path)


def _detection(summary: Mapping[str, Any], series: Series, path: Path) -> Path:
    det: Mapping[str, Any] = summary.get("detection", {})
    expected = int(det.get("expected", 0) or 0)
    fig = _figure(8, 5)
    fig.suptitle(f"detection — {context_title(summary)}")
    ax = fig.subplots()
    times = sorted(series.detection.values())
    if not times:
        if expected == 0:
            _empty(ax, f"no attack to detect (attack: {summary.get('attack', 'none')})")
        else:
            _empty(ax, f"nobody detected (0 of {expected} expected honest nodes)")
        return _save(fig, path)
    total = max(expected, len(times))
    ax.step(
        [0.0, *times],
        [0.0, *[(i + 1) / total for i in range(len(times))]],
        where="post",
        color="C0",
        label="honest nodes holding evidence",
    )
    ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="-")
    for key, style in (("p50", "--"), ("max", ":")):
        if key in det:
            value = float(det[key])
            ax.axvline(value, color="k", linestyle=style, label=f"{key} {value:.3g} s")
    ax.set_ylim(0, 1.05)
    ax.set_xlim(left=0)
    ax.set_xlabel("time since the attack began (s)")
    ax.set_ylabel(f"share of the {total} expected detectors")
    detected = det.get("detected_by", len(times))
    ax.set_title(f"detected by {detected} of {expected} expected honest nodes")
    ax.legend(loc="lower right")
    return _save(fig, path)


def _traffic(summary: Mapping[str, Any], series: Series, path: Path) -> Path:
    fig = _figure(12, 4.8)
    fig.suptitle(f"traffic received per honest node — {context_title(summary)}")
    msg_ax, bytes_ax = fig.subplots(1, 2)
    if series.messages:
        msg_ax.hist(series.messages, bins=_bins(len(series.messages)), color="C0")
        mean = sum(series.messages) / len(series.messages)
        msg_ax.axvline(mean, color="k", linestyle="--", label=f"mean {mean:.4g}")
        msg_ax.legend(loc="upper right")
        msg_ax.set_xlabel("messages received")
        msg_ax.set_ylabel("honest nodes")
        msg_ax.set_title("messages")
    else:
        _empty(msg_ax, "no honest nodes")
    if series.bytes:
        scale, unit = _unit(float(b) for b in series.bytes)
        scaled = [b / scale for b in series.bytes]
        bytes_ax.hist(scaled, bins=_bins(len(scaled)), color="C1")
        mean = sum(scaled) / len(scaled)
        bytes_ax.axvline(mean, color="k", linestyle="--", label=f"mean {mean:.4g} {unit}")
        bytes_ax.legend(loc="upper right")
        bytes_ax.set_xlabel(f"bytes received ({unit})")
        bytes_ax.set_ylabel("honest nodes")
        bytes_ax.set_title("bytes")
    else:
        _empty(bytes_ax, "no honest nodes")
    return _save(fig, path)


def write_plots(summary: Mapping[str, Any], series: Series, out_dir: Path | str) -> list[Path]:
    """Write propagation.png, detection.png and traffic.png into `out_dir`; their paths."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return [
        _propagation(summary, series, out / "propagation.png"),
        _detection(summary, series, out / "detection.png"),
        _traffic(summary, series, out / "traffic.png"),
    ]


# -- a sweep -----------------------------------------------------------------------------------


def _metric(summary: Mapping[str, Any], path: str) -> float | None:
    value: Any = summary
    for key in path.split("."):
        if not isinstance(value, Mapping) or key not in value:
            return None
        value = value[key]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _order(group: tuple[Any, ...]) -> tuple[tuple[int, float, str], ...]:
    """Groups in numeric order (a missing value last)."""
    out: list[tuple[int, float, str]] = []
    for v in group:
        if isinstance(v, int | float) and not isinstance(v, bool):
            out.append((0, float(v), ""))
        else:
            out.append((1, 0.0, str(v)))
    return tuple(out)


def _node_axis(ax: Axes, xs: Sequence[float], label: str) -> None:
    ax.set_xlabel(label)
    if xs and min(xs) > 0 and max(xs) / min(xs) >= 10:
        ax.set_xscale("log")
        ax.minorticks_off()
    if xs:
        ticks = sorted(set(xs))
        ax.set_xticks(ticks, labels=[f"{x:g}" for x in ticks])
    ax.grid(True, alpha=0.3)


def write_sweep_plot(
    rows: Sequence[Mapping[str, Any]],
    out_path: Path | str,
    x_key: str = "nodes",
    group_keys: Sequence[str] = ("degree", "attackers"),
    title: str | None = None,
) -> Path:
    """Plot a sweep's rows (grid values plus "summary") against `x_key`, one line per group.

    Left: detection p50 and max and propagation p99 (seconds).  Right: wall seconds and peak
    RSS (MB), the growth of the run's cost with the node count.  Rows without a summary (a
    point that failed) are left out.
    """
    from matplotlib.lines import Line2D

    out = Path(out_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = [r for r in rows if isinstance(r.get("summary"), Mapping)]
    keys = [k for k in group_keys if k != x_key and any(k in r for r in done)]
    groups: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for r in done:
        groups.setdefault(tuple(r.get(k) for k in keys), []).append(r)

    fig = _figure(13, 5.2)
    if title is None and done:
        first: Mapping[str, Any] = done[0]["summary"]
        title = (
            f"sweep — {first.get('scenario', '?')} · seed {first.get('seed', '?')} · "
            f"{str(first.get('topology', '?')).split(' d=')[0]} · "
            f"{first.get('driver', '?')} driver"
        )
    fig.suptitle(title or "sweep")
    times_ax, cost_ax = fig.subplots(1, 2)
    if not done:
        _empty(times_ax, "no finished runs")
        _empty(cost_ax, "no finished runs")
        return _save(fig, out)

    rss_ax = cost_ax.twinx()
    # (axes, summary key, label, marker, line style)
    lines: list[tuple[Axes, str, str, str, LineStyleType]] = [
        (times_ax, "detection.p50", "detection p50", "o", "-"),
        (times_ax, "detection.max", "detection max", "s", "--"),
        (times_ax, "propagation.p99", "propagation p99", "^", ":"),
        (cost_ax, "wall_seconds", "wall seconds (left)", "o", "-"),
        (rss_ax, "peak_rss_mb", "peak RSS MB (right)", "s", "--"),
    ]
    group_handles: list[Line2D] = []
    all_x: list[float] = []
    for i, (group, members) in enumerate(sorted(groups.items(), key=lambda kv: _order(kv[0]))):
        color = f"C{i % 10}"
        members = sorted(members, key=lambda r: float(r[x_key]))
        xs = [float(r[x_key]) for r in members]
        all_x.extend(xs)
        for ax, metric, _label, marker, linestyle in lines:
            pts = [(x, _metric(r["summary"], metric)) for x, r in zip(xs, members, strict=True)]
            got = [(x, y) for x, y in pts if y is not None]
            if got:
                ax.plot(
                    [x for x, _ in got],
                    [y for _, y in got],
                    color=color,
                    marker=marker,
                    linestyle=linestyle,
                )
        name = ", ".join(f"{k} {v}" for k, v in zip(keys, group, strict=True)) or "all runs"
        group_handles.append(Line2D([], [], color=color, linewidth=3, label=name))

    # Colours (the groups) below the figure; line styles (the metrics) below each panel.
    fig.legend(handles=group_handles, loc="outside lower center", ncols=min(len(group_handles), 4))
    for panel, on in ((times_ax, (times_ax,)), (rss_ax, (cost_ax, rss_ax))):
        handles = [
            Line2D([], [], color="k", marker=marker, linestyle=linestyle, label=label)
            for ax, _key, label, marker, linestyle in lines
            if ax in on
        ]
        panel.legend(
            handles=handles,
            loc="upper center",
            bbox_to_anchor=(0.5, -0.12),
            ncols=len(handles),
            fontsize="small",
            frameon=False,
        )

    times_ax.set_ylabel("seconds (virtual)")
    times_ax.set_ylim(bottom=0)
    times_ax.set_title("detection and propagation")
    _node_axis(times_ax, all_x, x_key)

    cost_ax.set_ylabel("wall seconds")
    cost_ax.set_ylim(bottom=0)
    rss_ax.set_ylabel("peak RSS (MB)")
    rss_ax.set_ylim(bottom=0)
    cost_ax.set_title("wall time and memory")
    _node_axis(cost_ax, all_x, x_key)
    return _save(fig, out)
