"""`wingkv.bulkload`: the servers' hash and encoding, the partition writer and its errors, and a
layout written from Python loaded into a onebox and read back through the client."""

import os

import pytest

from wingkv import bulkload, errors

from conftest import unique, wait_bulk_load

# Pegasus's CRC-64 check values of DESIGN §2.
CRC64_HELLO = 0x3377857006524257


def test_partition_of_is_the_servers_hash():
    assert bulkload.partition_of(b"hello", b"anything", 8) == CRC64_HELLO % 8
    assert bulkload.partition_of("hello", "", 65536) == CRC64_HELLO % 65536
    # An empty hash key places the record by its sort key.
    assert bulkload.partition_of(b"", b"hello", 8) == CRC64_HELLO % 8
    assert bulkload.encode_key(b"ab", b"cd") == b"\x00\x02abcd"
    assert bulkload.partition_and_key(b"hello", b"x", 4) == (CRC64_HELLO % 4, b"\x00\x05hellox")


def test_bad_input_is_a_clear_error(tmp_path):
    with pytest.raises(errors.InvalidArgumentError, match="power of two"):
        bulkload.partition_of(b"h", b"s", 6)
    with pytest.raises(TypeError, match="hash_key must be bytes or str, not int"):
        bulkload.partition_of(5, b"s", 8)
    with pytest.raises(TypeError, match="sort_key must be bytes or str, not float"):
        bulkload.encode_key(b"h", 1.5)
    with pytest.raises(errors.InvalidArgumentError, match="65535"):
        bulkload.encode_key(b"x" * 65536, b"")
    root = tmp_path / "remote"
    common = dict(table="t", partition_count=1, partition_index=0, provider="local", root=str(root))
    bad_rows = [
        ([(b"h", b"s", 7)], TypeError, "row 0: value must be bytes or str, not int"),
        ([(b"a", b"s", b"v"), (b"x" * 65536, b"s", b"v")], errors.InvalidArgumentError, "row 1: .*65535"),
        ([(b"a", b"s", b"v"), (b"a", b"s", b"w")], errors.InvalidArgumentError, "duplicate key"),
        ([(b"b", b"s", b"v"), (b"a", b"s", b"w")], errors.InvalidArgumentError, "out of order"),
        ([(b"a", b"s")], ValueError, "row 0: has 2 items"),
        ([(b"a", b"s", b"v", -1)], ValueError, "row 0: ttl -1"),
        ([[b"a", b"s", b"v"]], TypeError, "row 0: must be a tuple"),
    ]
    for rows, exc, message in bad_rows:
        with pytest.raises(exc, match=message):
            bulkload.write_partition(rows, **common)
    with pytest.raises(errors.InvalidArgumentError, match="duplicate key"):
        bulkload.write_partition([(b"a", b"s", b"v"), (b"a", b"s", b"w")], sort=True, **common)
    with pytest.raises(errors.InvalidArgumentError, match="power of two"):
        bulkload.write_partition([], **{**common, "partition_count": 3})
    with pytest.raises(errors.InvalidArgumentError, match="out of range"):
        bulkload.write_partition([], **{**common, "partition_index": 1})
    with pytest.raises(errors.InvalidArgumentError, match="belongs to partition"):
        other = next(h for h in (f"h{i}".encode() for i in range(100)) if bulkload.partition_of(h, b"", 2) == 1)
        bulkload.write_partition([(other, b"s", b"v")], **{**common, "partition_count": 2})
    with pytest.raises(errors.InvalidArgumentError, match="unknown bulk-load provider 'ftp'"):
        bulkload.write_partition([], **{**common, "provider": "ftp"})
    with pytest.raises(errors.InvalidArgumentError):
        bulkload.write_partition([], **{**common, "table": "bad/name"})
    # Nothing of any refused call reached the provider.
    assert not root.exists() or not any(root.rglob("*.sst")), list(root.rglob("*"))


