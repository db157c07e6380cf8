"""An asyncio flavour of the client: the same calls, awaited.

Each call runs the blocking client call on a worker thread (``asyncio.to_thread``); the client
releases the GIL while it waits, so calls of many tasks run concurrently and the event loop is
never blocked. Scans are async iterators.

    client = await wingkv.aio.connect(["127.0.0.1:34601"])
    table = await client.table("temp")
    await table.set(b"k", b"s", b"v")
    async for hash_key, sort_key, value in table.scan(b"k"):
        ...
"""

import asyncio
import functools

from ._native import Client as _Client

_SCANS = ("scan", "full_scan")


class AsyncTable:
    """A :class:`wingkv.Table` whose calls are awaited (scans are async iterators)."""

    def __init__(self, table):
        self._table = table
        self.name = table.name
        self.partition_count = table.partition_count

    def __getattr__(self, name):
        call = getattr(self._table, name)
        if name in _SCANS:
            return functools.partial(_aiter_scan, call)

        async def awaited(*args, **kwargs):
            return await asyncio.to_thread(call, *args, **kwargs)

        return awaited


async def _aiter_scan(open_scan, *args, **kwargs):
    records = await asyncio.to_thread(open_scan, *args, **kwargs)
    done = object()
    while (record := await asyncio.to_thread(next, records, done)) is not done:
        yield record


class AsyncClient:
    """A :class:`wingkv.Client` whose calls are awaited; ``table()`` gives an :class:`AsyncTable`."""

    def __init__(self, client):
        self._client = client

    async def table(self, name):
        return AsyncTable(await asyncio.to_thread(self._client.table, name))

    def __getattr__(self, name):
        call = getattr(self._client, name)

        async def awaited(*args, **kwargs):
            return await asyncio.to_thread(call, *args, **kwargs)

        return awaited


async def connect(meta, **options):
    """An :class:`AsyncClient` of the metas ``meta`` (options as :class:`wingkv.Client` takes)."""
    return AsyncClient(await asyncio.to_thread(_Client, meta, **options))
