#!/usr/bin/env python3
"""Charts and ratio tables from criterion's output (issue 10).

Reads target/criterion/**/<run>/estimates.json (criterion writes the latest
run under `new/`; `cargo bench -- --save-baseline NAME` also keeps it under
`NAME/`), writes SVG charts into docs/ for the batching group and for the
IOVA allocator across 1K..1M live ranges, and prints every figure of
BENCHMARKS.md as a ratio of two variants measured in the same run (with the
range over several runs when more than one is named).

    python3 scripts/charts.py                      # the latest run ("new")
    python3 scripts/charts.py --runs run1,run2,run3

Python 3 standard library only.
"""

import argparse
import json
import math
import os
import sys
from html import escape

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def load(criterion_dir, run):
    """{(group, function, value): nanoseconds} for one run. The time is
    criterion's slope estimate where it has one (linear sampling), else its
    mean: the same figure its report prints."""
    out = {}
    for dirpath, _dirs, files in os.walk(criterion_dir):
        if os.path.basename(dirpath) != run or "estimates.json" not in files:
            continue
        with open(os.path.join(dirpath, "benchmark.json")) as f:
            meta = json.load(f)
        with open(os.path.join(dirpath, "estimates.json")) as f:
            est = json.load(f)
        pick = est.get("slope") or est["mean"]
        key = (meta["group_id"], meta["function_id"], meta.get("value_str"))
        out[key] = pick["point_estimate"]
    return out


def t(data, group, function, value=None):
    return data.get((group, function, None if value is None else str(value)))


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


# (figure, target text, function of a run's data -> ratio or None, goal check)
def figures():
    rows = []

    def add(target, name, fn, goal, check):
        rows.append((target, name, fn, goal, check))

    add(1, "typed cycle / hand-written cycle (time)",
        lambda d: ratio(t(d, "zero_cost", "dmacap_typed"), t(d, "zero_cost", "hand_written")),
        "<= 1.05", lambda r: r <= 1.05)
    add(1, "typed cycle, IdentityCoherent / hand-written cycle (time)",
        lambda d: ratio(t(d, "zero_cost", "dmacap_identity_bus"), t(d, "zero_cost", "hand_written")),
        "<= 1.05", lambda r: r <= 1.05)
    add(2, "dma-api 0.10 cycle / dmacap cycle (time)",
        lambda d: ratio(t(d, "peer", "dma_api_0_10"), t(d, "peer", "dmacap_typed")),
        "(>= 8 in instructions)", None)
    for size in (4096, 1536):
        for v in ("batch", "map_sg"):
            add(3, f"64 x {size} B: {v} / line-operation limit",
                lambda d, v=v, s=size: ratio(t(d, "batching", v, s),
                                             t(d, "batching", "line_op_limit", s)),
                "<= 1.05", lambda r: r <= 1.05)
        add(3, f"64 x {size} B: one-by-one / batch",
            lambda d, s=size: ratio(t(d, "batching", "one_by_one", s), t(d, "batching", "batch", s)),
            "(reported)", None)
    for n in (1024, 16384, 262144, 1048576):
        add(4, f"IOVA alloc + free, {n} live: BTreeMap first-fit / dmacap",
            lambda d, n=n: ratio(t(d, "iova", "btreemap_first_fit", n), t(d, "iova", "dmacap", n)),
            ">= 3", lambda r: r >= 3)

    def flat(d):
        xs = [t(d, "iova", "dmacap", n) for n in (1024, 16384, 262144, 1048576)]
        if any(x is None for x in xs):
            return None
        return max(xs) / min(xs)

    add(4, "IOVA flatness: slowest / fastest of dmacap over 1K..1M live", flat,
        "<= 1.1", lambda r: r <= 1.1)

    def scaling(function):
        def f(d):
            one = t(d, "iova_threads", function, 1)
            two = t(d, "iova_threads", function, 2)
            # One iteration is one pair on each thread.
            return None if one is None or two is None else 2 * one / two
        return f

    add(4, "IOVA throughput, 2 threads / 1 thread: dmacap", scaling("dmacap"),
        ">= 1.8", lambda r: r >= 1.8)
    add(4, "IOVA throughput, 2 threads / 1 thread: BTreeMap first-fit",
        scaling("btreemap_first_fit"), "(baseline)", None)
    for size in (1500, 4096, 65536):
        add(5, f"bounced map + unmap / memcpy in + out, {size} B",
            lambda d, s=size: ratio(t(d, "bounce", "dmacap_swiotlb", s),
                                    t(d, "bounce", "memcpy_in_out", s)),
            "<= 1.2", lambda r: r <= 1.2)
    for n in (1024, 1048576):
        add(7, f"IOMMU unmap + map with a page-table walk / without, {n} live",
            lambda d, n=n: ratio(t(d, "reverse_translation", "unmap_plus_walk", n),
                                 t(d, "reverse_translation", "unmap_carried", n)),
            "(reported)", None)
    return rows


