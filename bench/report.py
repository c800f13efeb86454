#!/usr/bin/env python3
"""Aggregates the JSON lines scripts/bench collected into one Markdown report.

Every line is one run of one workload: {"label": ..., <metrics>}. Runs with the same label
are summarised as median [min-max]. The goals of issue 6 are then checked as ratios of
medians, measured in the same run of the harness; so are those of issue 12 (opserver over
TLS against gRPC with TLS and sftp aes128-gcm), from the TLS section.

    report.py RESULTS.jsonl [--meta META.json] [--out FILE]
"""
import argparse
import json
import statistics
import sys
from collections import defaultdict


def load(path):
    runs = defaultdict(list)
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line.startswith("{"):
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if "label" in rec:
                runs[rec["label"]].append(rec)
    return runs


class Stat:
    def __init__(self, values):
        self.values = sorted(values)
        self.n = len(values)
        self.median = statistics.median(values) if values else None
        self.min = self.values[0] if values else None
        self.max = self.values[-1] if values else None


def stat(runs, label, key):
    vals = [r[key] for r in runs.get(label, []) if isinstance(r.get(key), (int, float))]
    return Stat(vals) if vals else None


def num(v, digits=None):
    if v is None:
        return "–"
    if digits is None:
        digits = 0 if abs(v) >= 100 else (1 if abs(v) >= 10 else 2)
    return f"{v:,.{digits}f}"


def cell(s, digits=None):
    if s is None:
        return "–"
    if s.n == 1:
        return num(s.median, digits)
    return f"{num(s.median, digits)} [{num(s.min, digits)}–{num(s.max, digits)}]"


def best(runs, labels, key):
    """The label (and its Stat) with the highest median among those present."""
    found = [(l, stat(runs, l, key)) for l in labels]
    found = [(l, s) for l, s in found if s is not None]
    if not found:
        return None, None
    return max(found, key=lambda x: x[1].median)


def lowest(runs, labels, key):
    found = [(l, stat(runs, l, key)) for l in labels]
    found = [(l, s) for l, s in found if s is not None]
    if not found:
        return None, None
    return min(found, key=lambda x: x[1].median)


def make_ratio_row(runs, rows):
    """A function that appends one goal row: opserver's median against a reference's."""

    def ratio_row(workload, ops_label, key, ref_name, ref_label, ref_stat, factor, unit,
                  higher_is_better=True):
        ops = stat(runs, ops_label, key)
        if ops is None or ref_stat is None or not ref_stat.median:
            rows.append((workload, cell(ops) + unit if ops else "–",
                         f"{ref_name}: " + (cell(ref_stat) + unit if ref_stat else "not measured"),
                         "–", f"≥ {factor} ×" if higher_is_better else f"≤ {factor} ×", "not measured"))
            return
        r = ops.median / ref_stat.median
        ok = r >= factor if higher_is_better else r <= factor
        rows.append((workload, cell(ops) + unit, f"{ref_name} ({ref_label}): {cell(ref_stat)}{unit}",
                     f"{r:.2f} ×", ("≥ " if higher_is_better else "≤ ") + f"{factor} ×",
                     "met" if ok else "MISSED"))

    return ratio_row


