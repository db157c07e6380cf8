"""The Python client against a real onebox: every operation, binary keys and values, TTL, and
errors raised as their classes."""

import pytest

import wingkv
from wingkv import errors

from conftest import unique, wait_for

BINARY = bytes(range(256))


def test_every_error_code_has_its_class():
    for code in wingkv.error_codes():
        cls = getattr(errors, f"{code}Error", None)
        assert cls is not None and issubclass(cls, errors.WingkvError), code
    assert issubclass(errors.InvalidArgumentError, ValueError)
    assert issubclass(errors.TableNotFoundError, LookupError)
    assert issubclass(errors.TimeoutError, TimeoutError)


def test_get_set_delete_exist_with_binary_keys_and_values(table):
    hk = b"\x00bin\xff" + BINARY[:16]
    for sk, value in [(b"", b""), (b"\x00", BINARY), (BINARY, b"\x00" * 1000), ("unicode-\u00e9", "value-\u00e9")]:
        table.set(hk, sk, value)
        want = value.encode() if isinstance(value, str) else value
        assert table.get(hk, sk) == want
        assert table.exist(hk, sk)
    table.set(hk, b"gone", b"x")
    table.delete(hk, b"gone")
    assert table.get(hk, b"gone") is None
    assert not table.exist(hk, b"gone")
    table.delete(hk, b"never-there")  # no error
    # bytearray is bytes too.
    table.set(bytearray(b"ba"), bytearray(b"s"), bytearray(b"v"))
    assert table.get(b"ba", b"s") == b"v"


def test_ttl_expires_and_reads_as_none(table):
    table.set(b"ttl", b"forever", b"v")
    assert table.ttl(b"ttl", b"forever") == -1
    assert table.ttl(b"ttl", b"missing") is None
    table.set(b"ttl", b"long", b"v", ttl=3600)
    assert 3500 <= table.ttl(b"ttl", b"long") <= 3600
    table.set(b"ttl", b"short", b"v", ttl=1)
    assert table.get(b"ttl", b"short") in (b"v", None)
    wait_for("the 1 s record to expire", 10, lambda: table.get(b"ttl", b"short") is None)
    assert not table.exist(b"ttl", b"short")
    with pytest.raises(ValueError, match="ttl must be >= 0"):
        table.set(b"ttl", b"neg", b"v", ttl=-5)


def test_incr(table):
    hk = unique("incr")
    assert table.incr(hk, b"n") == 1
    assert table.incr(hk, b"n", 41) == 42
    assert table.incr(hk, b"n", -2) == 40
    assert table.get(hk, b"n") == b"40"
    table.set(hk, b"text", b"not a number")
    with pytest.raises(errors.InvalidArgumentError):
        table.incr(hk, b"text")


def test_check_and_set(table):
    hk = unique("cas")
    assert table.check_and_set(hk, b"lock", "value_not_exist", b"", b"lock", b"owner-1") == (True, None)
    set_, checked = table.check_and_set(hk, b"lock", "value_not_exist", b"", b"lock", b"owner-2")
    assert (set_, checked) == (False, b"owner-1")
    assert table.check_and_set(hk, b"lock", "VALUE_BYTES_EQUAL", b"owner-1", b"data", b"d") == (True, b"owner-1")
    assert table.get(hk, b"data") == b"d"
    with pytest.raises(ValueError, match="unknown check_type 'sometimes'"):
        table.check_and_set(hk, b"lock", "sometimes", b"", b"lock", b"x")


def test_multi_set_get_delete_and_sortkey_count(table):
    hk = unique("multi")
    kvs = {b"a": b"1", b"b": BINARY, b"c": b"3", b"\x00z": b"4"}
    table.multi_set(hk, kvs)
    assert table.multi_get(hk) == dict(sorted(kvs.items()))
    assert table.multi_get(hk, [b"a", b"c", b"missing"]) == {b"a": b"1", b"c": b"3"}
    assert table.multi_get(hk, start_sort_key=b"a", stop_sort_key=b"c") == {b"a": b"1", b"b": BINARY}
    got, incomplete = table.multi_get(hk, max_count=2, with_incomplete=True)
    assert len(got) == 2 and incomplete
    assert table.sortkey_count(hk) == 4
    table.multi_set(hk, [(b"t1", b"x"), (b"t2", b"y")], ttl=3600)
    assert 0 < table.ttl(hk, b"t1") <= 3600
    assert table.multi_delete(hk, [b"a", b"b", b"never"]) == 2
    assert table.sortkey_count(hk) == 4


