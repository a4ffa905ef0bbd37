"""Scaling curve: RFM, the monthly retention matrix and the 5-step funnel, this project against idiomatic pandas.

At each size (``--orders``, default 1M, 3M and 10M orders, with ``--events-per-order`` web events per
order, default 5, about the demo's ratio) both contenders compute the same result from the same data:

* RFM: ``bench_rfm.run_crm_analytics`` (Ibis on a DuckDB file) and ``bench_rfm.run_pandas``;
* retention matrix: ``bench_cohort.run_crm_analytics`` and ``bench_cohort.run_pandas`` (both read the
  Parquet file inside the timing, as in that benchmark);
* funnel: ``bench_funnel``'s ``crm_analytics`` and ``pandas`` contenders (data loaded before timing).

Each measurement runs in a fresh process (its own peak memory) with one warm-up and ``--repeats``
timed runs; the median is reported. Prints a Markdown table, and writes it with a log-log chart of
wall time against rows (``--chart``, default ``benchmarks/scaling.png``) and the figures as JSON.

    python benchmarks/bench_scaling.py                              # 1M, 3M, 10M orders (several minutes)
    python benchmarks/bench_scaling.py --orders 100000 300000 --repeats 1   # quick
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

ANALYSES = ("rfm", "cohort", "funnel")
CONTENDERS = ("crm_analytics", "pandas")


def write_inputs(folder: Path, n_orders: int, n_events: int) -> dict[str, Path]:
    """Write the synthetic orders (Parquet and DuckDB file) and web events (Parquet); return their paths.

    Orders: ``bench_rfm.synthetic_orders`` with one customer per 10 orders. Events:
    ``bench_funnel.synthetic_events`` over one customer per 50 events.
    """
    import bench_funnel
    import bench_rfm

    orders = bench_rfm.synthetic_orders(n_orders, max(n_orders // 10, 1))
    parquet, database = bench_rfm.write_data(folder, orders)
    del orders
    events = folder / "web_events.parquet"
    bench_funnel.synthetic_events(max(n_events // 50, 1), n_events).to_parquet(events, index=False)
    return {"orders_parquet": parquet, "orders_duckdb": database, "events_parquet": events}


def measure(analysis: str, contender: str, inputs: dict[str, Path], repeats: int) -> dict:
    """Median wall seconds, peak extra memory (MiB) and result rows of one contender on one analysis."""
    from _measure import time_repeats

    if analysis == "rfm":
        import bench_rfm

        runner = bench_rfm.run_crm_analytics if contender == "crm_analytics" else bench_rfm.run_pandas
        figures = runner(inputs["orders_duckdb"], inputs["orders_parquet"], repeats)
        return {"median_s": figures["median_s"], "peak_mb": figures["peak_mb"], "rows": figures["n_customers"]}
    if analysis == "cohort":
        import bench_cohort

        path = str(inputs["orders_parquet"])
        figures = time_repeats(lambda: bench_cohort.RUNNERS[contender](path), repeats)
    else:
        import bench_funnel

        prepare, run = bench_funnel._contender(contender, str(inputs["events_parquet"]))
        data = prepare()
        figures = time_repeats(lambda: run(data), repeats)
    return {"median_s": figures["median_s"], "peak_mb": figures["peak_mb"], "rows": len(figures["result"])}


def _worker(analysis: str, contender: str, inputs: dict[str, Path], repeats: int, queue) -> None:
    try:
        queue.put(measure(analysis, contender, inputs, repeats))
    except Exception as error:  # report, never leave the parent waiting
        queue.put({"error": f"{type(error).__name__}: {error}"})


def measure_in_process(analysis: str, contender: str, inputs: dict[str, Path], repeats: int) -> dict:
    """``measure`` in a fresh spawned process, so each contender's memory is its own."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_worker, args=(analysis, contender, inputs, repeats, queue))
    process.start()
    outcome = queue.get()
    process.join()
    if "error" in outcome:
        raise RuntimeError(f"{analysis} / {contender}: {outcome['error']}")
    return outcome


def markdown_table(rows: list[dict]) -> str:
    """The figures as a Markdown table, one row per analysis and size."""
    lines = [
        "| analysis | input rows | this project (s) | pandas (s) | pandas / this | this project peak (MiB) | pandas peak (MiB) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for row in rows:
        lines.append(
            f"| {row['analysis']} | {row['input_rows']:,} | {row['crm_analytics_s']:.2f} | {row['pandas_s']:.2f} "
            f"| {row['pandas_s'] / row['crm_analytics_s']:.1f} | {row['crm_analytics_peak_mb']:.0f} | {row['pandas_peak_mb']:.0f} |"
        )
    return "\n".join(lines)


def plot_scaling(rows: list[dict], path: Path) -> None:
    """Log-log chart of median wall seconds against input rows, one panel per analysis."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter

    figure, axes = plt.subplots(1, len(ANALYSES), figsize=(4 * len(ANALYSES), 3.6), sharey=True)
    for ax, analysis in zip(axes, ANALYSES):
        mine = [r for r in rows if r["analysis"] == analysis]
        for contender, style in (("crm_analytics", "o-"), ("pandas", "s--")):
            ax.plot([r["input_rows"] for r in mine], [r[f"{contender}_s"] for r in mine], style,
                    label="this project" if contender == "crm_analytics" else "pandas")
        ax.set(xscale="log", yscale="log", title=analysis,
               xlabel="events" if analysis == "funnel" else "orders")
        ax.xaxis.set_minor_formatter(NullFormatter())  # decade labels only: minor ones collide
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("median wall time (s)")
    axes[0].legend()
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, nargs="+", default=[1_000_000, 3_000_000, 10_000_000])
    parser.add_argument("--events-per-order", type=float, default=5.0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chart", default=str(HERE / "scaling.png"))
    parser.add_argument("--json", default="", help="also write the figures to this JSON file")
    args = parser.parse_args(argv)

    rows = []
    for n_orders in args.orders:
        n_events = int(n_orders * args.events_per_order)
        with tempfile.TemporaryDirectory(prefix="crm-bench-scaling-") as folder:
            started = time.perf_counter()
            inputs = write_inputs(Path(folder), n_orders, n_events)
            print(f"{n_orders:,} orders and {n_events:,} events written in {time.perf_counter() - started:.0f} s", flush=True)
            for analysis in ANALYSES:
                figures = {c: measure_in_process(analysis, c, inputs, args.repeats) for c in CONTENDERS}
                if figures["crm_analytics"]["rows"] != figures["pandas"]["rows"]:
                    print(f"ERROR: {analysis} results differ in rows: {figures}", file=sys.stderr)
                    return 1
                row = {"analysis": analysis, "input_rows": n_events if analysis == "funnel" else n_orders}
                for contender, values in figures.items():
                    row[f"{contender}_s"] = values["median_s"]
                    row[f"{contender}_peak_mb"] = values["peak_mb"]
                rows.append(row)
                print(f"  {analysis}: this project {row['crm_analytics_s']:.2f} s, pandas {row['pandas_s']:.2f} s", flush=True)

    rows.sort(key=lambda r: (ANALYSES.index(r["analysis"]), r["input_rows"]))
    print(f"\nmedian of {args.repeats} runs after a warm-up; each contender in its own process\n")
    print(markdown_table(rows))
    plot_scaling(rows, Path(args.chart))
    print(f"\nchart: {args.chart}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