def goals(runs):
    """Rows: (workload, opserver figure, reference, ratio, goal, verdict)."""
    rows = []
    ratio_row = make_ratio_row(runs, rows)

    # Download 1 GiB.
    l, s = best(runs, ["iperf3-1m-down"], "mib_s")
    ratio_row("download 1 GiB", "ops-download-1g", "mib_s", "iperf3 -l 1M", l, s, 0.8, " MiB/s")
    l, s = best(runs, ["grpc-download-1g-64k", "grpc-download-1g-1m"], "mib_s")
    ratio_row("download 1 GiB", "ops-download-1g", "mib_s", "gRPC", l, s, 2, " MiB/s")
    l, s = best(runs, ["sftp-aes128-gcm-get", "sftp-chacha20-get"], "mib_s")
    ratio_row("download 1 GiB", "ops-download-1g", "mib_s", "sftp", l, s, 6, " MiB/s")

    # Upload 1 GiB with sha256 and fsync.
    l, s = lowest(runs, ["iperf3-1m-up", "sha256"], "mib_s")
    ratio_row("upload 1 GiB, sha256 + fsync", "ops-upload-1g", "mib_s",
              "min(iperf3 -l 1M, sha256)", l, s, 0.8, " MiB/s")
    l, s = best(runs, ["grpc-upload-1g-64k", "grpc-upload-1g-1m"], "mib_s")
    ratio_row("upload 1 GiB, sha256 + fsync", "ops-upload-1g", "mib_s", "gRPC", l, s, 3, " MiB/s")
    l, s = best(runs, ["sftp-aes128-gcm-put", "sftp-chacha20-put"], "mib_s")
    ratio_row("upload 1 GiB, sha256 + fsync", "ops-upload-1g", "mib_s", "sftp", l, s, 4, " MiB/s")
    # Resumable upload (64 MiB appends, each fsynced) within 10 % of the plain upload.
    for suffix in ("", "-disk"):
        s = stat(runs, f"ops-upload-1g{suffix}", "mib_s")
        ratio_row(f"resumable upload 1 GiB{suffix and ' (disk)'}", f"ops-resumable-1g{suffix}",
                  "mib_s", "plain upload", f"ops-upload-1g{suffix}", s, 0.9, " MiB/s")

    # Small operations.
    for op in ("describe", "list"):
        s = stat(runs, f"grpc-pingpong-{op}", "rate")
        ratio_row(f"{op}, 1×1 ping-pong: rate", f"ops-pingpong-{op}", "rate", "gRPC async unary",
                  f"grpc-pingpong-{op}", s, 2, " /s")
        s = stat(runs, f"grpc-pingpong-{op}", "p99_us")
        ratio_row(f"{op}, 1×1 ping-pong: p99", f"ops-pingpong-{op}", "p99_us", "gRPC p99",
                  f"grpc-pingpong-{op}", s, 1, " µs", higher_is_better=False)
    for op in ("describe", "list"):
        s = stat(runs, f"grpc-pipeline-{op}", "rate")
        ratio_row(f"{op}, 64 conn × 16 deep", f"ops-pipeline-{op}", "rate", "gRPC",
                  f"grpc-pipeline-{op}", s, 2, " /s")
        lean = stat(runs, f"ops-pipeline-{op}-lean", "rate")
        if lean:
            ratio_row(f"{op}, 64 conn × 16 deep (lean reader)", f"ops-pipeline-{op}-lean", "rate",
                      "gRPC", f"grpc-pipeline-{op}", s, 2, " /s")

    # Tuned: one server thread each (the one CPU the server is pinned to).
    for op in ("describe", "list"):
        s = stat(runs, f"grpc-t1-pingpong-{op}", "rate")
        ratio_row(f"{op}, 1×1 ping-pong, 1 server thread each: rate", f"ops-io1-pingpong-{op}",
                  "rate", "gRPC, 1 CQ thread", f"grpc-t1-pingpong-{op}", s, 2, " /s")
        s = stat(runs, f"grpc-t1-pingpong-{op}", "p99_us")
        ratio_row(f"{op}, 1×1 ping-pong, 1 server thread each: p99", f"ops-io1-pingpong-{op}",
                  "p99_us", "gRPC, 1 CQ thread", f"grpc-t1-pingpong-{op}", s, 1, " µs",
                  higher_is_better=False)
        s = stat(runs, f"grpc-t1-pipeline-{op}", "rate")
        ratio_row(f"{op}, 64 × 16, 1 server thread each (lean reader)",
                  f"ops-io1-pipeline-{op}-lean", "rate", "gRPC, 1 CQ thread",
                  f"grpc-t1-pipeline-{op}", s, 2, " /s")

    # Absolute goals.
    def absolute(workload, label, key, limit, unit, higher_is_better):
        s = stat(runs, label, key)
        if s is None:
            rows.append((workload, "–", "–", "–", f"{'≥' if higher_is_better else '≤'} {limit}{unit}",
                         "not measured"))
            return
        ok = s.median >= limit if higher_is_better else s.median <= limit
        rows.append((workload, cell(s) + unit, "–", "–",
                     f"{'≥' if higher_is_better else '≤'} {limit:,}{unit}", "met" if ok else "MISSED"))

    absolute("10,000 idle authenticated connections: server RSS per connection", "ops-idle-10k",
             "kib_per_conn", 4, " KiB", False)
    absolute("new authenticated connections", "ops-handshakes", "rate", 10000, " /s", True)
    absolute("16 parallel 256 MiB uploads: server RSS growth", "ops-upload-16x256m",
             "server_rss_growth_mib", 64, " MiB", False)
    return rows


