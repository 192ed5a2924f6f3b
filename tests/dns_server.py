"""A real DNS server for tests: dnsmasq, answering from a hosts file the test rewrites.

:class:`DnsServer` starts ``dnsmasq`` in the foreground (in a network namespace when given
a prefix such as ``ip netns exec NS``), bound to one address and port, answering only for
names under ``svc.test`` from a hosts file (A/AAAA) and ``srv`` records given at start.
:meth:`DnsServer.set_hosts` rewrites the file and sends SIGHUP, which makes dnsmasq read it
again. The process is stopped by its PID.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from jobs_interop import START_TIMEOUT_S, STOP_TIMEOUT_S, skip_or_fail

DOMAIN = "svc.test"


def dnsmasq_path() -> str:
    """The dnsmasq binary (skips, or fails under ZJOBS_REQUIRE_INTEROP=1, when missing)."""
    path = shutil.which("dnsmasq") or next(
        (p for p in ("/usr/sbin/dnsmasq", "/sbin/dnsmasq") if os.access(p, os.X_OK)), None)
    if path is None:
        skip_or_fail("dnsmasq not found (Debian package dnsmasq-base)")
    assert path is not None
    return path


class DnsServer:
    """dnsmasq answering for ``*.svc.test`` on ``address:port``.

    Args:
        address: the address to bind (one of the namespace's own, or 127.0.0.1).
        port: the UDP/TCP port.
        hosts: name -> addresses, written to the hosts file.
        srv: SRV records as (name, target, port).
        prefix: put before the command (``ip netns exec NS``).
    """

    def __init__(self, address: str, port: int, hosts: Mapping[str, Iterable[str]], *,
                 srv: Sequence[tuple[str, str, int]] = (), prefix: Sequence[str] = ()) -> None:
        self.address, self.port = address, port
        self._dir = Path(tempfile.mkdtemp(prefix="zj-dns-"))
        self.hosts_file = self._dir / "hosts"
        self._write(hosts)
        argv = [*prefix, dnsmasq_path(), "--keep-in-foreground", "--conf-file=/dev/null",
                "--no-resolv", "--no-hosts", "--no-poll", f"--addn-hosts={self.hosts_file}",
                f"--listen-address={address}", "--bind-interfaces", f"--port={port}",
                "--pid-file=", f"--local=/{DOMAIN}/", "--local-ttl=0", "--cache-size=0",
                "--log-facility=-"]
        if os.geteuid() == 0:
            argv.append("--user=root")  # the test's temporary files are not readable by nobody
        argv += [f"--srv-host={name},{target},{port}" for name, target, port in srv]
        self._log_file = self._dir / "log"
        with open(self._log_file, "ab") as log:  # O_APPEND: read separately by path
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)
        try:
            self._wait_reads(1)  # signals sent before its handlers are set would kill it
        except BaseException:
            self.close()
            raise

    def _reads(self) -> int:
        return self.log().count(f"read {self.hosts_file} - ")

    def _wait_reads(self, count: int) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while self._reads() < count:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"dnsmasq did not read its hosts file: {self.log()}")
            time.sleep(0.01)

    def _write(self, hosts: Mapping[str, Iterable[str]]) -> None:
        lines = [f"{address} {name}" for name, addresses in hosts.items()
                 for address in addresses]
        tmp = self.hosts_file.with_suffix(".new")
        tmp.write_text("".join(f"{line}\n" for line in lines), encoding="utf-8")
        tmp.replace(self.hosts_file)  # atomic: dnsmasq never reads half a file

    def set_hosts(self, hosts: Mapping[str, Iterable[str]]) -> None:
        """Replace every A/AAAA record; return once dnsmasq has read them (SIGHUP)."""
        reads = self._reads()
        self._write(hosts)
        os.kill(self.proc.pid, signal.SIGHUP)
        self._wait_reads(reads + 1)

    def pause(self) -> None:
        """Stop answering (SIGSTOP): queries time out."""
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        """Answer again (SIGCONT)."""
        os.kill(self.proc.pid, signal.SIGCONT)

    def log(self) -> str:
        """What dnsmasq printed so far."""
        return self._log_file.read_text(encoding="utf-8", errors="replace")

    def close(self) -> None:
        """Stop dnsmasq by its PID and remove its files."""
        try:
            if self.proc.poll() is None:
                os.kill(self.proc.pid, signal.SIGCONT)
                self.proc.terminate()
                try:
                    self.proc.wait(STOP_TIMEOUT_S)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait(STOP_TIMEOUT_S)
        finally:
            shutil.rmtree(self._dir, ignore_errors=True)
