"""Writing wingkv's bulk-load layout from Python.

A table's files live at ``provider://root/cluster/table``: for each partition its SST files and
``bulk_load_metadata``, then ``bulk_load_info`` for the table, written last. Write each
partition with :func:`write_partition` (anywhere: one process, many, Spark executors), then
:func:`write_bulk_load_info` once, then ``Client.start_bulk_load``::

    from wingkv import bulkload
    n = 8
    parts = [[] for _ in range(n)]
    for hk, sk, v in rows:
        parts[bulkload.partition_of(hk, sk, n)].append((hk, sk, v))
    for i, part in enumerate(parts):
        bulkload.write_partition(part, table="t", partition_index=i, partition_count=n,
                                 provider="local", root="/data/bl", sort=True)
    bulkload.write_bulk_load_info(table="t", partition_count=n, provider="local", root="/data/bl")

The hash, key encoding, value header and SST writer are the servers' own (the Rust code of
``wingkv bulkgen``), so the same rows give the same keys in the same partitions. Duplicate
keys are an error, never a silent choice: deduplicate first.

``provider`` is ``local`` (paths under ``/``, or under ``provider_config={"local_root": ...}``)
or ``s3`` (``provider_config={"s3": {"endpoint": ..., "bucket": ..., "access_key_id": ...,
"secret_access_key": ..., "allow_http": False}}``, or the standard ``AWS_*`` variables);
``provider_config`` may also be the path of the TOML file ``wingkv bulkgen`` takes.
"""

from ._native import (
    check_partition_count,
    check_table_name,
    encode_key,
    partition_and_key,
    partition_of,
    read_partition,
    write_bulk_load_info,
    write_partition,
)

__all__ = [
    "partition_of",
    "encode_key",
    "partition_and_key",
    "write_partition",
    "write_bulk_load_info",
    "read_partition",
    "check_partition_count",
    "check_table_name",
]
