"""Python client throughput: the shape of `wingkv bench ycsb load` and `run --workload c` —
puts of `--records` records, then `--operations` uniform random gets, by `--threads` threads,
values of `--value-size` bytes. Prints ops/s and latency percentiles of each phase.

    python3 python/bench/client_ops.py --meta 127.0.0.1:35601 --records 200000 \\
        --operations 300000 --threads 64 --create
"""

import argparse
import os
import random
import threading
import time

import wingkv


def run_phase(name, threads, total, op):
    """Runs `op(i)` for i in 0..total on `threads` threads; prints and returns ops/s."""
    latencies = [[] for _ in range(threads)]
    errors = []

    def worker(w):
        lat = latencies[w]
        for i in range(w, total, threads):
            t0 = time.perf_counter()
            try:
                op(i)
            except Exception as exc:  # noqa: BLE001 (counted and shown)
                errors.append(exc)
            lat.append(time.perf_counter() - t0)

    started = time.perf_counter()
    pool = [threading.Thread(target=worker, args=(w,)) for w in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    elapsed = time.perf_counter() - started
    all_lat = sorted(x for lat in latencies for x in lat)

    def pct(p):
        return all_lat[min(len(all_lat) - 1, int(p / 100 * len(all_lat)))] * 1000

    rate = total / elapsed
    print(
        f"{name}: {total} ops in {elapsed:.1f} s = {rate:,.0f} ops/s; "
        f"p50 {pct(50):.2f} ms, p99 {pct(99):.2f} ms, p99.9 {pct(99.9):.2f} ms; errors {len(errors)}"
        + (f" (first: {errors[0]!r})" if errors else "")
    )
    return rate


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--meta", default="127.0.0.1:34601")
    ap.add_argument("--table", default="pybench")
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--operations", type=int, default=300_000)
    ap.add_argument("--threads", type=int, default=64)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--create", action="store_true", help="create the table (8 partitions, 3 replicas) first")
    args = ap.parse_args()

    client = wingkv.Client(meta=args.meta.split(","))
    if args.create:
        client.create_table(args.table, partition_count=8, replica_count=3)
    t = client.table(args.table)
    value = os.urandom(args.value_size)
    print(f"python {args.threads} threads, {args.value_size} B values, table {args.table}")
    run_phase("put", args.threads, args.records, lambda i: t.set(f"user{i}", b"", value))
    rnd = random.Random(1)
    keys = [f"user{rnd.randrange(args.records)}" for _ in range(args.operations)]
    run_phase("get", args.threads, args.operations, lambda i: t.get(keys[i], b""))


if __name__ == "__main__":
    main()