def test_rows_round_trip_with_ttl_and_rolled_files(tmp_path):
    root = str(tmp_path / "remote")
    rows = [(f"user{i}".encode(), b"profile", os.urandom(200), 3600 if i % 3 == 0 else None) for i in range(5000)]
    mine = [r for r in rows if bulkload.partition_of(r[0], r[1], 4) == 2]
    summary = bulkload.write_partition(
        reversed(mine), table="t", partition_index=2, partition_count=4, provider="local", root=root,
        sort=True, file_size_mb=1,
    )
    assert summary["rows"] == len(mine) and summary["files"] >= 1
    back = bulkload.read_partition(table="t", partition_index=2, provider="local", root=root)
    by_key = {(hk, sk): (v, ttl) for hk, sk, v, ttl in mine}
    assert [(hk, sk) for hk, sk, _, _ in back] == sorted(by_key, key=lambda k: bulkload.encode_key(*k))
    for hk, sk, v, expire_ts in back:
        value, ttl = by_key[(hk, sk)]
        assert v == value
        assert (expire_ts > 0) == (ttl is not None)
    # A partition with no rows has metadata and no files.
    assert bulkload.write_partition([], table="t", partition_index=0, partition_count=4, provider="local",
                                    root=root)["files"] == 0
    assert bulkload.read_partition(table="t", partition_index=0, provider="local", root=root) == []


def test_a_layout_written_from_python_loads_into_a_table(client, tmp_path):
    name = unique("pyload")
    n = 4
    client.create_table(name, partition_count=n)
    root = str(tmp_path / "bl")
    parts = [[] for _ in range(n)]
    rows = {(f"k{i}".encode(), f"s{i % 7}".encode()): f"value-{i}".encode() for i in range(20000)}
    for (hk, sk), v in rows.items():
        parts[bulkload.partition_of(hk, sk, n)].append((hk, sk, v))
    for i, part in enumerate(parts):
        bulkload.write_partition(part, table=name, partition_index=i, partition_count=n, provider="local",
                                 root=root, sort=True)
    bulkload.write_bulk_load_info(table=name, partition_count=n, provider="local", root=root)
    started = client.start_bulk_load(name, "local", root)
    assert started["status"] in ("BLS_DOWNLOADING", "BLS_DOWNLOADED", "BLS_INGESTING", "BLS_SUCCEED"), started
    wait_bulk_load(client, name)
    t = client.table(name)
    assert {(hk, sk): v for hk, sk, v in t.full_scan()} == rows
    # A layout for another partition count is refused by the meta, naming the mismatch.
    client.clear_bulk_load(name)
    bulkload.write_bulk_load_info(table=name, partition_count=8, provider="local", root=root)
    with pytest.raises(errors.InvalidArgumentError, match="8 partitions"):
        client.start_bulk_load(name, "local", root)
    client.drop_table(name)


@pytest.fixture
def moto_s3(tmp_path):
    """`(endpoint, bucket)` of a moto S3 server on a free loopback port, stopped afterwards."""
    import http.client
    import subprocess
    import sys

    from conftest import free_ports, wait_for

    try:
        import moto.server  # noqa: F401
    except ImportError as exc:
        pytest.fail(f"moto is missing ({exc}): ./run.sh test installs it (pip install 'moto[server]')")
    port = free_ports(1)
    log = open(tmp_path / "moto.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)
    try:
        def bucket_created():
            assert proc.poll() is None, f"moto exited: {proc.returncode}"
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            conn.request("PUT", "/layouts")
            return conn.getresponse().status == 200

        wait_for("moto to create the bucket", 60, bucket_created, interval_s=0.2)
        yield f"http://127.0.0.1:{port}", "layouts"
    finally:
        proc.kill()
        proc.wait()
        log.close()


def test_the_s3_provider_round_trips(moto_s3):
    endpoint, bucket = moto_s3
    config = {"s3": {"endpoint": endpoint, "bucket": bucket, "access_key_id": "test",
                     "secret_access_key": "test", "allow_http": True}}
    rows = [(f"h{i}".encode(), b"s", f"v{i}".encode()) for i in range(3000)]
    mine = [r for r in rows if bulkload.partition_of(r[0], r[1], 2) == 1]
    where = dict(table="t", provider="s3", root="bulk/root", provider_config=config)
    summary = bulkload.write_partition(mine, partition_index=1, partition_count=2, sort=True, **where)
    assert summary["rows"] == len(mine)
    bulkload.write_bulk_load_info(partition_count=2, **where)
    back = bulkload.read_partition(partition_index=1, **where)
    assert sorted((hk, sk, v) for hk, sk, v, _ in back) == sorted(mine)
    with pytest.raises(ValueError, match="provider_config: unknown field `endpont`"):
        bulkload.write_partition(mine, partition_index=1, partition_count=2,
                                 **{**where, "provider_config": {"s3": {"endpont": endpoint}}})
