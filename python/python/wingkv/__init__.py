"""wingkv: a client for wingkv clusters and a bulk-load writer, built from the servers' Rust code.

>>> import wingkv
>>> client = wingkv.Client(meta=["127.0.0.1:34601"])
>>> table = client.table("temp")
>>> table.set(b"user1", b"name", b"alice", ttl=3600)
>>> table.get(b"user1", b"name")
b'alice'

Keys and values are ``bytes`` (``str`` is taken as UTF-8); a record that is not there reads as
``None``. Failures raise :mod:`wingkv.errors` exceptions. Bulk-load files are written with
:mod:`wingkv.bulkload` (one partition at a time) or :mod:`wingkv.spark` (a whole DataFrame).
"""

from . import errors
from ._native import Client, ScanIterator, Table, error_codes
from .errors import *  # noqa: F401,F403 (the exception classes)

__all__ = ["Client", "Table", "ScanIterator", "error_codes", "errors", "bulkload", "aio"] + [
    name for name in dir(errors) if name.endswith("Error")
]


def __getattr__(name):
    # Imported on first use: `wingkv.spark` needs pyspark.
    if name in ("bulkload", "spark", "aio"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'wingkv' has no attribute '{name}'")
