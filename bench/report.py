#!/usr/bin/env python3
"""The benchmark's report: medians, spreads and ratios from tables.tsv,
latency.tsv and router.tsv (any may be missing), the machine it ran on,
and gnuplot plots.

    bench/report.py OUT_DIR MODE
"""
import csv
import os
import platform
import statistics
import subprocess
import sys

out, mode = sys.argv[1], sys.argv[2]

CASES = [
    ("ism-1", "ism_state, 1 table"),
    ("ism-100", "ism_state, 100 tables"),
    ("ism-1-drain", "ism_state, 1 table, drain (all records waiting)"),
    ("ism-100-drain", "ism_state, 100 tables, drain (all records waiting)"),
    ("ism-1-claims", "ism_state, 1 table, claims (scale-out)"),
    ("ism-1-replicated", "ism_state, 1 table, ack_after = replicated"),
    ("ism-1-sync", "ism_state, 1 table, synchronous standby"),
    ("ism-1-2w", "ism_state, 1 table, 2 writers"),
    ("ism-100-replicated", "ism_state, 100 tables, ack_after = replicated"),
    ("ism-100-sync", "ism_state, 100 tables, synchronous standby"),
    ("ism-100-2w", "ism_state, 100 tables, 2 writers"),
    ("copy", "COPY from a file, 1 table (the limit)"),
    ("tuned-1", "tuned external consumer, 1 table"),
    ("tuned-100", "tuned external consumer, 100 tables"),
    ("up-1", "upstream algorithm, 1 table"),
    ("up-100", "upstream algorithm, 100 tables"),
]


