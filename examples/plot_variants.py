#!/usr/bin/env python3
"""Charts of a compare_variants run, from the JSON its --json flag writes.

    build/examples/compare_variants --json results.json
    python3 examples/plot_variants.py results.json examples/charts

writes two PNGs into the directory (made if missing):

  decode_kv_bytes_vs_time.png  KV-cache bytes per token against the decode time per token, one
                               point per variant and cache storage (fp32, bf16), with the
                               interquartile range of the steps as an error bar;
  mha_to_mla_rank.png          MHA turned into MLA by SVD: weight and output error against the
                               latent rank, and the bf16 KV bytes per token on a second axis.

Needs matplotlib. Where this interpreter lacks it but the system's /usr/bin/python3 is another
one (a pyenv or virtualenv python3 beside Debian's python3-matplotlib), the script runs itself
again under /usr/bin/python3.
"""

import json
import os
import sys

SYSTEM_PYTHON = "/usr/bin/python3"
REEXEC_MARK = "PLOT_VARIANTS_REEXEC"  # set on the re-run, so that a failing one cannot loop


def import_pyplot():
    try:
        import matplotlib
    except ImportError:
        if (os.path.exists(SYSTEM_PYTHON)
                and os.path.realpath(SYSTEM_PYTHON) != os.path.realpath(sys.executable)
                and not os.environ.get(REEXEC_MARK)):
            os.environ[REEXEC_MARK] = "1"
            os.execv(SYSTEM_PYTHON, [SYSTEM_PYTHON] + sys.argv)
        sys.exit("plot_variants: matplotlib is missing for %s; install it "
                 "(Debian/Ubuntu: apt-get install python3-matplotlib, which serves %s; "
                 "or pip install matplotlib)" % (sys.executable, SYSTEM_PYTHON))
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    return plt


DPI = 100  # with the sizes below, PNGs of 800 x 520 pixels and well under 150 KB
STORAGE_MARKERS = {"fp32": "o", "bf16": "s"}
VARIANT_COLOURS = {"MHA": "tab:red", "GQA": "tab:orange", "MQA": "tab:green", "MLA": "tab:blue"}


def describe(run):
    """One line of what was measured, for the charts' titles."""
    s = run["settings"]
    return ("model dim %d, %d heads of %d, %d threads, %s"
            % (s["model_dim"], s["heads"], s["head_dim"], run["threads"], run["isa"]))


def busy_note(fig, run):
    """Marks a chart of timings that the run's busy-machine rule flagged."""
    count = len(run.get("warnings", []))
    if count:
        fig.text(0.01, 0.01, "%d busy-machine warning%s in this run (see the JSON's \"warnings\"): "
                 "some timings are uncertain" % (count, "" if count == 1 else "s"),
                 fontsize=8, color="tab:red", ha="left", va="bottom")