def table(runs):
    print("| target | figure (criterion time ratio, same run) | " +
          " | ".join(name for name, _ in runs) + " | goal | result |")
    print("|---|---|" + "---|" * len(runs) + "---|---|")
    for target, name, fn, goal, check in figures():
        vals = [fn(d) for _, d in runs]
        if all(v is None for v in vals):
            continue
        cells = ["–" if v is None else f"{v:.3f}" for v in vals]
        got = [v for v in vals if v is not None]
        if check is None:
            result = ""
        elif all(check(v) for v in got):
            result = "met"
        elif any(check(v) for v in got):
            result = "mixed"
        else:
            result = "missed"
        print(f"| {target} | {name} | " + " | ".join(cells) + f" | {goal} | {result} |")


# ---------------------------------------------------------------- SVG --

COLORS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2", "#b07aa1"]


def svg_doc(width, height, body, title):
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n'
            f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14" '
            f'font-weight="bold">{escape(title)}</text>\n' + "\n".join(body) + "\n</svg>\n")


def nice_max(v):
    if v <= 0:
        return 1
    e = 10 ** math.floor(math.log10(v))
    for m in (1, 2, 2.5, 5, 10):
        if m * e >= v:
            return m * e
    return 10 * e


def batching_chart(d, path, run):
    variants = [("line_op_limit", "line-op limit"), ("batch", "dev.batch()"),
                ("map_sg", "map_sg"), ("one_by_one", "one by one")]
    sizes = [4096, 1536]
    vals = {(v, s): t(d, "batching", v, s) for v, _ in variants for s in sizes}
    if all(x is None for x in vals.values()):
        return False
    W, H, left, top, bottom = 760, 380, 70, 40, 70
    plot_h = H - top - bottom
    ymax = nice_max(max(x for x in vals.values() if x is not None) / 1000)
    body = []
    for i in range(6):
        y = top + plot_h - plot_h * i / 5
        body.append(f'<line x1="{left}" x2="{W - 20}" y1="{y}" y2="{y}" stroke="#ddd"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{ymax * i / 5:g}</text>')
    body.append(f'<text x="16" y="{top + plot_h / 2}" transform="rotate(-90 16 {top + plot_h / 2})" '
                f'text-anchor="middle">µs per cycle of 64 buffers</text>')
    group_w = (W - left - 20) / len(sizes)
    bar_w = group_w / (len(variants) + 1.5)
    for gi, s in enumerate(sizes):
        x0 = left + gi * group_w + bar_w * 0.75
        limit = vals[("line_op_limit", s)]
        for vi, (v, _) in enumerate(variants):
            x = vals[(v, s)]
            if x is None:
                continue
            h = plot_h * (x / 1000) / ymax
            bx = x0 + vi * bar_w
            body.append(f'<rect x="{bx:.1f}" y="{top + plot_h - h:.1f}" width="{bar_w * 0.9:.1f}" '
                        f'height="{h:.1f}" fill="{COLORS[vi]}"/>')
            body.append(f'<text x="{bx + bar_w * 0.45:.1f}" y="{top + plot_h - h - 4:.1f}" '
                        f'text-anchor="middle" font-size="10">{x / 1000:.1f}</text>')
            if limit:
                body.append(f'<text x="{bx + bar_w * 0.45:.1f}" y="{top + plot_h - h - 16:.1f}" '
                            f'text-anchor="middle" font-size="10">{x / limit:.2f}×</text>')
        body.append(f'<text x="{left + gi * group_w + group_w / 2:.1f}" y="{top + plot_h + 18}" '
                    f'text-anchor="middle">64 × {s} B</text>')
    lx = left
    for vi, (_, name) in enumerate(variants):
        body.append(f'<rect x="{lx}" y="{H - 30}" width="12" height="12" fill="{COLORS[vi]}"/>')
        body.append(f'<text x="{lx + 16}" y="{H - 20}">{escape(name)}</text>')
        lx += 150
    title = ("Batching on x86 (clwb/clflushopt + mfence): map, sync_for_cpu, "
             f"sync_for_device, unmap [{run}]")
    with open(path, "w") as f:
        f.write(svg_doc(W, H, body, title))
    return True