def tls_size(runs):
    """The transfer size in the TLS section's labels (1G, or 64M with --quick), or None."""
    for label in sorted(runs):
        if label.startswith("ops-tls-upload-"):
            return label[len("ops-tls-upload-"):]
    return None


def paired(runs, a_label, a_key, b_label, b_key):
    """The ratios a/b repetition by repetition (the i-th run of each label ran in the same
    repetition), or None when the two labels do not have one run each per repetition."""
    a = [r.get(a_key) for r in runs.get(a_label, [])]
    b = [r.get(b_key) for r in runs.get(b_label, [])]
    if not a or len(a) != len(b) or not all(isinstance(v, (int, float)) and v for v in a + b):
        return None
    return Stat([x / y for x, y in zip(a, b)])


def tls_goals(runs):
    """Issue 12's goals: opserver over TLS against gRPC with TLS and sftp aes128-gcm, all
    from the TLS section of one run (the same rows, interleaved per repetition). Rows:
    (workload, opserver, reference, ratio of medians, per-repetition ratios, goal, verdict)."""
    size = tls_size(runs)
    if size is None:
        return []
    rows = []
    ratio_row = make_ratio_row(runs, rows)

    def sftp(label):
        """sftp's rate without its connection and login when measured (opserver's and gRPC's
        rows connect before their clock starts), else the whole command's."""
        s = stat(runs, label, "mib_s_after_connect")
        if s:
            return "sftp aes128-gcm, after its connection", label, s, "mib_s_after_connect"
        return "sftp aes128-gcm", label, stat(runs, label, "mib_s"), "mib_s"

    def goal(workload, ops_label, key, ref_name, ref_label, ref_stat, ref_key, factor, unit):
        ratio_row(workload, ops_label, key, ref_name, ref_label, ref_stat, factor, unit)
        p = paired(runs, ops_label, key, ref_label, ref_key) if ref_label else None
        row = rows.pop()
        rows.append(row[:4] + ((cell(p) + " ×") if p else "–",) + row[4:])

    name, l, s, k = sftp(f"sftp-aes128-gcm-get-{size}")
    goal(f"download {size}", f"ops-tls-download-{size}", "mib_s", name, l, s, k, 2, " MiB/s")
    l, s = best(runs, [f"grpc-tls-download-{size}-64k", f"grpc-tls-download-{size}-1m"], "mib_s")
    goal(f"download {size}", f"ops-tls-download-{size}", "mib_s", "gRPC-TLS", l, s, "mib_s", 1.5,
         " MiB/s")
    name, l, s, k = sftp(f"sftp-aes128-gcm-put-{size}")
    goal(f"upload {size}, sha256 + fsync", f"ops-tls-upload-{size}", "mib_s", name + " (put -f)",
         l, s, k, 2, " MiB/s")
    s = stat(runs, "grpc-tls-pingpong-describe", "rate")
    goal("describe, 1×1 ping-pong: rate", "ops-tls-pingpong-describe", "rate", "gRPC-TLS",
         "grpc-tls-pingpong-describe", s, "rate", 2, " /s")
    # Reported, no factor: TLS handshakes beside plain ones, with the server's CPU.
    tls, plain = stat(runs, "ops-tls-handshakes", "rate"), stat(runs, "ops-plain-handshakes", "rate")
    tcpu = stat(runs, "ops-tls-handshakes", "server_cpu_us_per_conn")
    pcpu = stat(runs, "ops-plain-handshakes", "server_cpu_us_per_conn")
    if tls and plain:
        p = paired(runs, "ops-tls-handshakes", "rate", "ops-plain-handshakes", "rate")
        rows.append(("new authenticated connections (2 client threads)",
                     f"TLS: {cell(tls)} /s, server {cell(tcpu)} µs CPU each",
                     f"plain opserver: {cell(plain)} /s, server {cell(pcpu)} µs CPU each",
                     f"{tls.median / plain.median:.2f} ×", (cell(p) + " ×") if p else "–",
                     "reported", "reported"))
    return rows