def test_scan_and_full_scan(client):
    name = unique("scan")
    client.create_table(name, partition_count=4)
    t = client.table(name)
    rows = {(f"h{i % 10}".encode(), f"s{i:03}".encode()): f"v{i}".encode() for i in range(300)}
    for (hk, sk), v in rows.items():
        t.set(hk, sk, v)
    h3 = [(hk, sk, v) for (hk, sk), v in sorted(rows.items()) if hk == b"h3"]
    assert list(t.scan(b"h3", batch_size=7)) == h3
    assert list(t.scan(b"h3", b"s013", b"s043")) == [r for r in h3 if b"s013" <= r[1] < b"s043"]
    assert list(t.scan(b"h3", b"s013", b"s043", start_inclusive=False, stop_inclusive=True)) == [
        r for r in h3 if b"s013" < r[1] <= b"s043"
    ]
    assert [r[2] for r in t.scan(b"h3", no_value=True)] == [b""] * len(h3)
    everything = {(hk, sk): v for hk, sk, v in t.full_scan(batch_size=50)}
    assert everything == rows
    client.drop_table(name)


def test_admin_tables_and_envs(client):
    name = unique("admin")
    created = client.create_table(name, partition_count=8, replica_count=3, envs={"rocksdb.allow_ingest_behind": "true"})
    assert created["partition_count"] == 8 and created["name"] == name
    listed = {t["name"]: t for t in client.list_tables()}
    assert listed[name]["partition_count"] == 8 and listed[name]["status"].endswith("AVAILABLE")
    with pytest.raises(errors.AlreadyExistsError):
        client.create_table(name, partition_count=8)
    with pytest.raises(errors.InvalidArgumentError):
        client.create_table(unique("bad"), partition_count=6)
    assert client.set_envs(name, {"replica.slow_query_threshold": "100"})["replica.slow_query_threshold"] == "100"
    assert "replica.slow_query_threshold" in client.get_envs(name)
    assert "replica.slow_query_threshold" not in client.del_envs(name, ["replica.slow_query_threshold"])
    dropped = client.drop_table(name)
    assert dropped["app_id"] == created["app_id"]
    assert name not in {t["name"] for t in client.list_tables()}
    assert name in {t["name"] for t in client.list_tables(include_dropped=True)}


def test_errors_are_raised_as_their_classes(client, table):
    with pytest.raises(errors.TableNotFoundError):
        client.table(unique("no_such_table"))
    with pytest.raises(LookupError):
        client.table(unique("no_such_table"))
    with pytest.raises(TypeError, match="hash_key must be bytes or str, not int"):
        table.get(42, b"s")
    with pytest.raises(TypeError, match="value must be bytes or str, not NoneType"):
        table.set(b"h", b"s", None)
    with pytest.raises(errors.InvalidArgumentError, match="65535"):
        table.set(b"x" * 65536, b"s", b"v")
    with pytest.raises(ValueError):
        wingkv.Client(meta=[])


def test_busy_under_a_reject_throttled_table(client, onebox):
    name = unique("busy")
    client.create_table(name, partition_count=1)
    quick = wingkv.Client(meta=[onebox], timeout=1.0)
    t = quick.table(name)
    t.set(b"k", b"s", b"before")
    client.set_envs(name, {"replica.write_throttling_by_size": "1*reject*50"})

    def busy():
        try:
            t.set(b"probe", b"s", b"x")
        except errors.BusyError:
            return True
        return False

    wait_for("the reject rule to make writes Busy", 30, busy)
    with pytest.raises(errors.BusyError) as raised:
        t.set(b"k", b"s", b"after")
    assert raised.value.code == "Busy"
    assert t.get(b"k", b"s") == b"before", "a rejected write changed the data"
    client.del_envs(name, ["replica.write_throttling_by_size"])
    wait_for("writes to pass again", 30, lambda: t.set(b"k", b"s", b"after") is None)
    assert t.get(b"k", b"s") == b"after"


def test_asyncio_flavour(onebox):
    import asyncio

    from wingkv import aio

    async def main():
        client = await aio.connect([onebox], timeout=10.0)
        name = unique("aio")
        await client.create_table(name, partition_count=2)
        t = await client.table(name)
        await asyncio.gather(*(t.set(f"h{i}", b"s", f"v{i}") for i in range(50)))
        values = await asyncio.gather(*(t.get(f"h{i}", b"s") for i in range(50)))
        assert values == [f"v{i}".encode() for i in range(50)]
        assert await t.get(b"h0", b"missing") is None
        scanned = [r async for r in t.full_scan()]
        assert len(scanned) == 50
        try:
            await client.table(unique("missing"))
        except errors.TableNotFoundError:
            pass
        else:
            raise AssertionError("no TableNotFoundError")
        await client.drop_table(name)

    asyncio.run(main())