def command(*args):
    try:
        return subprocess.run(args, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "?"


def machine():
    cpu = "?"
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    with open("/proc/meminfo") as f:
        mem_gb = int(f.readline().split()[1]) / 1024 / 1024
    return (f"{os.cpu_count()} cores ({cpu}), {mem_gb:.0f} GiB, Linux {platform.release()}, "
            f"{command('pg_config', '--version')}, nats-server {command('nats-server', '--version')}")


def load_rows(path):
    with open(path) as f:
        return list(csv.DictReader(f, delimiter="\t"))


def acked_rate(row):
    """Records per second from the first publish to the last ack."""
    if row.get("acked_s") in (None, ""):
        return ""
    return int(row["records"]) / float(row["acked_s"])


def cpu_per_record(row):
    """CPU microseconds per record (for COPY: its backend's per row)."""
    if row.get("cpu_s") in (None, ""):
        return ""
    return float(row["cpu_s"]) * 1e6 / int(row["records"])


def summary(rows, name, field, **match):
    values = [float(r[field]) for r in rows
              if r["case"] == name and r.get(field) not in (None, "")
              and all(r[k] == v for k, v in match.items())]
    if not values:
        return None
    return statistics.median(values), min(values), max(values)


def tables_section(rows):
    """The tables benchmark: its table, ratios, and the medians by case."""
    lines = ["", "Run with `bench/run.sh " + mode + "`; every case "
             "in the same session on the same stack, rounds interleaved. "
             "Records/s from the first publish to the last commit; latency from "
             "publish to commit per record; CPU and peak private memory (RssAnon) "
             "of the consumer (external ones: the program plus its backend; two "
             "writers: CPU of both, memory of the first; COPY: its backend's CPU). "
             "Records/s to the last "
             "ack: from the first publish to the consumer's last ack (JetStream's "
             "ack floor).", ""]
    if any(r["case"].endswith("-drain") for r in rows):
        lines[-2] += (" Drain cases: every record waits in JetStream before the writer "
                      "consumes (its route removed meanwhile); records/s from loading the "
                      "route again to the last commit (no latency: it would be the wait).")
    if mode == "ha":
        lines += ["Every case with a streaming standby of the cluster on the same machine "
                  "(pg_basebackup -R, a replication slot), asynchronous and "
                  "ism_state.ack_after = commit unless the case says otherwise.", ""]
    lines += ["| case | records | records/s median | spread | records/s to last ack | "
              "p50 ms | p99 ms | CPU s | CPU µs/record | peak RSS MB | rows |",
              "|---|---:|---:|---|---:|---:|---:|---:|---:|---:|---|"]
    medians = {}
    for name, label in CASES:
        s = summary(rows, name, "records_per_s")
        if s is None:
            continue
        medians[name] = s[0]
        case_rows = [r for r in rows if r["case"] == name]

        def med(field, form="{:.1f}"):
            m = summary(rows, name, field)
            return "" if m is None else form.format(m[0])
        checks = sorted({r["check"] for r in case_rows})
        lines.append(f"| {label} | {case_rows[0]['records']} | {s[0]:,.0f} | {s[1]:,.0f} .. {s[2]:,.0f} | "
                     f"{med('acked_per_s', '{:,.0f}')} | "
                     f"{med('p50_ms')} | {med('p99_ms')} | {med('cpu_s', '{:.2f}')} | "
                     f"{med('cpu_us', '{:.2f}')} | {med('peak_rss_mb')} | "
                     f"{', '.join(checks)} |")

    restarted = [f"{r['case']} round {r['round']}" for r in rows if "restarted" in r["check"]]
    if restarted:
        lines += ["", f"**A writer died and was restarted** during {len(restarted)} runs "
                  f"({', '.join(restarted)}): see the server's log; their figures are in the "
                  "medians (their messages came back after ack_wait)."]

    targets = [(a, b, target) for a, b, target in
               [("ism-1", "copy", "≥ 0.5"), ("ism-1-drain", "copy", "≥ 0.30, #18"),
                ("ism-100-drain", "copy", "drain into 100 tables"), ("ism-1", "up-1", "≥ 10"),
                ("ism-100", "up-100", "≥ 10"), ("ism-1", "tuned-1", "≥ 2"),
                ("ism-100", "tuned-100", "≥ 2"), ("ism-1-claims", "ism-1", "cost of claims")]
               if a in medians and b in medians]
    if targets:
        lines += ["", "Ratios of medians (targets in parentheses):", ""]
        lines += [f"- {a} / {b}: **{medians[a] / medians[b]:.2f}** ({target})" for a, b, target in targets]

    copy_cpu = summary(rows, "copy", "cpu_us")
    if copy_cpu is not None:
        lines += ["", f"CPU per record (medians; COPY's backend: **{copy_cpu[0]:.2f} µs** per row):", ""]
        for name, _ in CASES:
            m = summary(rows, name, "cpu_us")
            if m is not None and name != "copy":
                lines.append(f"- {name}: {m[0]:.2f} µs/record, **{m[0] / copy_cpu[0]:.1f}×** COPY's")

    ha = [(a, b) for a, b in [("ism-1-replicated", "ism-1"), ("ism-1-sync", "ism-1"),
                              ("ism-100-replicated", "ism-100"), ("ism-100-sync", "ism-100"),
                              ("ism-1-2w", "ism-1"), ("ism-100-2w", "ism-100")]
          if a in medians and b in medians]
    if ha:
        lines += ["", "High availability, ratios of medians (case / baseline):", "",
                  "| case / baseline | records/s | records/s to last ack | p50 ms | p99 ms |",
                  "|---|---:|---:|---:|---:|"]
        for a, b in ha:
            cells = []
            for field in ("records_per_s", "acked_per_s", "p50_ms", "p99_ms"):
                x, y = summary(rows, a, field), summary(rows, b, field)
                cells.append("" if x is None or y is None else f"{x[0] / y[0]:.2f}")
            lines.append(f"| {a} / {b} | " + " | ".join(cells) + " |")
        per_writer = [(name, [r["per_writer"] for r in rows if r["case"] == name])
                      for name, _ in CASES if name.endswith("-2w") and name in medians]
        if per_writer:
            lines += ["", "Records each writer wrote, round by round (pg_stat_ism_tables):", ""]
            lines += [f"- {name}: {', '.join(values)}" for name, values in per_writer]

    return lines, medians


def latency_section(path):
    """ism-1 at steady offered loads: a table, latency.dat and latency.png."""
    steady = load_rows(path)
    lines = []
    points = sorted({(int(r["batch_window_ttl"]), int(r["load_pct"])) for r in steady})

    def steady_median(ttl, load, field):
        return statistics.median(float(r[field]) for r in steady
                                 if (int(r["batch_window_ttl"]), int(r["load_pct"])) == (ttl, load))
    lines += ["", "## Latency at a steady offered load", "",
              "ism-1 with records published at a steady rate, a share of ism-1's median "
              "records/s above (the burst); latency per record from its publication to its "
              "commit (track_commit_timestamp), medians over the rounds; processors' batchSize "
              f"{', '.join(sorted({r['batch_size'] for r in steady}))} (null: no size trigger, "
              "bench/README.md).", "",
              "| batchWindowTTL s | load | offered records/s | published records/s | records | "
              "p50 ms | p99 ms | p99.9 ms | CPU µs/record | rows |",
              "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"]
    with open(os.path.join(out, "latency.dat"), "w") as f:
        for ttl in sorted({t for t, _ in points}):
            for t, load in points:
                if t == ttl:
                    f.write(f"{load} " + " ".join(f"{steady_median(t, load, p):.1f}"
                                                  for p in ("p50_ms", "p99_ms", "p999_ms")) + "\n")
            f.write("\n\n")
    for ttl, load in points:
        case_rows = [r for r in steady if (int(r["batch_window_ttl"]), int(r["load_pct"])) == (ttl, load)]
        cpu = [float(r["cpu_s"]) * 1e6 / int(r["records"]) for r in case_rows if r["cpu_s"]]
        lines.append(f"| {ttl} | {load}% | {steady_median(ttl, load, 'offered_per_s'):,.0f} | "
                     f"{steady_median(ttl, load, 'published_per_s'):,.0f} | {case_rows[0]['records']} | "
                     f"{steady_median(ttl, load, 'p50_ms'):.1f} | {steady_median(ttl, load, 'p99_ms'):.1f} | "
                     f"{steady_median(ttl, load, 'p999_ms'):.1f} | "
                     f"{statistics.median(cpu) if cpu else float('nan'):.2f} | "
                     f"{', '.join(sorted({r['check'] for r in case_rows}))} |")
    ttls = sorted({t for t, _ in points})
    # a colour per window, a dash pattern per percentile
    plots = [f"'{out}/latency.dat' index {i} using 1:{col} with linespoints lc {i + 1} dt {col - 1} "
             f"pt {col + 4} title '{name}, batchWindowTTL {ttl} s'"
             for i, ttl in enumerate(ttls) for col, name in ((2, "p50"), (3, "p99"), (4, "p99.9"))]
    subprocess.run(["gnuplot", "-e", f"""
        set terminal png size 900,450 noenhanced; set output '{out}/latency.png';
        set title 'ism-1: publish to commit at a steady offered load (median of rounds)';
        set xlabel 'offered load, % of the burst rate'; set ylabel 'ms (log scale)';
        set logscale y; set grid; set key outside right; set xrange [0:100]; set xtics 25;
        plot {', '.join(plots)}"""], check=True)
    return lines


def router_section(rows):
    """ism_state's router beside the upstream router's algorithm, case by case."""
    lines = ["", "## Router", "",
             "`bench/router_bench.sh`: ism_state's router and the upstream router's "
             "algorithm (`bench/upstream_router.c`: per message the Python state "
             "router's catalog queries and round trips, in C) on the same consumer, "
             "one at a time, in the same rounds. Messages or rows per second from the "
             "first publish to the router's last ack; CPU seconds of the router (the "
             "upstream algorithm: the program and its backend); ism_state's router's "
             "peak private memory (RssAnon).", "",
             "| case | unit | ism_state median | spread | upstream median | spread | "
             "ism_state / upstream | CPU s, ism_state | CPU s, upstream | ism_state peak RSS MB |",
             "|---|---|---:|---|---:|---|---:|---:|---:|---:|"]
    for name in dict.fromkeys(r["case"] for r in rows):
        first = next(r for r in rows if r["case"] == name)
        ism, up = (summary(rows, name, "per_s", router=x) for x in ("ism", "upstream"))
        cpu_ism, cpu_up = (summary(rows, name, "cpu_s", router=x) for x in ("ism", "upstream"))
        rss = summary(rows, name, "peak_rss_mb", router="ism")
        lines.append(f"| {first['label']} | {first['unit']} | {ism[0]:,.0f} | "
                     f"{ism[1]:,.0f} .. {ism[2]:,.0f} | {up[0]:,.0f} | {up[1]:,.0f} .. {up[2]:,.0f} | "
                     f"**{ism[0] / up[0]:.1f}×** | {cpu_ism[0]:.2f} | {cpu_up[0]:.2f} | {rss[0]:.1f} |")
    return lines


lines = [f"# ism_state benchmark ({mode})", "", f"Machine: {machine()}."]
medians = {}
tables = os.path.join(out, "tables.tsv")
if os.path.exists(tables):
    rows = load_rows(tables)
    for r in rows:
        r["acked_per_s"] = acked_rate(r)
        r["cpu_us"] = cpu_per_record(r)
    section, medians = tables_section(rows)
    lines += section
latency = os.path.join(out, "latency.tsv")
if os.path.exists(latency):
    lines += latency_section(latency)
router = os.path.join(out, "router.tsv")
if os.path.exists(router):
    lines += router_section(load_rows(router))

rss = os.path.join(out, "rss.tsv")
if os.path.exists(rss):
    with open(rss) as f:
        samples = [tuple(map(float, line.split())) for line in f if line.strip()]
    t0 = samples[0][0]
    with open(os.path.join(out, "rss.dat"), "w") as f:
        for t, kb in samples:
            f.write(f"{t - t0:.1f} {kb / 1024:.1f}\n")
    mbs = [kb / 1024 for _, kb in samples]
    tenth = max(len(mbs) // 10, 1)
    lines += ["", "## The writer's memory over 10,000,000 records", "",
              f"{len(samples)} samples over {samples[-1][0] - t0:.0f} s: private RSS "
              f"{min(mbs):.1f} .. {max(mbs):.1f} MB; median of the first tenth "
              f"{statistics.median(mbs[:tenth]):.1f} MB, of the last tenth "
              f"{statistics.median(mbs[-tenth:]):.1f} MB (rss.png)."]
    with open(os.path.join(out, "rss-run.tsv")) as f:
        lines += ["", "```", f.read().strip(), "```"]
    subprocess.run(["gnuplot", "-e", f"""
        set terminal png size 800,400 noenhanced; set output '{out}/rss.png';
        set title "ism_state writer, private RSS while writing 10,000,000 records";
        set xlabel 'seconds'; set ylabel 'MB'; set yrange [0:{max(mbs) * 1.5:.0f}]; set grid;
        plot '{out}/rss.dat' using 1:2 with lines title 'RssAnon'"""], check=True)

if medians:
    with open(os.path.join(out, "tables.dat"), "w") as f:
        for name, label in CASES:
            if name in medians:
                f.write(f'"{name}" {medians[name]:.0f}\n')
    subprocess.run(["gnuplot", "-e", f"""
        set terminal png size 900,450 noenhanced; set output '{out}/tables.png';
        set title 'Records per second into PostgreSQL (median)'; set style fill solid;
        set boxwidth 0.6; set logscale y; set grid y; set ylabel 'records/s (log scale)';
        plot '{out}/tables.dat' using 0:2:xtic(1) with boxes notitle,
             '' using 0:2:(sprintf('%.0f', $2)) with labels offset 0,1 notitle"""], check=True)
    lines += ["", "![records per second](tables.png)"]
if os.path.exists(latency):
    lines += ["", "![latency at a steady load](latency.png)"]
if os.path.exists(rss):
    lines += ["", "![writer memory](rss.png)"]

with open(os.path.join(out, "results.md"), "w") as f:
    f.write("\n".join(lines) + "\n")