def tls_side_by_side(runs):
    """Rows: (measure, plain opserver, opserver TLS, TLS / plain, gRPC-TLS, TLS / gRPC-TLS,
    sftp aes128-gcm, TLS / sftp): medians of the TLS section, server CPU beside each rate."""
    size = tls_size(runs)
    if size is None:
        return []

    def pick(labels, key):
        return best(runs, labels, key)[1]

    def ratio(a, b):
        return f"{a.median / b.median:.2f} ×" if a and b and b.median else "–"

    spec = [
        ("ping-pong describe, /s", "rate", ["ops-plain-pingpong-describe"],
         ["ops-tls-pingpong-describe"], ["grpc-tls-pingpong-describe"], []),
        ("ping-pong describe, p99 µs", "p99_us", ["ops-plain-pingpong-describe"],
         ["ops-tls-pingpong-describe"], ["grpc-tls-pingpong-describe"], []),
        ("ping-pong describe, server CPU µs/op", "server_cpu_us_per_op",
         ["ops-plain-pingpong-describe"], ["ops-tls-pingpong-describe"],
         ["grpc-tls-pingpong-describe"], []),
        ("ping-pong list, /s", "rate", ["ops-plain-pingpong-list"], ["ops-tls-pingpong-list"],
         ["grpc-tls-pingpong-list"], []),
        ("pipeline describe 64 × 16, /s", "rate", ["ops-plain-pipeline-describe"],
         ["ops-tls-pipeline-describe"], [], []),
        (f"download {size}, MiB/s", "mib_s", [f"ops-plain-download-{size}"],
         [f"ops-tls-download-{size}"],
         [f"grpc-tls-download-{size}-64k", f"grpc-tls-download-{size}-1m"],
         [f"sftp-aes128-gcm-get-{size}"]),
        (f"download {size}, MiB/s; sftp after its connection", "mib_s",
         [f"ops-plain-download-{size}"], [f"ops-tls-download-{size}"],
         [f"grpc-tls-download-{size}-64k", f"grpc-tls-download-{size}-1m"],
         [f"sftp-aes128-gcm-get-{size}"], "mib_s_after_connect"),
        (f"download {size}, server CPU s/GiB", "server_cpu_s_per_gib",
         [f"ops-plain-download-{size}"], [f"ops-tls-download-{size}"],
         [f"grpc-tls-download-{size}-64k", f"grpc-tls-download-{size}-1m"],
         [f"sftp-aes128-gcm-get-{size}"]),
        (f"download {size}, client CPU s/GiB", "client_cpu_s_per_gib",
         [f"ops-plain-download-{size}"], [f"ops-tls-download-{size}"],
         [f"grpc-tls-download-{size}-64k", f"grpc-tls-download-{size}-1m"],
         [f"sftp-aes128-gcm-get-{size}"]),
        (f"upload {size} (sha256 + fsync), MiB/s", "mib_s", [f"ops-plain-upload-{size}"],
         [f"ops-tls-upload-{size}"],
         [f"grpc-tls-upload-{size}-64k", f"grpc-tls-upload-{size}-1m"],
         [f"sftp-aes128-gcm-put-{size}"]),
        (f"upload {size}, MiB/s; sftp after its connection", "mib_s",
         [f"ops-plain-upload-{size}"], [f"ops-tls-upload-{size}"],
         [f"grpc-tls-upload-{size}-64k", f"grpc-tls-upload-{size}-1m"],
         [f"sftp-aes128-gcm-put-{size}"], "mib_s_after_connect"),
        (f"upload {size}, server CPU s/GiB", "server_cpu_s_per_gib", [f"ops-plain-upload-{size}"],
         [f"ops-tls-upload-{size}"],
         [f"grpc-tls-upload-{size}-64k", f"grpc-tls-upload-{size}-1m"],
         [f"sftp-aes128-gcm-put-{size}"]),
        (f"upload {size}, client CPU s/GiB", "client_cpu_s_per_gib", [f"ops-plain-upload-{size}"],
         [f"ops-tls-upload-{size}"],
         [f"grpc-tls-upload-{size}-64k", f"grpc-tls-upload-{size}-1m"],
         [f"sftp-aes128-gcm-put-{size}"]),
        ("new connections, /s", "rate", ["ops-plain-handshakes"], ["ops-tls-handshakes"],
         ["grpc-tls-handshakes"], []),
        ("new connections, server CPU µs each", "server_cpu_us_per_conn",
         ["ops-plain-handshakes"], ["ops-tls-handshakes"], ["grpc-tls-handshakes"], []),
    ]
    rows = []
    for what, key, plain_l, tls_l, grpc_l, sftp_l, *sftp_key in spec:
        plain, tls = pick(plain_l, key), pick(tls_l, key)
        # For a CPU or latency row the gRPC figure shown is the one of the faster variant.
        grpc = pick(grpc_l, key) if key in ("rate", "mib_s") else None
        if grpc is None and grpc_l:
            fast, _ = best(runs, grpc_l, "mib_s" if "gib" in key else "rate")
            grpc = stat(runs, fast, key) if fast else None
        sftp = pick(sftp_l, sftp_key[0] if sftp_key else key) if sftp_l else None
        if not (plain or tls):
            continue
        rows.append((what, cell(plain), cell(tls), ratio(tls, plain), cell(grpc), ratio(tls, grpc),
                     cell(sftp) if sftp_l else "", ratio(tls, sftp) if sftp_l else ""))
    return rows