def plot_decode(plt, run, path):
    fig, ax = plt.subplots(figsize=(8, 5.2))
    for row in run["decode"]:
        t = row["seconds"]
        ms = 1e3 * t["median"]
        below, above = ms - 1e3 * t["q1"], 1e3 * t["q3"] - ms
        colour = VARIANT_COLOURS.get(row["variant"], "tab:gray")
        ax.errorbar(row["kv_bytes_per_token"], ms, yerr=[[below], [above]], capsize=3,
                    color=colour, marker=STORAGE_MARKERS.get(row["storage"], "^"),
                    markersize=8, linestyle="none")
        ax.annotate("%s %s\n(%.0f%%)"
                    % (row["variant"], row["storage"], 100 * row["fraction_of_read_peak"]),
                    (row["kv_bytes_per_token"], ms), textcoords="offset points", xytext=(7, 4),
                    fontsize=8, color=colour)
    ax.set_xscale("log", base=2)
    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda value, _: "%d" % value))
    ax.set_xlabel("KV-cache bytes per token (one layer)")
    ax.set_ylabel("decode time per token, ms (median, IQR bars)")
    ax.text(0.99, 0.02, "(n%): the step's GB/s as a share of the machine's read peak",
            transform=ax.transAxes, ha="right", va="bottom", fontsize=8, color="dimgray")
    top = max(1e3 * row["seconds"]["q3"] for row in run["decode"])
    ax.set_ylim(0, 1.2 * top)  # room above the highest point for its label
    ax.margins(x=0.15)
    ax.grid(True, which="major", alpha=0.3)
    for storage, marker in STORAGE_MARKERS.items():
        ax.plot([], [], marker=marker, color="black", linestyle="none", label=storage + " cache")
    ax.legend(loc="upper left", fontsize=9)
    ax.set_title("Decode: cache size against time, context %d tokens\n%s"
                 % (run["settings"]["context"], describe(run)), fontsize=10)
    busy_note(fig, run)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def plot_ranks(plt, run, path):
    rows = run["ranks"]["rows"]
    ranks = [row["rank"] for row in rows]
    fig, ax = plt.subplots(figsize=(8, 5.2))
    ax.plot(ranks, [row["output_error"] for row in rows], "o-", color="tab:blue",
            label="output error  max|y_MLA - y_MHA| / max|y_MHA|")
    ax.plot(ranks, [row["weight_error"] for row in rows], "s--", color="tab:purple",
            label="weight error  ||W - W_r|| / ||W||")
    # The highest rank is all of W (2048 at the defaults): the error is fp32 rounding only,
    # invisible on this axis, so it is written out.
    full = max(rows, key=lambda row: row["rank"])
    ax.annotate("rank %d: output error %.1e" % (full["rank"], full["output_error"]),
                (full["rank"], full["output_error"]), textcoords="offset points",
                xytext=(-8, 10), ha="right", fontsize=8, color="tab:blue")
    ax.set_xscale("log", base=2)
    ax.set_xticks(ranks)
    ax.set_xticklabels([str(r) for r in ranks])
    ax.set_xlabel("latent rank r")
    ax.set_ylabel("relative error")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)

    kv = ax.twinx()
    kv.plot(ranks, [row["bf16_kv_bytes_per_token"] for row in rows], ":", marker="d",
            color="tab:gray", label="bf16 KV bytes per token (right axis)")
    # The dense layer's own cache, for scale: what the conversion saves.
    mha = [row for row in run["decode"] if row["variant"] == "MHA" and row["storage"] == "bf16"]
    if mha:
        kv.axhline(mha[0]["kv_bytes_per_token"], color="tab:red", linewidth=1,
                   label="MHA's bf16 KV bytes per token (%d)" % mha[0]["kv_bytes_per_token"])
    kv.set_yscale("log", base=2)
    kv.set_yticks(sorted({row["bf16_kv_bytes_per_token"] for row in rows}
                         | {row["kv_bytes_per_token"] for row in mha}))
    kv.yaxis.set_major_formatter(plt.FuncFormatter(lambda value, _: "%d" % value))
    kv.yaxis.set_minor_locator(plt.NullLocator())
    kv.set_ylabel("bf16 KV bytes per token")

    lines = ax.get_legend_handles_labels()
    more = kv.get_legend_handles_labels()
    # Left of centre: low ranks keep the errors near 1 and the cache sizes near the bottom.
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center left", fontsize=8)
    ax.set_title("MHA -> MLA by a truncated SVD of [Wk; Wv] (%d x %d), random weights\n%s"
                 % (run["ranks"]["svd_rows"], run["ranks"]["svd_cols"], describe(run)),
                 fontsize=10)
    fig.tight_layout()  # no busy note: nothing here is a timing
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def main(argv):
    if len(argv) != 3 or argv[1] in ("-h", "--help"):
        print("usage: plot_variants.py RESULTS.json OUTPUT_DIR\n"
              "Charts a compare_variants --json run: decode_kv_bytes_vs_time.png and\n"
              "mha_to_mla_rank.png in OUTPUT_DIR.", file=sys.stderr)
        return 2
    with open(argv[1]) as f:
        run = json.load(f)
    plt = import_pyplot()
    os.makedirs(argv[2], exist_ok=True)
    for name, plot in (("decode_kv_bytes_vs_time.png", plot_decode),
                       ("mha_to_mla_rank.png", plot_ranks)):
        path = os.path.join(argv[2], name)
        plot(plt, run, path)
        print("plot_variants: wrote %s" % path)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
