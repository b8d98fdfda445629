"""Tables and plots of benchmarks/compare/run: medians over the repeats, compare.md and
busbw_<coll>.png (matplotlib, Agg backend)."""
import math
import os
import statistics

GLOO_ALGOS = ["ring_chunked", "halving_doubling"]
SMALL_BYTES = 64 << 10  # sizes up to this also get a time_us table


def fmt_size(b):
    for unit, s in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if b >= s and b % s == 0:
            return "%d%s" % (b // s, unit)
    return str(b)


def bus_factor(coll, n):
    """nccl-tests' bus-bandwidth factors (as benchmarks/perf/colls.cc)."""
    if coll == "allreduce":
        return 2.0 * (n - 1) / n
    return 1.0 if coll == "broadcast" else (n - 1) / n


def summarize(runs):
    """Median, min and max over the repeats. busbw is recomputed from time_us and the size
    (the JSON rows round it to 4 decimals, too coarse for small sizes)."""
    groups = {}
    for r in runs:
        for row in r["rows"]:
            for mode in ("out_of_place", "in_place"):
                res = row.get(mode)
                if not res:
                    continue
                key = (r["coll"], r["nranks"], r["impl"], row["size"], mode)
                groups.setdefault(key, []).append(res)
    med = []
    for (coll, n, impl, size, mode), rs in sorted(groups.items()):
        us = [x["time_us"] for x in rs]
        bus = [size / (t * 1e3) * bus_factor(coll, n) if t > 0 else x["busbw_gbs"]
               for t, x in zip(us, rs)]
        med.append({"coll": coll, "nranks": n, "impl": impl, "size": size, "mode": mode,
                    "samples": len(rs), "busbw_median": statistics.median(bus),
                    "busbw_min": min(bus), "busbw_max": max(bus),
                    "time_us_median": statistics.median(us), "time_us_min": min(us),
                    "time_us_max": max(us), "wrong": sum(x["wrong"] for x in rs)})
    return med


def num(v):
    """3 significant digits, no exponent down to 0.001."""
    if v == 0 or abs(v) >= 0.001:
        return "%.*f" % (max(0, 2 - int(math.floor(math.log10(abs(v))))) if v else 0, v)
    return "%.2e" % v


def cell(m, key):
    if m is None:
        return "—"
    v, lo, hi = m[key + "_median"], m[key + "_min"], m[key + "_max"]
    if m["samples"] == 1:
        return num(v)
    return "%s (%s..%s)" % (num(v), num(lo), num(hi))


def impl_order(i):
    names = ["braid", "mpi"] + ["gloo-" + a for a in GLOO_ALGOS] + ["gloo"]
    return (names.index(i) if i in names else len(names), i)


def write_md(path, meta, med, runs, unavailable, colls, ranks):
    idx = {}
    for m in med:
        idx[(m["coll"], m["nranks"], m["impl"], m["size"], m["mode"])] = m

    def best(coll, n, impl, size):
        """Out-of-place when measured, else in-place (Gloo's reducing collectives)."""
        return idx.get((coll, n, impl, size, "out_of_place")) or \
            idx.get((coll, n, impl, size, "in_place"))

    L = ["# braid vs Open MPI vs Gloo%s" % (" — " + meta["label"] if meta["label"] else ""), ""]
    mi = meta["machine"]
    L += ["%s, %s (%s cores, %s), kernel %s, %s. Transport setting: **%s**. %s." % (
        meta["date"], mi["cpu_model"] or "?", mi["cores"], mi["memory"], mi["kernel"], mi["os"],
        meta["transport"], meta["iterations"]),
        "", "Command: `%s`" % meta["command"], "",
        "Open MPI %s, Gloo %s (Debian packages), braid %s. time in µs, the slowest rank's; busbw "
        "in GB/s from it (nccl-tests formulas); each cell is the median over %d repeat(s) with "
        "min..max. braid: braid-perf out of place, blocking calls (`-z 1`); ratios: braid's "
        "busbw over the other's (> 1: braid faster)."
        % (mi["packages"].get("openmpi-bin") or "?", mi["packages"].get("libgloo0") or "?",
           mi["braid_git"] or "?", meta["repeats"]), ""]
    L += ["Memory: GLIBC_TUNABLES='%s' for every program; transparent huge pages: %s." % (
        meta.get("glibc_tunables", ""), meta.get("thp", "?")), ""]
    mc = sorted(meta.get("memcpy_gbs") or [])
    if mc:
        mid = mc[len(mc) // 2]
        L += ["Single-thread memcpy of 256 MiB (reduce_bench, once per repeat, same run): %.2f GB/s "
              "(%.2f..%.2f)." % (mid, mc[0], mc[-1])]
        for n in ranks:
            m = best("allreduce", n, "braid", 256 << 20) if "allreduce" in colls else None
            if m is not None and n == 2:
                L.append("braid allreduce 256 MiB, 2 ranks: busbw %.2f GB/s = %.2f of memcpy." % (
                    m["busbw_median"], m["busbw_median"] / mid))
        L.append("")
    if unavailable:
        L += ["Not measured: " + "; ".join("%s: %s" % kv for kv in sorted(unavailable.items())),
              ""]
    bad = [r for r in runs if r["status"] != "ok"]
    if bad:
        L += ["Failed runs:", ""]
        for r in bad:
            L.append("- rep %d %s n=%d %s: %s (%s)" % (r["repeat"], r["coll"], r["nranks"],
                                                       r["impl"], r["status"], r["reason"][:200]))
        L.append("")
    for coll in colls:
        for n in ranks:
            impls = []
            for m in med:
                if m["coll"] == coll and m["nranks"] == n and m["impl"] not in impls:
                    impls.append(m["impl"])
            if not impls:
                continue
            impls.sort(key=impl_order)
            others = [i for i in impls if i != "braid"]
            sizes = sorted({m["size"] for m in med if m["coll"] == coll and m["nranks"] == n})
            inplace = [i for i in others if i.startswith("gloo") and any(
                best(coll, n, i, s) and best(coll, n, i, s)["mode"] == "in_place" for s in sizes)]
            L += ["## %s, %d ranks" % (coll, n), ""]
            hdr = ["size"] + ["%s busbw" % i for i in impls]
            if inplace and "braid" in impls:
                hdr.append("braid in-place busbw")
            if "braid" in impls:
                hdr += ["braid/%s" % i for i in others]
            L += ["| " + " | ".join(hdr) + " |", "|" + " --- |" * len(hdr)]
            for s in sizes:
                row = [fmt_size(s)] + [cell(best(coll, n, i, s), "busbw") for i in impls]
                bip = idx.get((coll, n, "braid", s, "in_place"))
                if inplace and "braid" in impls:
                    row.append(cell(bip, "busbw"))
                if "braid" in impls:
                    for i in others:
                        o = best(coll, n, i, s)
                        mine = bip if (o and o["mode"] == "in_place") else \
                            idx.get((coll, n, "braid", s, "out_of_place"))
                        ok = mine and o and o["busbw_median"] > 0
                        row.append("%.2f" % (mine["busbw_median"] / o["busbw_median"])
                                   if ok else "—")
                L.append("| " + " | ".join(row) + " |")
            if inplace:
                L += ["", "%s: in place (Gloo's algorithm reduces inside its buffer); the braid/"
                      "ratios against %s use braid's in-place busbw." % (
                          ", ".join(inplace), "them" if len(inplace) > 1 else "it")]
            small = [s for s in sizes if s <= SMALL_BYTES]
            if small:
                L += ["", "time_us, sizes up to %s:" % fmt_size(SMALL_BYTES), ""]
                hdr = ["size"] + ["%s time_us" % i for i in impls]
                L += ["| " + " | ".join(hdr) + " |", "|" + " --- |" * len(hdr)]
                for s in small:
                    L.append("| " + " | ".join([fmt_size(s)] + [
                        cell(best(coll, n, i, s), "time_us") for i in impls]) + " |")
            L.append("")
    with open(path, "w") as f:
        f.write("\n".join(L) + "\n")


def write_plots(out, med, colls, meta):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.ticker import FuncFormatter
    except ImportError as e:
        return [], "matplotlib unavailable: %s" % e
    files = []
    styles = ["-", "--", ":", "-."]
    colors = {"braid": "tab:blue", "mpi": "tab:orange", "gloo": "tab:green",
              "gloo-ring_chunked": "tab:green", "gloo-halving_doubling": "tab:red"}
    for coll in colls:
        ms = [m for m in med if m["coll"] == coll and m["size"] > 0]
        if not ms:
            continue
        fig, ax = plt.subplots(figsize=(8, 5))
        ranks = sorted({m["nranks"] for m in ms})
        impls = sorted({m["impl"] for m in ms}, key=impl_order)
        for impl in impls:
            for k, n in enumerate(ranks):
                pts = {}
                for m in ms:
                    if m["impl"] == impl and m["nranks"] == n:
                        # Out of place where measured (as the tables).
                        if m["size"] not in pts or m["mode"] == "out_of_place":
                            pts[m["size"]] = m
                if not pts:
                    continue
                xs = sorted(pts)
                ys = [pts[x]["busbw_median"] for x in xs]
                err = [[y - pts[x]["busbw_min"] for x, y in zip(xs, ys)],
                       [pts[x]["busbw_max"] - y for x, y in zip(xs, ys)]]
                ax.errorbar(xs, ys, yerr=err, label="%s n=%d" % (impl, n), marker="o",
                            markersize=3, capsize=2, color=colors.get(impl),
                            linestyle=styles[k % len(styles)])
        ax.set_xscale("log", base=2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: fmt_size(int(v))))
        ax.set_xlabel("size (bytes, nccl-tests convention)")
        ax.set_ylabel("busbw (GB/s), median, bars min..max")
        ax.set_title("%s — %s transport%s" % (coll, meta["transport"],
                                              (" — " + meta["label"]) if meta["label"] else ""))
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        fig.tight_layout()
        name = "busbw_%s.png" % coll
        fig.savefig(os.path.join(out, name), dpi=110)
        plt.close(fig)
        files.append(name)
    return files, None
