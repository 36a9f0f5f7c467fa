#!/usr/bin/env python3
"""Plots bench/results/latest.json (written by scripts/bench.sh) into SVGs
next to it: one horizontal bar chart of ratios against each baseline, and
the latency distributions of the cluster group; also writes the results as
a Markdown table (table.md) for the README."""
import json
import pathlib
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

here = pathlib.Path(__file__).resolve().parent / "results"
data = json.loads((here / "latest.json").read_text())
rows = data["rows"]
env = data["environment"]
subtitle = f"OTP {env['otp']}, {env['schedulers']} schedulers, {env['cpu']}, {'quick' if env['quick'] else 'full'} run"

UNITS = {"ns": "ns", "us": "µs", "ms": "ms", "bytes": "B", "per_s": "/s", "count": ""}


def fmt(v, unit):
    if unit == "per_s":
        return f"{round(v):,} /s"
    return f"{v:,.1f} {UNITS.get(unit, unit)}" if v < 100 else f"{round(v):,} {UNITS.get(unit, unit)}"


lines = [
    f"| measure | median | p99 | max | ratio of medians |",
    "| --- | --- | --- | --- | --- |",
]
for r in rows:
    ratio = f"{r['ratio']:.2f}x {r['baseline']}" if "ratio" in r else ""
    name = r["name"].strip()
    name = f"&nbsp;&nbsp;{name}" if r["name"].startswith("  ") else name
    u = r["unit"]
    lines.append(f"| {name} | {fmt(r['median'], u)} | {fmt(r['p99'], u)} | {fmt(r['max'], u)} | {ratio} |")
(here / "table.md").write_text(f"{subtitle}\n\n" + "\n".join(lines) + "\n")

# Ratios (ours / baseline, medians): lower is better except for rates.
ratios = [r for r in rows if "ratio" in r and not r["name"].startswith("  ")]
if ratios:
    fig, ax = plt.subplots(figsize=(9, 0.42 * len(ratios) + 1.4))
    names = [f"{r['name']}  (vs {r['baseline']})" for r in ratios]
    values = [r["ratio"] for r in ratios]
    better_higher = [r["unit"] == "per_s" for r in ratios]
    colors = [
        ("#2a7" if (v >= 1 if hi else v <= 1) else "#c44") for v, hi in zip(values, better_higher)
    ]
    ax.barh(range(len(values)), values, color=colors)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(values)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlabel("ratio of medians, ours / baseline (green: better than the baseline)")
    ax.set_title("locker against plain BEAM baselines\n" + subtitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(here / "ratios.svg")

# Latency: median, p99 of the cluster operations and their floors.
lat = [r for r in rows if r.get("group") == "cluster"]
if lat:
    fig, ax = plt.subplots(figsize=(8, 3.6))
    names = [r["name"].strip() for r in lat]
    x = range(len(lat))
    ax.bar([i - 0.2 for i in x], [r["median"] for r in lat], width=0.4, label="median")
    ax.bar([i + 0.2 for i in x], [r["p99"] for r in lat], width=0.4, label="p99")
    ax.set_xticks(list(x), names, rotation=25, ha="right", fontsize=8)
    ax.set_ylabel("microseconds")
    ax.set_yscale("log")
    ax.legend()
    ax.set_title("sequential latency, 3 local masters (W = 2)\n" + subtitle, fontsize=9)
    fig.tight_layout()
    fig.savefig(here / "latency.svg")

print("wrote", *sorted(str(p.name) for p in here.glob("*.svg")), file=sys.stderr)

# The targets of issue 14 (scripts/bench.sh targets): targets.md and
# targets.svg, each ratio beside its target; with several variants (e.g.
# two-phase and one-round) their rows stand side by side.
tpath = here / "targets.json"
if tpath.exists():
    tdata = json.loads(tpath.read_text())
    tenv = tdata["environment"]
    tsub = f"OTP {tenv['otp']}, {tenv['schedulers']} schedulers, {tenv['cpu']}, {'quick' if tenv['quick'] else 'full'} run, {tenv.get('taken_at', '')}"
    trows = tdata["rows"]
    lines = [
        "| measure | median | against | ratio | target | met |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in trows:
        if "target" in r:
            met = "met" if r["met"] else "**not met**"
            lines.append(
                f"| {r['name'].strip()} | {fmt(r['median'], r['unit'])} | {r['baseline']} ({fmt(r['baseline_value'], r['unit'])}) "
                f"| {r['ratio']:.2f}x | {r['target']} | {met} |"
            )
        else:
            lines.append(f"| {r['name'].strip()} | {fmt(r['median'], r['unit'])} | | | | |")
    (here / "targets.md").write_text(f"{tsub}\n\n" + "\n".join(lines) + "\n")
    tt = [r for r in trows if "target" in r]
    if tt:
        fig, ax = plt.subplots(figsize=(9, 0.42 * len(tt) + 1.4))
        values = [r["ratio"] for r in tt]
        limits = [float(r["target"].split()[1].rstrip("x")) for r in tt]
        ax.barh(range(len(tt)), values, color=["#2a7" if r["met"] else "#c44" for r in tt])
        ax.scatter(limits, range(len(tt)), marker="|", s=300, color="black", label="target", zorder=3)
        ax.set_yticks(range(len(tt)), [f"{r['name'].strip()}  (vs {r['baseline']})" for r in tt], fontsize=8)
        ax.invert_yaxis()
        ax.set_xlabel("ratio of medians (bar: measured, green when the target is met; mark: target)")
        ax.legend(fontsize=8)
        ax.set_title("issue 14 targets\n" + tsub, fontsize=9)
        fig.tight_layout()
        fig.savefig(here / "targets.svg")