def tls_bounds(runs):
    """Rows: (what, MiB/s on one core, s of CPU per GiB): the ciphers' and the hash's
    ceilings beside the server CPU per GiB the TLS transfers measured."""
    rows = []
    for label, what in [("openssl-aes-128-gcm-16k", "openssl speed -evp aes-128-gcm, 16 KiB"),
                        ("openssl-aes-256-gcm-16k", "openssl speed -evp aes-256-gcm, 16 KiB"),
                        ("openssl-sha256-1m", "openssl speed -evp sha256, 1 MiB")]:
        s = stat(runs, label, "mib_s")
        if s:
            per = Stat([1024 / v for v in s.values if v])
            rows.append((what, cell(s), cell(per, 3)))
    for key, what in [("ecdsa_p256_sign_us", "openssl speed ecdsap256: one signature, µs"),
                      ("ecdsa_p256_verify_us", "openssl speed ecdsap256: one verification, µs"),
                      ("x25519_us", "openssl speed ecdhx25519: one operation, µs")]:
        s = stat(runs, "openssl-handshake-crypto", key)
        if s:
            rows.append((what, "", cell(s)))
    return rows


# Which metrics to show per label in the detail table.
DETAIL_KEYS = [
    ("mib_s", "MiB/s"), ("mib_s_after_connect", "MiB/s after connect"), ("rate", "/s"), ("p50_us", "p50 µs"), ("p99_us", "p99 µs"),
    ("kib_per_conn", "KiB/conn"), ("server_rss_growth_mib", "server RSS growth MiB"),
    ("server_cpu_us_per_op", "server CPU µs/op"), ("client_cpu_us_per_op", "client CPU µs/op"),
    ("server_cpu_us_per_conn", "server CPU µs/conn"), ("client_cpu_us_per_conn", "client CPU µs/conn"),
    ("server_cpu_s_per_gib", "server CPU s/GiB"), ("client_cpu_s_per_gib", "client CPU s/GiB"),
    ("client_core_share", "client CPU share of its core"),
    ("size_mib", "MiB"), ("seconds", "s"),
]


def derive(runs):
    for label, recs in runs.items():
        for r in recs:
            if "server_cpu_us_per_gib" in r:
                r["server_cpu_s_per_gib"] = r["server_cpu_us_per_gib"] / 1e6
            if "client_cpu_us_per_gib" in r:
                r["client_cpu_s_per_gib"] = r["client_cpu_us_per_gib"] / 1e6
            if r.get("wall_s") and "client_cpu_s" in r and r.get("mode") in ("pipeline", "pingpong"):
                r["client_core_share"] = r["client_cpu_s"] / r["wall_s"]


