"""Plots (PNG) and Markdown tables from the scenario results in ``benchmarks/results``.

``python -m benchmarks.report [--results DIR]``: writes ``<scenario>.png`` next to each
``<scenario>.json`` it finds and prints the tables for ``RESULTS.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

HERE = Path(__file__).resolve().parent
QS = ("p50", "p90", "p99", "max")


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 100 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _lat(r: dict[str, Any], key: str = "latency_ms") -> str:
    lat = r[key]
    return " / ".join(_fmt(lat[q]) for q in QS)


def latency(data: dict[str, Any], out: Path) -> str:
    runs = data["runs"]
    fig, ax = plt.subplots(figsize=(7, 4))
    for kind in sorted({r["kind"] for r in runs}):
        rs = [r for r in runs if r["kind"] == kind]
        xs = [r["agents"] for r in rs]
        for q, style in zip(("p50", "p99", "max"), ("o-", "s--", "^:"), strict=True):
            ax.plot(xs, [r["latency_ms"][q] for r in rs], style, label=f"{kind} {q}")
    ax.axhline(20, color="grey", lw=0.8)
    ax.axhline(100, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("idle subscribed hub connections")
    ax.set_ylabel("decide call returned → event (ms)")
    ax.set_title("Decision → event latency vs. connections")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "latency.png", dpi=110)
    plt.close(fig)
    _resources(runs, out / "latency-resources.png")
    lines = ["| transport | connections | decisions (achieved/s) | after return p50 / p90 / p99 / "
             "max (ms) | from send p50 / p99 (ms) | server CPU ms/decision | RSS idle → "
             "connected (MiB) | KiB/conn | load avg |", "|" + "---|" * 9]
    lines.extend(
        f"| {r['kind']} | {r['ready']:,} | {r['delivered']:,} ({_fmt(r['achieved_rate'])}) "
        f"| {_lat(r)} | {_fmt(r['since_call_ms']['p50'])} / "
        f"{_fmt(r['since_call_ms']['p99'])} | {_fmt(r['cpu_ms_per_delivered'])} | "
        f"{r['rss_idle_mib']} → {r['rss_connected_mib']} | "
        f"{_fmt(r['rss_per_connection_kib'])} | {r.get('loadavg_1m', '–')} |" for r in runs)
    return "\n".join(lines)


def _resources(runs: list[dict[str, Any]], path: Path) -> None:
    """Server CPU and RSS over each run (connect, settle, decide), from the psutil samples."""
    fig, (cpu_ax, rss_ax) = plt.subplots(1, 2, figsize=(10, 3.6))
    for r in runs:
        series = r.get("series") or {}
        if not series.get("t"):
            continue
        label = f"{r['kind']} {r['agents']:,}"
        cpu_ax.plot(series["t"], series["cpu"], lw=0.8, label=label)
        rss_ax.plot(series["t"], series["rss_mib"], lw=0.8, label=label)
    cpu_ax.set_title("server CPU (cores)", fontsize=9)
    rss_ax.set_title("server RSS (MiB)", fontsize=9)
    for ax in (cpu_ax, rss_ax):
        ax.set_xlabel("seconds since the agents started connecting")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def throughput(data: dict[str, Any], out: Path) -> str:
    steps = data["steps"]
    fig, ax = plt.subplots(figsize=(7, 4))
    xs = [s["target_rate"] for s in steps]
    ax.plot(xs, [s["achieved_rate"] for s in steps], "o-", label="achieved decisions/s")
    ax.plot(xs, xs, color="grey", lw=0.8, label="target")
    ax.set_xlabel("target decisions/s")
    ax.set_ylabel("decisions/s")
    ax2 = ax.twinx()
    ax2.plot(xs, [s["latency_ms"]["p99"] for s in steps], "s--", color="tab:red",
             label="p99 after return (ms)")
    ax2.set_yscale("symlog", linthresh=1)
    ax2.set_ylabel("p99 (ms)")
    ax.set_title(f"Throughput with {data['subscribers']:,} subscribers")
    fig.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    fig.savefig(out / "throughput.png", dpi=110)
    plt.close(fig)
    lines = ["| target/s | achieved/s | delivered | after return p50 / p90 / p99 / max (ms) | "
             "decide call p50 / p99 (ms) | server CPU (cores) | CPU ms/decision |",
             "|" + "---|" * 7]
    lines.extend(
        f"| {_fmt(s['target_rate'])} | {_fmt(s['achieved_rate'])} | {s['delivered']:,} | "
        f"{_lat(s)} | {_fmt(s['call_ms']['p50'])} / {_fmt(s['call_ms']['p99'])} | "
        f"{_fmt(s['server_cpu']['cpu_util'])} | {_fmt(s['cpu_ms_per_delivered'])} |"
        for s in steps)
    d = data["decide_only"]
    lines.append("")
    lines.append(f"Max sustained with p99 < {data['p99_limit_ms']:.0f} ms: "
                 f"**{_fmt(data['max_sustained'])} decisions/s**. Deciding alone, nobody "
                 f"subscribed, as fast as 16 connections go: {_fmt(d['achieved_rate'])}/s, "
                 f"{_fmt(d['cpu_ms_per_decision'])} ms server CPU per decision, call p50/p99 "
                 f"{_fmt(d['call_ms']['p50'])} / {_fmt(d['call_ms']['p99'])} ms.")
    return "\n".join(lines)


def mcp(data: dict[str, Any], out: Path) -> str:
    runs = data["runs"]
    fig, ax = plt.subplots(figsize=(7, 4))
    labels = [f"{r['kind']}\n{r['agents']:,}" for r in runs]
    xs = range(len(runs))
    ax.bar([x - 0.2 for x in xs], [r["latency_ms"]["p50"] for r in runs], 0.4, label="p50")
    ax.bar([x + 0.2 for x in xs], [r["latency_ms"]["p99"] for r in runs], 0.4, label="p99")
    ax.set_xticks(list(xs), labels, fontsize=8)
    ax.set_ylabel("approve returned → resources/updated (ms)")
    ax.set_title("MCP sessions, both eras")
    ax.legend()
    fig.tight_layout()
    fig.savefig(out / "mcp.png", dpi=110)
    plt.close(fig)
    lines = ["| era | sessions | decisions | after return p50 / p90 / p99 / max (ms) | "
             "server CPU ms/decision | RSS idle → connected (MiB) | KiB/session | set-up (s) |",
             "|" + "---|" * 8]
    lines.extend(
        f"| {r['kind'].removeprefix('mcp-')} | {r['ready']:,} | {r['delivered']:,} | "
        f"{_lat(r)} | {_fmt(r['cpu_ms_per_delivered'])} | {r['rss_idle_mib']} → "
        f"{r['rss_connected_mib']} | {_fmt(r['rss_per_connection_kib'])} | "
        f"{r['connect_s']} |" for r in runs)
    return "\n".join(lines)


def push_vs_poll(data: dict[str, Any], out: Path) -> str:
    hub, poll, base = data["hub-ws"], data["poll"], data["decide_only"]
    fig, axes = plt.subplots(1, 3, figsize=(10, 3.6))
    names = ["hub (push)", "REST polling"]
    axes[0].bar(names, [hub["cpu_ms_per_delivered"], poll["cpu_ms_per_delivered"]])
    axes[0].axhline(base["cpu_ms_per_decision"], color="grey", lw=0.8, ls="--")
    axes[0].set_title("server CPU ms / decision", fontsize=9)
    axes[1].bar(names, [hub["wire_bytes_per_delivered"], poll["wire_bytes_per_delivered"]])
    axes[1].set_title("bytes on the wire / decision", fontsize=9)
    axes[2].bar(names, [hub["latency_ms"]["p50"], poll["latency_ms"]["p50"]], label="p50")
    axes[2].bar(names, [hub["latency_ms"]["p99"], poll["latency_ms"]["p99"]], alpha=0.4,
                label="p99")
    axes[2].set_yscale("symlog", linthresh=1)
    axes[2].set_title("time to learn (ms)", fontsize=9)
    axes[2].legend(fontsize=7)
    fig.suptitle(f"{data['agents']:,} agents waiting, {data['rate']:.0f} decisions/s")
    fig.tight_layout()
    fig.savefig(out / "push-vs-poll.png", dpi=110)
    plt.close(fig)
    r = data["ratios"]
    lines = ["| | hub (push) | REST polling every "
             f"{data['poll_interval_s']:g} s | polling ÷ push |", "|---|---|---|---|"]
    lines.append(f"| time to learn p50 / p99 / max (ms) | {_fmt(hub['latency_ms']['p50'])} / "
                 f"{_fmt(hub['latency_ms']['p99'])} / {_fmt(hub['latency_ms']['max'])} | "
                 f"{_fmt(poll['latency_ms']['p50'])} / {_fmt(poll['latency_ms']['p99'])} / "
                 f"{_fmt(poll['latency_ms']['max'])} | |")
    lines.append(f"| server CPU ms per decision (incl. deciding) | "
                 f"{_fmt(hub['cpu_ms_per_delivered'])} | {_fmt(poll['cpu_ms_per_delivered'])} "
                 f"| {_fmt(r['cpu_total'])}× |")
    lines.append(f"| … net of deciding ({_fmt(base['cpu_ms_per_decision'])} ms) | "
                 f"{_fmt(max(0.0, hub['cpu_ms_per_delivered'] - base['cpu_ms_per_decision']))}"
                 f" | {_fmt(poll['cpu_ms_per_delivered'] - base['cpu_ms_per_decision'])} | "
                 f"{_fmt(r['cpu_net_of_deciding'])}× |")
    lines.append(f"| TCP payload bytes per decision | "
                 f"{_fmt(hub['wire']['payload_bytes'] / hub['delivered'])} | "
                 f"{_fmt(poll['wire']['payload_bytes'] / poll['delivered'])} | |")
    lines.append(f"| bytes on the wire per decision (+66 B/segment) | "
                 f"{_fmt(hub['wire_bytes_per_delivered'])} | "
                 f"{_fmt(poll['wire_bytes_per_delivered'])} | {_fmt(r['wire_bytes'])}× |")
    lines.append(f"| decision phase (s) / server CPU utilisation | {hub['decide_s']} / "
                 f"{hub['server_cpu']['cpu_util']} | {poll['decide_s']} / "
                 f"{poll['server_cpu']['cpu_util']} | |")
    return "\n".join(lines)


def peer(data: dict[str, Any], out: Path) -> str:
    # Results from before the repeats were one round, ours first.
    runs = data.get("repeats") or [{**data, "order": ["ours", "socketio"]}]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.6))
    names = ["colaflow hub", "python-socketio"]
    width = 0.8 / len(runs)
    for i, run in enumerate(runs):
        xs = [x + width * i for x in range(2)]
        axes[0].bar(xs, [run["ours"]["latency_ms"]["p99"], run["socketio"]["latency_ms"]["p99"]],
                    width, label=f"round {i + 1}")
        axes[1].bar(xs, [run["ours"]["push_cpu_ms_per_event"] or 0.0,
                         run["socketio"]["push_cpu_ms_per_event"] or 0.0], width)
    for ax in axes:
        ax.set_xticks([0.4 - width / 2 + x for x in range(2)], names)
    axes[0].set_title("decide returned → event, p99 (ms)", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[1].set_title("server CPU ms per delivered event\n(net of deciding)", fontsize=9)
    fig.tight_layout()
    fig.savefig(out / "peer.png", dpi=110)
    plt.close(fig)
    lines = ["| round (first) | server | after return p50 / p90 / p99 / max (ms) | "
             "from send p50 / p99 (ms) | CPU ms/decision with subscribers | deciding alone | "
             "push CPU ms/event | KiB/conn | load avg |", "|" + "---|" * 9]
    for i, run in enumerate(runs, 1):
        for name, key in (("colaflow hub", "ours"), ("python-socketio", "socketio")):
            r, base = run[key], run[f"{key}_decide_only"]
            lines.append(
                f"| {i} ({run['order'][0]}) | {name} | {_lat(r)} | "
                f"{_fmt(r['since_call_ms']['p50'])} / {_fmt(r['since_call_ms']['p99'])} | "
                f"{_fmt(r['cpu_ms_per_delivered'])} | {_fmt(base['cpu_ms_per_decision'])} | "
                f"{_fmt(r['push_cpu_ms_per_event'])} | {_fmt(r['rss_per_connection_kib'])} | "
                f"{r.get('loadavg_1m', '–')} |")
    if "cpu_ratio_all_in" in data:
        lines.append("")
        lines.append("| CPU, colaflow ÷ python-socketio | median | min – max | per round |")
        lines.append("|---|---|---|---|")
        for label, key in (("all-in (per delivered decision)", "cpu_ratio_all_in"),
                           ("net of deciding (push only)", "cpu_ratio_net_of_deciding")):
            v = data[key]
            times = "×" if v["median"] is not None else ""
            lines.append(f"| {label} | {_fmt(v['median'])}{times} | {_fmt(v['min'])} – "
                         f"{_fmt(v['max'])} | {' / '.join(_fmt(x) for x in v['runs'])} |")
    return "\n".join(lines)


def redis(data: dict[str, Any], out: Path) -> str:
    same, other = data["same_instance"], data["other_instance"]
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for i, (label, r) in enumerate((("agents on A (local)", same),
                                    ("agents on B (via Redis)", other))):
        ax.bar([x + 0.4 * i for x in range(3)], [r["latency_ms"][q] for q in QS[:3]], 0.4,
               label=label)
    ax.set_xticks([0.2, 1.2, 2.2], list(QS[:3]))
    ax.set_ylabel("decide on A returned → event (ms)")
    ax.set_title("Two instances, PostgreSQL + Redis")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "redis.png", dpi=110)
    plt.close(fig)
    lines = ["| agents on | after return p50 / p90 / p99 / max (ms) | from send p50 / p99 (ms) |",
             "|---|---|---|"]
    for label, r in (("A, where decisions are made", same), ("B (through Redis)", other)):
        lines.append(f"| {label} | {_lat(r)} | {_fmt(r['since_call_ms']['p50'])} / "
                     f"{_fmt(r['since_call_ms']['p99'])} |")
    added = data["added_ms"]
    lines.append("")
    lines.append("Added by the backplane: " + ", ".join(
        f"{q} {_fmt(v)} ms" for q, v in added.items()) + ".")
    return "\n".join(lines)


def memory(data: dict[str, Any], out: Path) -> str:
    lines = ["| round | connections | RSS before (MiB) | RSS connected (MiB) | KiB per connection "
             "| RSS after close (MiB) | connect time (s) |", "|---|---|---|---|---|---|---|"]
    before = data["rss_idle_mib"]
    for i, r in enumerate(data.get("rounds", [data]), 1):
        per = (r["rss_connected_mib"] - before) * 1024 / r["ready"] if r["ready"] else None
        lines.append(f"| {i} | {r['ready']:,} | {before} | {r['rss_connected_mib']} | "
                     f"{_fmt(per)} | {r['rss_after_close_mib']} | {r['connect_s']} |")
        before = r["rss_after_close_mib"]
    return "\n".join(lines)


REPORTS = {"latency": latency, "throughput": throughput, "mcp": mcp,
           "push-vs-poll": push_vs_poll, "peer": peer, "redis": redis, "memory": memory}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report", description=__doc__)
    parser.add_argument("--results", type=Path, default=HERE / "results")
    parser.add_argument("--smoke", action="store_true", help="read the -smoke results")
    args = parser.parse_args(argv)
    suffix = "-smoke" if args.smoke else ""
    for name, fn in REPORTS.items():
        path = args.results / f"{name}{suffix}.json"
        if not path.exists():
            continue
        data = json.loads(path.read_text())
        print(f"### {name}\n\n{fn(data, args.results)}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
