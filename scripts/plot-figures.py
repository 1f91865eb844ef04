#!/usr/bin/python3
"""Plots of a bench-suite.sh result directory, one PNG per figure.

  scripts/plot-figures.py RESULTS_DIR [--out FIGURES_DIR]

Reads RESULTS_DIR/inprocess/fig*.jsonl (sf-bench --json) and
RESULTS_DIR/e2e/runs.csv, breakdown.csv (bench-e2e.py); writes
FIGURES_DIR (default RESULTS_DIR/figures)/*.png and prints the files it
wrote.  A figure whose data is missing is skipped with a note.  Error bars
are the min-max of the runs; the bars and points are medians.
"""
import argparse
import csv
import json
import os
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

PROFILE_CATEGORIES = ["parse", "lookup", "slow_path", "services", "actions",
                      "io_rx", "io_tx", "idle"]


def read_jsonl(path):
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip().startswith("{")]


def read_csv(path):
    if not os.path.exists(path):
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def med_range(values):
    values = [float(v) for v in values]
    m = statistics.median(values)
    return m, m - min(values), max(values) - m


class Plotter:
    def __init__(self, results, out):
        self.results = results
        self.out = out
        self.written = []
        self.inproc = lambda name: read_jsonl(os.path.join(results, "inprocess", name + ".jsonl"))
        self.runs = read_csv(os.path.join(results, "e2e", "runs.csv"))
        self.breakdown = read_csv(os.path.join(results, "e2e", "breakdown.csv"))
        machine = os.path.join(results, "MACHINE.txt")
        self.caption = ""
        if os.path.exists(machine):
            with open(machine) as f:
                info = dict(line.strip().split(": ", 1) for line in f if ": " in line)
            self.caption = "commit %s, %s" % (info.get("commit", "?"), info.get("machine", ""))

    def save(self, fig, name):
        if self.caption:
            fig.text(0.01, 0.005, self.caption, fontsize=6, color="gray")
        fig.tight_layout(rect=(0, 0.02, 1, 1))
        path = os.path.join(self.out, name + ".png")
        fig.savefig(path, dpi=110)
        plt.close(fig)
        self.written.append(path)

    def skip(self, name, why):
        print("plot-figures: %s skipped: %s" % (name, why), file=sys.stderr)

    def e2e(self, experiment):
        groups = {}
        for r in self.runs:
            if r["experiment"] == experiment:
                key = (r["system"], r["pipeline"], r["trace"], r["coalesce"], r["variant"])
                groups.setdefault(key, []).append(float(r["received_pps"]) / 1e6)
        return groups

    # ---- figures -----------------------------------------------------------------
    def fig5(self):
        g = self.e2e("blackbox")
        if not g:
            return self.skip("fig5", "no blackbox runs")
        pipes = sorted({k[1] for k in g})
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        width = 0.38
        for i, system in enumerate(["run-to-completion", "black-box"]):
            xs, ys, lo, hi = [], [], [], []
            for j, p in enumerate(pipes):
                vals = [v for k, v in g.items() if k[0] == system and k[1] == p]
                if vals:
                    m, a, b = med_range(vals[0])
                    xs.append(j + (i - 0.5) * width)
                    ys.append(m)
                    lo.append(a)
                    hi.append(b)
            ax.bar(xs, ys, width, yerr=[lo, hi], capsize=3, label=system)
        ax.set_xticks(range(len(pipes)), ["Pipeline " + p for p in pipes])
        ax.set_ylabel("Mpps delivered back")
        trace = sorted({k[2] for k in g})
        ax.set_title("Fig. 5: run-to-completion vs black-box chain (%s, end to end)"
                     % ",".join(trace), fontsize=9)
        ax.legend(fontsize=8)
        self.save(fig, "fig5_blackbox")

    def fig6(self):
        rows = self.inproc("fig6")
        g = self.e2e("e2e")
        if not rows and not g:
            return self.skip("fig6", "no data")
        fig, axes = plt.subplots(1, 2, figsize=(9, 3.5), sharey=False)
        for ax, title, gains in (
                (axes[0], "in process (sf-bench)", self.gains_inproc(rows)),
                (axes[1], "end to end (sf-pktgen over veth)", self.gains_e2e(g))):
            if not gains:
                ax.set_title(title + ": no data", fontsize=9)
                continue
            pipes = sorted({p for p, _ in gains})
            traces = sorted({t for _, t in gains})
            width = 0.8 / len(traces)
            for i, t in enumerate(traces):
                xs = [j + (i - (len(traces) - 1) / 2) * width for j in range(len(pipes))]
                ax.bar(xs, [gains.get((p, t), 0) for p in pipes], width, label=t)
            ax.axhline(0, color="black", linewidth=0.6)
            ax.set_xticks(range(len(pipes)), pipes)
            ax.set_ylabel("gain from coalescing, %")
            ax.set_title(title, fontsize=9)
            ax.legend(fontsize=8)
        fig.suptitle("Fig. 6: stage coalescing, median Mpps on vs off", fontsize=10)
        self.save(fig, "fig6_coalescing")

    @staticmethod
    def gains_inproc(rows):
        by = {}
        for r in rows:
            by[(r["pipeline"], r["trace"], r["coalesce"])] = r["mpps"]
        return {(p, t): 100 * (v / by[(p, t, False)] - 1)
                for (p, t, c), v in by.items() if c and by.get((p, t, False))}

    @staticmethod
    def gains_e2e(g):
        med = {k: statistics.median(v) for k, v in g.items()}
        return {(k[1], k[2]): 100 * (v / med[k[:3] + ("off",) + k[4:]] - 1)
                for k, v in med.items()
                if k[3] == "on" and med.get(k[:3] + ("off",) + k[4:])}

    def fig7(self):
        rows = self.inproc("fig7")
        if not rows:
            return self.skip("fig7", "no data")
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        for c, label in ((True, "coalescing on"), (False, "coalescing off")):
            pts = sorted((int(r["pipeline"][1:]), r) for r in rows if r["coalesce"] == c)
            if pts:
                ax.errorbar([k for k, _ in pts], [r["mpps"] for _, r in pts],
                            yerr=[[r["mpps"] - r["mpps_min"] for _, r in pts],
                                  [r["mpps_max"] - r["mpps"] for _, r in pts]],
                            marker="o", capsize=3, label=label)
        ax.set_xlabel("noop stages (Pipeline D)")
        ax.set_ylabel("Mpps (one thread, in process)")
        ax.set_ylim(bottom=0)
        ax.set_title("Fig. 7: action-invocation overhead", fontsize=9)
        ax.legend(fontsize=8)
        self.save(fig, "fig7_noop_stages")

    def fig8(self):
        rows = self.inproc("fig8")
        g = self.e2e("scaling")
        if not rows and not g:
            return self.skip("fig8", "no data")
        fig, axes = plt.subplots(1, 2, figsize=(8, 3.5))
        ax = axes[0]
        pts = sorted((r["threads"], r) for r in rows)
        if pts:
            ax.bar([str(t) for t, _ in pts], [r["mpps"] for _, r in pts],
                   yerr=[[r["mpps"] - r["mpps_min"] for _, r in pts],
                         [r["mpps_max"] - r["mpps"] for _, r in pts]], capsize=3)
        ax.set_xlabel("threads")
        ax.set_ylabel("Mpps, in process")
        ax.set_title("in process (sf-bench, %s)" % (pts[0][1]["trace"] if pts else "-"),
                     fontsize=9)
        ax = axes[1]
        items = sorted(g.items(), key=lambda kv: kv[0][4])
        if items:
            ms = [med_range(v) for _, v in items]
            ax.bar([k[4] for k, _ in items], [m[0] for m in ms],
                   yerr=[[m[1] for m in ms], [m[2] for m in ms]], capsize=3)
        ax.set_ylabel("Mpps delivered back")
        ax.set_title("end to end (queues / PMD threads)", fontsize=9)
        fig.suptitle("Fig. 8: scaling on this 2-core machine", fontsize=10)
        self.save(fig, "fig8_scaling")

    def fig10(self):
        rows = self.inproc("fig10")
        if not rows:
            return self.skip("fig10", "no data")
        pts = sorted((int(r["pipeline"][1:]), r) for r in rows)
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        ax.errorbar([max(k, 0.5) for k, _ in pts], [r["mpps"] for _, r in pts],
                    yerr=[[r["mpps"] - r["mpps_min"] for _, r in pts],
                          [r["mpps_max"] - r["mpps"] for _, r in pts]], marker="o", capsize=3)
        ax.set_xscale("log", base=2)
        ax.set_xticks([max(k, 0.5) for k, _ in pts], [str(k) for k, _ in pts])
        ax.set_xlabel("random 64-byte reads per packet over 1 GiB (0 plotted at 0.5)")
        ax.set_ylabel("Mpps (one thread, in process)")
        ax.set_title("Fig. 10: memory-bound services", fontsize=9)
        self.save(fig, "fig10_memload")

    def fig11(self):
        rows = self.inproc("fig11")
        if not rows:
            return self.skip("fig11", "no data")
        pts = sorted((r["miss_rate"], r) for r in rows)
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        ax.errorbar([100 * (1 - m) for m, _ in pts], [r["mpps"] for _, r in pts],
                    yerr=[[r["mpps"] - r["mpps_min"] for _, r in pts],
                          [r["mpps_max"] - r["mpps"] for _, r in pts]], marker="o", capsize=3)
        ax.set_yscale("log")
        ax.set_xlabel("megaflow hit rate, %")
        ax.set_ylabel("Mpps (log)")
        ax.set_title("Fig. 11: throughput vs megaflow hit rate (Pipeline A, %s)"
                     % pts[0][1]["trace"], fontsize=9)
        self.save(fig, "fig11_hit_rate")

    def fig12(self):
        rows = [r for r in self.inproc("fig12") if r.get("profile")]
        bars = []  # (label, {category: cycles/packet})
        for r in rows:
            p = r["profile"]
            n = max(p["packets"], 1)
            bars.append(("%s %s %s\nin process" % (r["pipeline"], r["trace"],
                                                   "coal." if r["coalesce"] else "base"),
                         {c: p["cycles"].get(c, 0) / n for c in PROFILE_CATEGORIES}))
        groups = {}
        for r in self.breakdown:
            groups.setdefault((r["pipeline"], r["trace"], r["coalesce"]), []).append(r)
        for (p, t, c), v in sorted(groups.items()):
            bars.append(("%s %s %s\nend to end" % (p, t, "coal." if c == "on" else "base"),
                         {k: statistics.median(float(x[k]) for x in v)
                          for k in PROFILE_CATEGORIES}))
        if not bars:
            return self.skip("fig12", "no profile data")
        fig, ax = plt.subplots(figsize=(max(6, 0.75 * len(bars)), 4))
        bottom = [0.0] * len(bars)
        for c in PROFILE_CATEGORIES:
            if c == "idle":  # waiting for packets is not a cost of processing them
                continue
            vals = [b[1][c] for b in bars]
            if any(vals):
                ax.bar(range(len(bars)), vals, bottom=bottom, label=c)
                bottom = [x + y for x, y in zip(bottom, vals)]
        ax.set_xticks(range(len(bars)), [b[0] for b in bars], fontsize=6, rotation=90)
        ax.set_ylabel("cycles per packet (TSC)")
        ax.set_title("Fig. 12: CPU breakdown, base (coalescing off) vs coalescing "
                     "(busy cycles; idle polling left out)", fontsize=9)
        ax.legend(fontsize=7, ncol=2)
        self.save(fig, "fig12_breakdown")

    def overview(self):
        keep = [("ceiling", None), ("e2e", "on"), ("peers", None)]
        series = {}
        for exp, coalesce in keep:
            for k, v in self.e2e(exp).items():
                if coalesce and k[3] != coalesce:
                    continue
                label = k[0] if exp != "e2e" else "softflowd %s" % k[1]
                if exp == "peers":
                    label = "%s (%s)" % (k[0], k[1])
                series.setdefault(label, {})[k[2]] = med_range(v)
        if not series:
            return self.skip("e2e_overview", "no end-to-end runs")
        traces = sorted({t for s in series.values() for t in s})
        fig, ax = plt.subplots(figsize=(max(7, 1.0 * len(series)), 4))
        width = 0.8 / len(traces)
        labels = list(series)
        for i, t in enumerate(traces):
            xs = [j + (i - (len(traces) - 1) / 2) * width for j in range(len(labels))]
            ms = [series[lbl].get(t, (0, 0, 0)) for lbl in labels]
            ax.bar(xs, [m[0] for m in ms], width, yerr=[[m[1] for m in ms], [m[2] for m in ms]],
                   capsize=2, label=t)
        ax.set_xticks(range(len(labels)), labels, rotation=30, ha="right", fontsize=7)
        ax.set_ylabel("Mpps delivered back (median, min-max)")
        ax.set_title("End to end over veth: ceilings, SoftFlow (coalescing on), peers", fontsize=9)
        ax.legend(fontsize=8)
        self.save(fig, "e2e_overview")

    def sweep(self):
        rows = [r for r in self.runs if r["experiment"] == "sweep"]
        if not rows:
            return self.skip("sweep", "no sweep runs")
        fig, ax = plt.subplots(figsize=(5.5, 3.8))
        for system in sorted({r["system"] for r in rows}):
            by = {}
            for r in rows:
                if r["system"] == system:
                    by.setdefault(r["variant"], []).append(r)
            pts = []
            for v in by.values():
                sent = statistics.median(float(r["sent_pps"]) for r in v) / 1e6
                m, lo, hi = med_range(float(r["received_pps"]) / 1e6 for r in v)
                pts.append((sent, m, lo, hi))
            pts.sort()
            ax.errorbar([p[0] for p in pts], [p[1] for p in pts],
                        yerr=[[p[2] for p in pts], [p[3] for p in pts]], marker="o", capsize=3,
                        label=system + (" (A, coalescing on)" if system == "softflowd" else ""))
        top = max(float(r["sent_pps"]) for r in rows) / 1e6
        ax.plot([0, top], [0, top], color="gray", linewidth=0.6, linestyle="--", label="no loss")
        ax.set_xlabel("offered Mpps (sent by sf-pktgen; rightmost: as fast as it goes)")
        ax.set_ylabel("Mpps delivered back")
        ax.set_title("Offered vs delivered rate, %s" % rows[0]["trace"], fontsize=9)
        ax.legend(fontsize=8)
        self.save(fig, "sweep_offered_rate")

    def ablation(self):
        g = self.e2e("ablation")
        if not g:
            return self.skip("ablation", "no ablation runs")
        traces = sorted({k[2] for k in g})
        variants = sorted({k[4] for k in g})
        fig, ax = plt.subplots(figsize=(5.5, 3.5))
        width = 0.8 / len(variants)
        for i, var in enumerate(variants):
            ms = [med_range(next((v for k, v in g.items() if k[2] == t and k[4] == var), [0]))
                  for t in traces]
            xs = [j + (i - (len(variants) - 1) / 2) * width for j in range(len(traces))]
            ax.bar(xs, [m[0] for m in ms], width, yerr=[[m[1] for m in ms], [m[2] for m in ms]],
                   capsize=3, label=var)
        ax.set_xticks(range(len(traces)), traces)
        ax.set_ylabel("Mpps delivered back")
        ax.set_title("Stage-0 lookup in XDP vs in userspace (Pipeline A)", fontsize=9)
        ax.legend(fontsize=8)
        self.save(fig, "ablation_xdp_lookup")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("results")
    ap.add_argument("--out")
    a = ap.parse_args()
    out = a.out or os.path.join(a.results, "figures")
    os.makedirs(out, exist_ok=True)
    p = Plotter(a.results, out)
    for fig in (p.fig5, p.fig6, p.fig7, p.fig8, p.fig10, p.fig11, p.fig12, p.overview,
                p.ablation, p.sweep):
        fig()
    for path in p.written:
        print(path)
    return 0 if p.written else 1


if __name__ == "__main__":
    sys.exit(main())