def render(runs, meta):
    derive(runs)
    out = []
    out.append("# opserver benchmark results\n")
    if meta:
        out.append(f"- date: {meta.get('date', '?')}; commit: `{meta.get('commit', '?')}`")
        out.append(f"- command: `{meta.get('command', '?')}`")
        out.append(f"- machine: {meta.get('machine', '?')}")
        out.append(f"- pinning: {meta.get('pinning', '?')}")
        out.append(f"- storage: {meta.get('storage', '?')}")
        out.append(f"- runs per workload: {meta.get('runs', '?')} (median [min–max])")
        if meta.get("notes"):
            for n in meta["notes"]:
                out.append(f"- {n}")
        out.append("")
    rows6 = goals(runs)
    # A --tls-only run measures none of them: no table of "not measured" rows then.
    if any(row[-1] != "not measured" for row in rows6):
        out.append("## Goals (issue 6), ratios of medians from this run\n")
        out.append("| workload | opserver | reference | ratio | goal | verdict |")
        out.append("|---|---|---|---|---|---|")
        for row in rows6:
            out.append("| " + " | ".join(row) + " |")
        out.append("")
    tls_rows = tls_goals(runs)
    if tls_rows:
        out.append("## TLS goals (issue 12), ratios of medians from the TLS section of this run\n")
        out.append("| workload | opserver over TLS | reference | ratio of medians "
                   "| ratio per repetition | goal | verdict |")
        out.append("|---|---|---|---|---|---|---|")
        for row in tls_rows:
            out.append("| " + " | ".join(row) + " |")
        out.append("")
        out.append("### TLS side by side (medians [min–max])\n")
        out.append("| measure | opserver plain | opserver TLS | TLS / plain | gRPC-TLS "
                   "| TLS / gRPC-TLS | sftp aes128-gcm | TLS / sftp |")
        out.append("|---|---|---|---|---|---|---|---|")
        for row in tls_side_by_side(runs):
            out.append("| " + " | ".join(row) + " |")
        out.append("")
        bounds = tls_bounds(runs)
        if bounds:
            out.append("### One core's ceilings (openssl speed, pinned to the server's CPU)\n")
            out.append("| what | MiB/s | CPU s per GiB (µs for the handshake's operations) |")
            out.append("|---|---|---|")
            for row in bounds:
                out.append("| " + " | ".join(row) + " |")
            out.append("")
    out.append("## Every workload\n")
    out.append("| label | runs | " + " | ".join(name for _, name in DETAIL_KEYS) + " |")
    out.append("|---|---|" + "---|" * len(DETAIL_KEYS))
    for label in sorted(l for l in runs if not l.startswith("micro:")):
        cells = [cell(stat(runs, label, k)) for k, _ in DETAIL_KEYS]
        if all(c == "–" for c in cells):
            continue
        out.append(f"| {label} | {len(runs[label])} | " + " | ".join(cells) + " |")
    out.append("")
    rows = []
    for what, info_l, warn_l, key in [
            ("64 × 16 describe (lean reader): server CPU per request", "ops-info-pipeline-describe-lean",
             "ops-warn-pipeline-describe-lean", "server_cpu_us_per_op"),
            ("64 × 16 describe (lean reader): rate", "ops-info-pipeline-describe-lean",
             "ops-warn-pipeline-describe-lean", "rate"),
            ("handshakes: server CPU per connection", "ops-info-handshakes", "ops-warn-handshakes",
             "server_cpu_us_per_conn"),
            ("handshakes: rate", "ops-info-handshakes", "ops-warn-handshakes", "rate")]:
        a, b = stat(runs, info_l, key), stat(runs, warn_l, key)
        if a and b and b.median:
            rows.append(f"| {what} | {cell(a)} | {cell(b)} | {a.median / b.median:.2f} × |")
    if rows:
        out.append("## Logging: log_level info (the default) against warn, same run\n")
        out.append("| measure | info | warn | info / warn |")
        out.append("|---|---|---|---|")
        out.extend(rows)
        out.append("")
    micro = sorted(l for l in runs if l.startswith("micro:"))
    if micro:
        out.append("## Micro benches (opsmicro, Google Benchmark, pinned to the server's CPU)\n")
        out.append("| benchmark | ns per iteration |")
        out.append("|---|---|")
        for label in micro:
            out.append(f"| {label[len('micro:'):]} | {cell(stat(runs, label, 'ns'))} |")
        out.append("")
    if meta and meta.get("weight"):
        out.append("## Weight\n")
        out.append("| what | opserver | gRPC peer |")
        out.append("|---|---|---|")
        w = meta["weight"]
        for key, name in [("binary_kib", "stripped server (KiB)"),
                          ("plugins_kib", "stripped plugins (KiB)"),
                          ("libs_kib", "non-base shared libraries loaded (KiB)"),
                          ("libs", "those libraries"),
                          ("total_kib", "total (KiB)"),
                          ("build_s", "clean build, -j2 (s)")]:
            o = w.get("opserver", {}).get(key, "–")
            g = w.get("grpc", {}).get(key, "–")
            out.append(f"| {name} | {o} | {g} |")
        out.append("")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("results")
    ap.add_argument("--meta")
    ap.add_argument("--out")
    args = ap.parse_args()
    runs = load(args.results)
    meta = {}
    if args.meta:
        with open(args.meta) as f:
            meta = json.load(f)
    text = render(runs, meta)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")
    sys.stdout.write(text + "\n")
    # Exit status: 0 whatever the goals say; scripts/bench decides what a failure is.
    return 0


if __name__ == "__main__":
    sys.exit(main())
