"""Draws the demo monitor's accuracy over time from mlmon.metrics: the hourly
accuracy with its 95% Wilson interval, labeled vs pending predictions per
hour, and where each alert on the monitor fired (the matured part of the
window it judged, and its threshold).

Run after examples/demo.sql (scripts/demo.sh does):
    python3 examples/plot_demo.py [DSN] [OUT.png]
DSN defaults to $MLMON_DSN, else the cluster of scripts/cluster.sh on
$MLMON_PORT (28815); OUT to docs/demo_accuracy.png. Needs examples/requirements.txt.
"""
import math
import os
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")  # files only: no display needed
import matplotlib.dates as mdates  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import psycopg  # noqa: E402

MONITOR = "demo_conversion"
STEP = "1 hour"
REPO = pathlib.Path(__file__).resolve().parents[1]


def default_dsn():
    port = os.environ.get("MLMON_PORT", "28815")
    return os.environ.get("MLMON_DSN", f"host=/tmp port={port} dbname=postgres user=postgres")


def fetch(dsn):
    with psycopg.connect(dsn) as conn:
        conn.execute("SET TIME ZONE 'UTC'")
        monitor = conn.execute("SELECT bucket, maturity, now() FROM mlmon.monitors WHERE name = %s",
                               [MONITOR]).fetchone()
        if monitor is None:
            raise SystemExit(f"no monitor {MONITOR}: run examples/demo.sql first")
        _, maturity, now = monitor
        rows = conn.execute(
            """SELECT "time", labeled, pending, accuracy, accuracy_lower, accuracy_upper
               FROM mlmon.metrics(%s, now() - interval '2 days', now(), %s::interval)""",
            [MONITOR, STEP]).fetchall()
        # Each alert's latest firing since the alert was created (events
        # outlive dropped alerts of the same name).
        firings = conn.execute(
            """SELECT DISTINCT ON (a.name) a.name, a.comparison, a.threshold, a."trailing", e.at,
                      e.value, e.lower, e.upper, e.support
               FROM mlmon.alerts a JOIN mlmon.alert_events e ON e.alert = a.name AND e.at >= a.created_at
               WHERE a.monitor = %s AND a.metric = 'accuracy' AND e.state = 'firing'
               ORDER BY a.name, e.id DESC""",
            [MONITOR]).fetchall()
    return maturity, now, rows, firings


def nan(x):
    return math.nan if x is None else x


def span(interval):
    """'1 day', '30 hours': a timedelta as a person writes it."""
    hours = interval.total_seconds() / 3600
    if hours % 24 == 0:
        days = int(hours // 24)
        return f"{days} day" + ("s" if days != 1 else "")
    return f"{hours:g} hours"


def draw(maturity, now, rows, firings, out):
    times = [r[0] for r in rows]
    labeled = [r[1] for r in rows]
    pending = [r[2] for r in rows]
    accuracy, lower, upper = ([nan(r[i]) for r in rows] for i in (3, 4, 5))
    width = (times[1] - times[0]) if len(times) > 1 else None

    fig, (top, bottom) = plt.subplots(2, 1, sharex=True, figsize=(11, 7), height_ratios=(2, 1),
                                      constrained_layout=True)
    fig.suptitle(f"mlmon.metrics('{MONITOR}', now() - interval '2 days', now(), interval '{STEP}')", fontsize=11)

    # Steps are labelled by their start: draw each value over its whole step.
    top.step(times, accuracy, where="post", color="tab:blue", linewidth=1.6, label="accuracy (matured predictions)")
    top.fill_between(times, lower, upper, step="post", color="tab:blue", alpha=0.22, linewidth=0,
                     label="95% Wilson interval")
    top.axvspan(now - maturity, now, color="0.5", alpha=0.12, linewidth=0)
    top.text(now - maturity / 2, 0.97, f"pending: younger than the {span(maturity)} maturity",
             ha="center", va="top", fontsize=9, color="0.3", transform=top.get_xaxis_transform())
    for name, comparison, threshold, trailing, at, value, lo, hi, support in firings:
        top.axhline(threshold, color="tab:red", linestyle="--", linewidth=1,
                    label=f"{name}: fires when accuracy {comparison} {threshold:g}")
        # The window it judged: the last `trailing` of matured predictions,
        # [at - maturity - trailing, at - maturity).
        top.axvspan(at - maturity - trailing, at - maturity, color="tab:red", alpha=0.10, linewidth=0,
                    label=f"the window it judged (the newest {span(trailing)} of matured predictions)")
        for ax in (top, bottom):
            ax.axvline(at, color="tab:red", linewidth=2, label="alert fired (check_alerts)" if ax is top else None)
        top.annotate(f"fired {at:%H:%M} UTC\naccuracy {value:.3f}\n95% CI [{lo:.3f}, {hi:.3f}]\nn = {support:,}",
                     xy=(at, threshold), xytext=(-10, 8), textcoords="offset points", ha="right", va="bottom",
                     fontsize=9, color="tab:red")
    lowest = min((x for x in lower if not math.isnan(x)), default=0.0)
    top.set_ylim(max(0.0, math.floor((lowest - 0.1) * 10) / 10), 1)
    top.set_ylabel("accuracy")
    top.grid(alpha=0.3)
    top.legend(loc="lower right", fontsize=9, framealpha=0.9)

    bottom.bar(times, labeled, width=width, align="edge", color="tab:blue", alpha=0.8, label="labeled (matured)")
    bottom.bar(times, pending, width=width, align="edge", bottom=labeled, color="0.7", label="pending")
    bottom.set_ylim(0, 1.35 * max(l + p for l, p in zip(labeled, pending)))  # room for the legend
    bottom.set_ylabel(f"predictions per {STEP}")
    bottom.grid(alpha=0.3, axis="y")
    bottom.legend(loc="upper left", fontsize=9, framealpha=0.9)
    bottom.xaxis.set_major_locator(mdates.HourLocator(byhour=(0, 6, 12, 18)))
    bottom.xaxis.set_major_formatter(mdates.DateFormatter("%b %d\n%H:%M"))
    bottom.set_xlim(times[0], times[-1] + (width or maturity / 24))  # the last step's end: room for the firing line
    bottom.set_xlabel("time (UTC)")

    out.parent.mkdir(parents=True, exist_ok=True)
    # Fixed metadata, so a re-run with the same picture writes the same bytes.
    fig.savefig(out, dpi=100, metadata={"Software": None})
    plt.close(fig)


def main():
    dsn = sys.argv[1] if len(sys.argv) > 1 else default_dsn()
    out = pathlib.Path(sys.argv[2]) if len(sys.argv) > 2 else REPO / "docs" / "demo_accuracy.png"
    maturity, now, rows, firings = fetch(dsn)
    draw(maturity, now, rows, firings, out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
