"""Spark bulk-load generation against `wingkv bulkgen`: the same rows (hash key `k{i}`, sort key
`s`, `--value-size` random bytes), written as the bulk-load layout of `--partitions` partitions
by `wingkv.spark.write_bulk_load` on `local[2]` from Parquet, and by `wingkv bulkgen --generate`.
Prints rows/s of each. The Parquet input is written first and not timed.

    python3 python/bench/spark_bulkload.py --rows 10000000 --dir /tmp/sparkbench \\
        --wingkv target/release/wingkv
"""

import argparse
import shutil
import subprocess
import time
from pathlib import Path


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=10_000_000)
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--value-size", type=int, default=100)
    ap.add_argument("--dir", required=True, help="scratch directory (emptied first)")
    ap.add_argument("--wingkv", required=True, help="the wingkv binary, for bulkgen")
    ap.add_argument("--driver-memory", default="4g")
    args = ap.parse_args()

    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F

    from wingkv.spark import write_bulk_load

    work = Path(args.dir)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    spark = (
        SparkSession.builder.master("local[2]")
        .appName("wingkv-spark-bench")
        .config("spark.ui.enabled", "false")
        .config("spark.driver.memory", args.driver_memory)
        .getOrCreate()
    )
    parquet = str(work / "rows.parquet")
    spark.range(args.rows).select(
        F.concat(F.lit("k"), F.col("id").cast("string")).alias("hk"),
        F.lit("s").alias("sk"),
        F.expr(f"substring(repeat(sha2(cast(id as string), 256), {args.value_size // 64 + 1}), 1, {args.value_size})")
        .alias("v"),
    ).write.parquet(parquet)
    df = spark.read.parquet(parquet)

    started = time.perf_counter()
    summary = write_bulk_load(
        df, table="bench", partition_count=args.partitions, provider="local", root=str(work / "spark"),
        hash_key_col="hk", sort_key_col="sk", value_col="v",
    )
    spark_s = time.perf_counter() - started
    spark.stop()
    print(f"spark local[2]: {summary['rows']} rows, {summary['files']} files, {summary['bytes']} bytes in "
          f"{spark_s:.1f} s = {summary['rows'] / spark_s:,.0f} rows/s")

    started = time.perf_counter()
    subprocess.run(
        [args.wingkv, "bulkgen", "--table", "bench", "--partitions", str(args.partitions), "--provider", "local",
         "--root", str(work / "bulkgen"), "--generate", str(args.rows), "--value-size", str(args.value_size)],
        check=True, capture_output=True,
    )
    bulkgen_s = time.perf_counter() - started
    print(f"wingkv bulkgen: {args.rows} rows in {bulkgen_s:.1f} s = {args.rows / bulkgen_s:,.0f} rows/s")


if __name__ == "__main__":
    main()