def iova_chart(d, path, run):
    ns = [1024, 16384, 262144, 1048576]
    series = [("dmacap", "dmacap IovaAllocator"), ("btreemap_first_fit", "Mutex<BTreeMap> first-fit")]
    pts = {f: [(n, t(d, "iova", f, n)) for n in ns] for f, _ in series}
    if all(v is None for f in pts for _, v in pts[f]):
        return False
    W, H, left, top, bottom = 760, 380, 70, 40, 70
    plot_w, plot_h = W - left - 30, H - top - bottom
    ymax = nice_max(max(v for f in pts for _, v in pts[f] if v is not None))
    lo, hi = math.log2(ns[0]), math.log2(ns[-1])

    def px(n):
        return left + plot_w * (math.log2(n) - lo) / (hi - lo)

    def py(v):
        return top + plot_h - plot_h * v / ymax

    body = []
    for i in range(6):
        y = top + plot_h - plot_h * i / 5
        body.append(f'<line x1="{left}" x2="{left + plot_w}" y1="{y}" y2="{y}" stroke="#ddd"/>')
        body.append(f'<text x="{left - 6}" y="{y + 4}" text-anchor="end">{ymax * i / 5:g}</text>')
    for n in ns:
        label = f"{n // 1024}K" if n < 1 << 20 else f"{n >> 20}M"
        body.append(f'<text x="{px(n):.1f}" y="{top + plot_h + 18}" text-anchor="middle">{label}</text>')
    body.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 36}" text-anchor="middle">'
                'live ranges (log scale)</text>')
    body.append(f'<text x="16" y="{top + plot_h / 2}" transform="rotate(-90 16 {top + plot_h / 2})" '
                f'text-anchor="middle">ns per alloc + free pair</text>')
    for si, (f, name) in enumerate(series):
        p = [(px(n), py(v), v) for n, v in pts[f] if v is not None]
        if not p:
            continue
        body.append('<polyline fill="none" stroke="{}" stroke-width="2" points="{}"/>'.format(
            COLORS[si], " ".join(f"{x:.1f},{y:.1f}" for x, y, _ in p)))
        for x, y, v in p:
            body.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5" fill="{COLORS[si]}"/>')
            # dmacap's labels below its points, the baseline's above.
            ly = y + 16 if si == 0 else y - 8
            body.append(f'<text x="{x:.1f}" y="{ly:.1f}" text-anchor="middle" font-size="10" '
                        f'fill="{COLORS[si]}">{v:.1f}</text>')
        body.append(f'<rect x="{left + si * 260}" y="{H - 22}" width="12" height="12" fill="{COLORS[si]}"/>')
        body.append(f'<text x="{left + si * 260 + 16}" y="{H - 12}">{escape(name)}</text>')
    title = f"IOVA alloc + free of one page, 1K..1M live ranges [{run}]"
    with open(path, "w") as f:
        f.write(svg_doc(W, H, body, title))
    return True


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--criterion", default=os.path.join(ROOT, "target", "criterion"),
                    help="criterion's output directory")
    ap.add_argument("--runs", default="new",
                    help="comma-separated runs (criterion baselines); 'new' is the latest")
    ap.add_argument("--out", default=os.path.join(ROOT, "docs"), help="where the SVGs go")
    args = ap.parse_args()
    runs = [(r, load(args.criterion, r)) for r in args.runs.split(",")]
    runs = [(r, d) for r, d in runs if d]
    if not runs:
        sys.exit(f"no criterion estimates under {args.criterion} for runs {args.runs}; "
                 "run `cargo bench` first")
    table(runs)
    os.makedirs(args.out, exist_ok=True)
    name, last = runs[-1]
    for fname, fn in (("batching.svg", batching_chart), ("iova.svg", iova_chart)):
        path = os.path.join(args.out, fname)
        if fn(last, path, name):
            print(f"\nwrote {os.path.relpath(path, ROOT)} (run {name})", file=sys.stderr)


if __name__ == "__main__":
    main()
