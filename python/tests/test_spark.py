"""`wingkv.spark.write_bulk_load` on a local[2] Spark: 1 M rows from Parquet into the bulk-load
layout, loaded into a onebox and read back; the same rows through `wingkv bulkgen` give the
same keys in every partition; bad input fails before any file is written."""

import random
import subprocess

import pytest

from wingkv import bulkload, errors

from conftest import unique, wait_bulk_load


ROWS = 1_000_000
PARTITIONS = 8


@pytest.fixture(scope="module")
def spark():
    try:
        from pyspark.sql import SparkSession
    except ImportError as exc:
        pytest.fail(f"pyspark is missing ({exc}): ./run.sh test installs it")
    session = (
        SparkSession.builder.master("local[2]")
        .appName("wingkv-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.driver.memory", "2g")
        .getOrCreate()
    )
    yield session
    session.stop()


def rows_df(spark, n):
    from pyspark.sql import functions as F

    return spark.range(n).select(
        F.concat(F.lit("k"), F.col("id").cast("string")).alias("hk"),
        F.lit("s").alias("sk"),
        F.concat(F.lit("v-"), F.sha1(F.col("id").cast("string"))).alias("v"),
        # One row in ten lives a day; the rest never expire.
        F.when(F.col("id") % 10 == 0, F.lit(86400)).alias("ttl"),
    )


def expected_value(i):
    import hashlib

    return b"v-" + hashlib.sha1(str(i).encode()).hexdigest().encode()


def test_a_spark_job_loads_a_million_rows_like_bulkgen(spark, client, wingkv_bin, tmp_path):
    from wingkv.spark import write_bulk_load

    parquet = str(tmp_path / "rows.parquet")
    rows_df(spark, ROWS).write.parquet(parquet)
    df = spark.read.parquet(parquet)

    name = unique("spark")
    client.create_table(name, partition_count=PARTITIONS)
    root = str(tmp_path / "spark-layout")
    summary = write_bulk_load(
        df, table=name, partition_count=PARTITIONS, provider="local", root=root,
        hash_key_col="hk", sort_key_col="sk", value_col="v", ttl_col="ttl", file_size_mb=2,
    )
    assert summary["rows"] == ROWS and summary["partitions"] == PARTITIONS
    assert summary["files"] > PARTITIONS, f"no partition rolled to a second file: {summary}"

    client.start_bulk_load(name, "local", root)
    wait_bulk_load(client, name)
    t = client.table(name)
    assert sum(1 for _ in t.full_scan(no_value=True, batch_size=1000)) == ROWS
    for i in random.Random(7).sample(range(ROWS), 1000):
        assert t.get(f"k{i}", "s") == expected_value(i), i
        ttl = t.ttl(f"k{i}", "s")
        assert (0 < ttl <= 86400) if i % 10 == 0 else ttl == -1, (i, ttl)

    # The same rows through `wingkv bulkgen`: the same keys (and values) in every partition.
    csv = tmp_path / "rows.csv"
    from pyspark.sql import functions as F

    df.select("hk", "sk", "v", F.coalesce(F.col("ttl"), F.lit(0))).coalesce(1).write.csv(str(csv))
    (part,) = list(csv.glob("part-*.csv"))
    bulkgen_root = str(tmp_path / "bulkgen-layout")
    subprocess.run(
        [str(wingkv_bin), "bulkgen", "--table", name, "--partitions", str(PARTITIONS), "--provider", "local",
         "--root", bulkgen_root, "--input", str(part)],
        check=True, capture_output=True, timeout=600,
    )
    for pidx in range(PARTITIONS):
        ours = bulkload.read_partition(table=name, partition_index=pidx, provider="local", root=root)
        theirs = bulkload.read_partition(table=name, partition_index=pidx, provider="local", root=bulkgen_root)
        assert len(ours) == len(theirs) > 0, pidx
        assert [r[:3] for r in ours] == [r[:3] for r in theirs], f"partition {pidx} differs"
    client.drop_table(name)


def test_bad_input_fails_before_any_file_is_written(spark, tmp_path):
    from pyspark.sql import functions as F

    from wingkv.spark import write_bulk_load

    root = tmp_path / "layout"
    args = dict(table="t", partition_count=4, provider="local", root=str(root), hash_key_col="hk",
                sort_key_col="sk", value_col="v")
    df = rows_df(spark, 1000)
    with pytest.raises(ValueError, match=r"no column value_col='value'.*columns are \['hk', 'sk', 'ttl', 'v'\]"):
        write_bulk_load(df, **{**args, "value_col": "value"})
    with pytest.raises(TypeError, match=r"column 'id' \(hash_key_col\) is bigint; it must be string or binary"):
        write_bulk_load(df.withColumn("id", F.lit(1).cast("bigint")), **{**args, "hash_key_col": "id"})
    with pytest.raises(TypeError, match=r"column 'v' \(ttl_col\) is string; it must be an integer"):
        write_bulk_load(df, **args, ttl_col="v")
    with pytest.raises(errors.InvalidArgumentError, match="power of two"):
        write_bulk_load(df, **{**args, "partition_count": 6})
    long_key = df.withColumn("hk", F.when(F.col("hk") == "k500", F.expr("repeat('x', 65536)")).otherwise(F.col("hk")))
    with pytest.raises(errors.InvalidArgumentError, match="65535"):
        write_bulk_load(long_key, **args)
    null_key = df.withColumn("hk", F.when(F.col("hk") == "k7", F.lit(None)).otherwise(F.col("hk")))
    with pytest.raises(TypeError, match="hash_key must be bytes or str, not NoneType"):
        write_bulk_load(null_key, **args)
    assert not root.exists(), f"files were written: {list(root.rglob('*'))}"
    # Duplicates are an error too, named by key (found by the writers, after the shuffle).
    dup = df.union(df.filter(F.col("hk") == "k3"))
    with pytest.raises(errors.InvalidArgumentError, match="duplicate key.*hash_key='k3'"):
        write_bulk_load(dup, **args)
    assert not (root / "onebox" / "t" / "bulk_load_info").exists(), "a failed job wrote bulk_load_info"
