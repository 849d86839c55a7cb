"""The allocator setting every tadistill command applies at start-up, and its switch."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys

import pytest

from tadistill import allocator, cli


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt exists on Linux only")
def test_applied_on_glibc_and_off_with_the_switch(monkeypatch):
    ctypes.CDLL("libc.so.6").gnu_get_libc_version  # this machine runs glibc  # noqa: B018
    assert allocator.tune_cpu_allocator() is True
    monkeypatch.setenv(allocator.SWITCH, "default")
    assert allocator.tune_cpu_allocator() is False


def test_every_command_applies_it_first(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "tune_cpu_allocator", lambda: calls.append("tuned"))
    with pytest.raises(SystemExit):
        cli.main(["--version"])
    assert calls == ["tuned"]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/statm")
def test_freed_activations_stay_in_the_heap_only_when_tuned():
    """A 64 MiB tensor freed: glibc's defaults hand it back to the OS (the next step faults it
    in again), the tuned allocator keeps it for reuse."""
    script = ("from tadistill import cli; cli.tune_cpu_allocator()\n"
              "import os, torch\n"
              "rss = lambda: int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE')\n"
              "x = torch.ones(64 * 2**20 // 4); held = rss(); del x; print(held - rss())")

    def returned_bytes(**env) -> int:
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True,
                                env={**os.environ, **env})
        return int(result.stdout.split()[-1])

    assert returned_bytes() < 16 * 2**20
    assert returned_bytes(**{allocator.SWITCH: "default"}) > 48 * 2**20
