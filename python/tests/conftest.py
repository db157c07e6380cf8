"""Fixtures of the Python package's tests: a real onebox (1 meta, 3 replica servers) on free
loopback ports, started from the `wingkv` binary of the build (``WINGKV_BIN``, else
``$CARGO_TARGET_DIR/debug/wingkv``) and stopped however the tests end."""

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import wingkv


def wingkv_binary():
    explicit = os.environ.get("WINGKV_BIN")
    target = os.environ.get("CARGO_TARGET_DIR", str(Path.home() / ".cache/wingkv/target"))
    path = Path(explicit) if explicit else Path(target) / "debug" / "wingkv"
    if not path.is_file():
        pytest.fail(f"the wingkv binary is missing at {path}: build it (./run.sh build) or set WINGKV_BIN")
    return path


@pytest.fixture(scope="session")
def wingkv_bin():
    return wingkv_binary()


def free_ports(n):
    """The first of `n` consecutive free loopback ports."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        socks = []
        try:
            for i in range(n):
                s = socket.socket()
                socks.append(s)
                s.bind(("127.0.0.1", base + i))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError(f"no {n} consecutive free loopback ports")


def wait_for(what, deadline_s, probe, interval_s=0.1):
    """`probe()`'s first truthy answer within `deadline_s`, else a failure naming `what`."""
    deadline = time.monotonic() + deadline_s
    last = None
    while time.monotonic() < deadline:
        try:
            got = probe()
            if got:
                return got
        except Exception as exc:  # noqa: BLE001 (kept for the failure message)
            last = exc
        time.sleep(interval_s)
    pytest.fail(f"{what}: not within {deadline_s} s (last error: {last!r})")


@pytest.fixture(scope="session")
def onebox(wingkv_bin, tmp_path_factory):
    """The meta address of a onebox that lives as long as the test session."""
    workdir = tmp_path_factory.mktemp("onebox") / "ob"
    base = free_ports(4)
    cmd = [
        str(wingkv_bin), "onebox", "start", "--dir", str(workdir),
        "--base-port-meta", str(base), "--base-port-replica", str(base + 1),
        "--http-port-offset", "0",
    ]
    try:
        subprocess.run(cmd, check=True, capture_output=True, timeout=180)
        yield f"127.0.0.1:{base}"
    except subprocess.CalledProcessError as exc:
        pytest.fail(f"onebox start failed: {exc.stderr.decode(errors='replace')}")
    finally:
        subprocess.run([str(wingkv_bin), "onebox", "stop", "--dir", str(workdir)], capture_output=True, timeout=120)


@pytest.fixture(scope="session")
def client(onebox):
    return wingkv.Client(meta=[onebox], timeout=10.0)


def unique(prefix):
    return f"{prefix}_{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def table(client):
    """A fresh table of 4 partitions for one test module."""
    name = unique("py")
    client.create_table(name, partition_count=4)
    return client.table(name)


def wait_bulk_load(client, table, deadline_s=300):
    """The bulk load of `table` once it ended; fails the test unless it succeeded."""
    def ended():
        s = client.query_bulk_load(table)
        return s if s["status"] in ("BLS_SUCCEED", "BLS_FAILED", "BLS_CANCELED") else None

    status = wait_for(f"the bulk load of {table} to end", deadline_s, ended, interval_s=0.5)
    assert status["status"] == "BLS_SUCCEED", status
    return status
