"""Bulk-load files from a PySpark DataFrame.

:func:`write_bulk_load` does on a cluster what ``wingkv bulkgen`` does on one machine, like
pegasus-spark: it keys every row by its wingkv partition and encoded key (the servers' own
hash and encoding, run on the executors), shuffles the rows so that Spark partition ``i`` holds
exactly wingkv partition ``i``, sorts within partitions by encoded key, and writes each
partition's SST files (a new file every ``file_size_mb``) and ``bulk_load_metadata`` from its
executor. The driver writes ``bulk_load_info`` last, once every partition succeeded, so a bulk
load never starts from a half-written layout; a failed job can simply be run again (it
overwrites the same names).

Duplicate ``(hash_key, sort_key)`` pairs are an error (``InvalidArgumentError`` naming the key),
never a silent choice: after a shuffle "the last one" means nothing. Deduplicate first, e.g.
``df.dropDuplicates([hash_key_col, sort_key_col])``.

Key and value columns are ``string`` (taken as UTF-8) or ``binary``; the TTL column, if any, is
an integer number of seconds (null or 0: never expires).
"""

import re

from . import bulkload, errors

_KEY_TYPES = ("StringType", "BinaryType")
_TTL_TYPES = ("ByteType", "ShortType", "IntegerType", "LongType")

# The last line of an executor's Python traceback, as Spark carries it in the driver's error.
_EXECUTOR_ERROR = re.compile(r"^(?:wingkv\.errors\.)?(\w+Error): (.+)$", re.MULTILINE)


def _check_columns(df, columns):
    """Raises before any job runs when a column is missing or of a type wingkv cannot store."""
    fields = {f.name: f.dataType for f in df.schema.fields}
    missing = [f"{arg}={name!r}" for arg, name in columns.items() if name is not None and name not in fields]
    if missing:
        raise ValueError(
            f"the DataFrame has no column {', '.join(missing)}; its columns are {sorted(fields)}"
        )
    for arg, name in columns.items():
        if name is None:
            continue
        kind = type(fields[name]).__name__
        allowed = _TTL_TYPES if arg == "ttl_col" else _KEY_TYPES
        if kind not in allowed:
            want = "an integer type (seconds)" if arg == "ttl_col" else "string or binary"
            raise TypeError(f"column {name!r} ({arg}) is {fields[name].simpleString()}; it must be {want}")


def _reraise_executor_error(exc):
    """An executor's wingkv, type or value error raised again in the driver, as its own class
    (the last line of the executor's traceback names it); anything else as it came."""
    found = _EXECUTOR_ERROR.findall(str(exc))
    if found:
        name, message = found[-1]
        cls = getattr(errors, name, None)
        if isinstance(cls, type) and issubclass(cls, errors.WingkvError):
            raise cls(message, name[: -len("Error")]) from exc
        builtin = {"TypeError": TypeError, "ValueError": ValueError}.get(name)
        if builtin is not None:
            raise builtin(message) from exc
    raise exc


def write_bulk_load(
    df,
    *,
    table,
    partition_count,
    provider,
    root,
    hash_key_col,
    sort_key_col,
    value_col,
    ttl_col=None,
    cluster="onebox",
    file_size_mb=64,
    provider_config=None,
    app_id=0,
):
    """Writes ``df`` as the bulk-load layout of table ``table`` (``partition_count``
    partitions) at ``provider://root/cluster/table``, ready for ``Client.start_bulk_load``.

    Returns ``{"rows", "files", "bytes", "partitions"}``. Bad arguments, missing columns and
    columns of the wrong type raise before any Spark job runs; rows wingkv cannot store (a null
    or a hash key over 64 KiB) fail the job before any file is written (they are found while
    rows are keyed, before the shuffle's writers start), raised in the driver as the
    executor's error.
    """
    bulkload.check_table_name(table)
    bulkload.check_partition_count(partition_count)
    if file_size_mb < 1:
        raise ValueError("file_size_mb must be at least 1")
    columns = {"hash_key_col": hash_key_col, "sort_key_col": sort_key_col, "value_col": value_col, "ttl_col": ttl_col}
    _check_columns(df, columns)
    selected = [hash_key_col, sort_key_col, value_col] + ([ttl_col] if ttl_col else [])
    count = partition_count
    # Where the layout goes, for the executors' writers and the driver's bulk_load_info.
    place = dict(table=table, provider=provider, root=root, cluster=cluster, provider_config=provider_config)

    def keyed(row):
        pidx, key = bulkload.partition_and_key(row[0], row[1], count)
        if row[2] is None:
            raise ValueError(f"null value at hash_key={row[0]!r}, sort_key={row[1]!r}")
        return (pidx, key), tuple(row)

    def write(index, items):
        rows = (row for _, row in items)
        summary = bulkload.write_partition(
            rows, partition_index=index, partition_count=count, file_size_mb=file_size_mb, **place
        )
        yield index, summary["rows"], summary["files"], summary["bytes"]

    ordered = (
        df.select(*selected)
        .rdd.map(keyed)
        # Spark partition i is wingkv partition i; sorted by (partition, encoded key).
        .repartitionAndSortWithinPartitions(numPartitions=count, partitionFunc=lambda k: k[0])
    )
    try:
        written = ordered.mapPartitionsWithIndex(write).collect()
    except Exception as exc:  # noqa: BLE001 (py4j's error carries the executor's)
        _reraise_executor_error(exc)
    done = sorted(w[0] for w in written)
    if done != list(range(count)):
        raise errors.InternalError(f"Spark reported partitions {done}, expected 0..{count - 1}", "Internal")
    bulkload.write_bulk_load_info(partition_count=count, app_id=app_id, **place)
    return {
        "rows": sum(w[1] for w in written),
        "files": sum(w[2] for w in written),
        "bytes": sum(w[3] for w in written),
        "partitions": count,
    }
