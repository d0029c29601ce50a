#!/usr/bin/env python3
"""The reference VMM's QMP socket driven by QEMU's own client library.

Runs ``vmm-reference`` with the built-in test guest and ``--api-socket``,
connects with ``qemu.qmp.QMPClient`` (from PyPI, unchanged) and checks
every command, the events, QEMU's error classes, that invalid input
changes nothing, and the two ways out: the ACPI power button and ``quit``.

    python3 tests/qmp/test_qmp.py --vmm target/debug/vmm-reference

Needs /dev/kvm: without it the test is skipped, unless
KVMKIT_REQUIRE_KVM=1 (then it fails). Exit status 0 when every check
passed.
"""

import argparse
import asyncio
import json
import os
import queue
import socket
import subprocess
import sys
import tempfile
import threading
import time

from qemu.qmp import ExecuteError, QMPClient

# How long anything the guest or the VMM does may take before the test
# gives up: generous, guest code may run in KVM's instruction emulator.
WAIT = 120.0
PROMPT = b"kvmkit> "


def kvm_gate():
    """True to run; False (after a message) to skip; exits when required."""
    try:
        fd = os.open("/dev/kvm", os.O_RDWR)
        os.close(fd)
        return True
    except OSError as e:
        msg = f"/dev/kvm unavailable ({e})"
        if os.environ.get("KVMKIT_REQUIRE_KVM", "").strip() == "1":
            sys.exit(f"test_qmp: {msg} but KVMKIT_REQUIRE_KVM=1")
        print(f"skipped test_qmp: {msg}")
        return False


class Vm:
    """The VMM as a child process; its serial console read line by line."""

    def __init__(self, vmm, name, autorun, *extra):
        self.dir = tempfile.mkdtemp(prefix=f"kvmkit-qmp-{name}-")
        self.sock = os.path.join(self.dir, "vm.sock")
        cmdline = f"console=ttyS0 kvmkit.autorun={autorun}"
        self.proc = subprocess.Popen(
            [vmm, "--memory", "64", "--cmdline", cmdline,
             "--api-socket", self.sock, *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE)
        self.lines = queue.Queue()
        self.seen = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        cur = b""
        while True:
            b = self.proc.stdout.read(1)
            if not b:
                break
            if b == b"\n":
                self.lines.put(cur.rstrip(b"\r").decode(errors="replace"))
                cur = b""
            else:
                cur += b
                if cur.endswith(PROMPT):
                    self.lines.put(cur.decode(errors="replace"))
                    cur = b""
        if cur:
            self.lines.put(cur.decode(errors="replace"))

    def expect(self, text):
        """Waits for a console line containing ``text``."""
        deadline = time.monotonic() + WAIT
        while True:
            left = deadline - time.monotonic()
            try:
                line = self.lines.get(timeout=max(left, 0.001))
            except queue.Empty:
                self.proc.kill()
                raise AssertionError(
                    f"no console line with {text!r}; console:\n" + "\n".join(self.seen))
            self.seen.append(line)
            if text in line:
                return line

    def lines_for(self, seconds):
        """The console lines that arrive within ``seconds`` (waits it out)."""
        got = []
        deadline = time.monotonic() + seconds
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return got
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return got
            self.seen.append(line)
            got.append(line)

    def wait(self):
        """Waits for the VMM to exit; returns (status, stderr)."""
        try:
            status = self.proc.wait(timeout=WAIT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            raise AssertionError("the VMM did not exit")
        return status, self.proc.stderr.read().decode(errors="replace")


def tick(line):
    assert line.startswith("tick: "), line
    return int(line[len("tick: "):])


async def connect(vm):
    """A negotiated QMPClient (the socket exists once the VMM set up)."""
    deadline = time.monotonic() + WAIT
    while not os.path.exists(vm.sock):
        assert time.monotonic() < deadline, "the socket never appeared"
        assert vm.proc.poll() is None, "the VMM exited"
        await asyncio.sleep(0.01)
    qmp = QMPClient("kvmkit-test")
    await qmp.connect(vm.sock)
    return qmp


async def disconnect_after_exit(qmp):
    """Disconnects from a VMM that ended and closed the socket itself.

    The server hanging up may surface as EOFError here, as it does with
    QEMU after SHUTDOWN (qemu.machine tolerates it once quit was issued).
    """
    try:
        await qmp.disconnect()
    except EOFError:
        pass


async def error_of(qmp, cmd, args=None):
    """Runs ``cmd`` expecting ExecuteError; returns (class, desc)."""
    try:
        r = await qmp.execute(cmd, args)
    except ExecuteError as e:
        return e.error_class, e.error.error.desc
    raise AssertionError(f"{cmd} {args} succeeded: {r}")


async def next_event(listener, name):
    """The next event, which must be ``name``."""
    ev = await asyncio.wait_for(listener.get(), WAIT)
    assert ev["event"] == name, f"expected {name}, got {ev}"
    ts = ev["timestamp"]
    assert ts["seconds"] > 1_600_000_000 and 0 <= ts["microseconds"] < 1_000_000, ev
    return ev


async def dirty_rate(qmp, args):
    """Runs calc-dirty-rate with ``args``; polls until measured."""
    assert await qmp.execute("calc-dirty-rate", args) == {}
    deadline = time.monotonic() + WAIT
    while True:
        info = await qmp.execute("query-dirty-rate", {"calc-time-unit": "millisecond"})
        if info["status"] == "measured":
            return info
        assert info["status"] == "measuring" and "dirty-rate" not in info, info
        assert time.monotonic() < deadline, info
        await asyncio.sleep(0.1)


class Raw:
    """A raw socket client, for what a well-behaved client never sends."""

    def __init__(self, path):
        self.s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.s.settimeout(WAIT)
        self.s.connect(path)
        self.f = self.s.makefile("rb")
        self.greeting = self.recv()

    def recv(self):
        line = self.f.readline()
        assert line.endswith(b"\r\n"), line
        return json.loads(line)

    def call(self, raw):
        self.s.sendall(raw)
        while True:
            m = self.recv()
            if "event" not in m:
                return m

    def close(self):
        self.f.close()
        self.s.close()


async def invalid_input(qmp, vm):
    """QEMU's error classes; nothing changes, the guest keeps running."""
    before = await qmp.execute("query-status")

    assert await error_of(qmp, "no-such-command") == (
        "CommandNotFound", "The command no-such-command has not been found")
    assert await error_of(qmp, "qmp_capabilities") == (
        "CommandNotFound", "Capabilities negotiation is already complete, command ignored")
    assert await error_of(qmp, "stop", {"now": True}) == (
        "GenericError", "Parameter 'now' is unexpected")
    assert await error_of(qmp, "calc-dirty-rate") == (
        "GenericError", "Parameter 'calc-time' is missing")
    assert await error_of(qmp, "calc-dirty-rate", {"calc-time": "1"}) == (
        "GenericError", "Invalid parameter type for 'calc-time', expected: integer")
    assert await error_of(qmp, "calc-dirty-rate", {"calc-time": 1, "mode": "x"}) == (
        "GenericError", "Parameter 'mode' does not accept value 'x'")
    assert await error_of(qmp, "calc-dirty-rate", {"calc-time": 100000}) == (
        "GenericError", "Calculation time is out of range [50ms, 60000ms].")
    assert await error_of(qmp, "calc-dirty-rate", {"calc-time": 1, "sample-pages": 5}) == (
        "GenericError", "sample-pages is out of range[128, 16384].")
    # The VM logs dirty pages in bitmaps (--dirty-log bitmap, the default).
    assert await error_of(qmp, "calc-dirty-rate", {"calc-time": 1, "mode": "dirty-ring"}) == (
        "GenericError", "mode dirty-ring is not enabled, use other method instead.")
    assert await error_of(qmp, "calc-dirty-rate",
                          {"calc-time": 1, "mode": "dirty-bitmap", "sample-pages": 512}) == (
        "GenericError", "sample-pages is used only in page-sampling mode")

    # What qemu.qmp never sends, over a raw socket.
    raw = Raw(vm.sock)
    assert raw.greeting["QMP"]["capabilities"] == []
    r = raw.call(b'{"execute": "query-status", "id": 1}')
    assert r == {"error": {"class": "CommandNotFound",
                           "desc": "Expecting capabilities negotiation with 'qmp_capabilities'"},
                 "id": 1}, r
    assert raw.call(b'{"execute": "qmp_capabilities"}') == {"return": {}}
    r = raw.call(b'{"execute": }')
    assert r["error"]["class"] == "GenericError", r
    assert r["error"]["desc"].startswith("JSON parse error, "), r
    assert "id" not in r
    assert raw.call(b'[1, 2]')["error"]["desc"] == "QMP input must be a JSON object"
    assert raw.call(b'{"arguments": {}, "id": "x"}') == {
        "error": {"class": "GenericError", "desc": "QMP input lacks member 'execute'"},
        "id": "x"}
    assert raw.call(b'{"execute": 1}')["error"]["desc"] == \
        "QMP input member 'execute' must be a string"
    assert raw.call(b'{"execute": "stop", "extra": 1}')["error"]["desc"] == \
        "QMP input member 'extra' is unexpected"
    r = raw.call(b'{"execute": "sto\x01')
    assert r["error"]["desc"] == "JSON parse error, stray '\\x01'", r
    # An id of any JSON type comes back as it was.
    r = raw.call(b'{"execute": "query-kvm", "id": {"a": [1, null]}}')
    assert r == {"return": {"enabled": True, "present": True}, "id": {"a": [1, None]}}, r
    # Disconnect in the middle of a request.
    raw.s.sendall(b'{"execute": "stop", "argu')
    raw.close()

    # Nothing changed: same state, no event, the guest still ticks.
    assert await qmp.execute("query-status") == before
    t = tick(vm.expect("tick: "))
    vm.expect(f"tick: {t + 1}")


async def scenario_powerdown(vmm):
    vm = Vm(vmm, "powerdown", "ticks:5", "--vcpus", "2")
    vm.expect("kvmkit test guest")
    qmp = await connect(vm)
    greeting = qmp.greeting.QMP
    assert greeting.capabilities == [], greeting
    assert greeting.version["qemu"] == {"major": 8, "minor": 2, "micro": 0}, greeting
    assert greeting.version["package"].startswith("kvmkit vmm-reference "), greeting
    with qmp.listener() as events:
        version = await qmp.execute("query-version")
        assert version == greeting.version, version
        names = {c["name"] for c in await qmp.execute("query-commands")}
        for n in ["qmp_capabilities", "query-version", "query-commands", "query-status",
                  "stop", "cont", "system_powerdown", "quit", "query-cpus-fast",
                  "query-kvm", "calc-dirty-rate", "query-dirty-rate"]:
            assert n in names, (n, names)
        assert await qmp.execute("query-kvm") == {"enabled": True, "present": True}
        assert await qmp.execute("query-status") == {
            "running": True, "singlestep": False, "status": "running"}

        cpus = await qmp.execute("query-cpus-fast")
        assert [c["cpu-index"] for c in cpus] == [0, 1], cpus
        for c in cpus:
            assert c["target"] == "x86_64", c
            assert c["qom-path"] == f"/machine/unattached/device[{c['cpu-index']}]", c
            with open(f"/proc/{vm.proc.pid}/task/{c['thread-id']}/comm") as f:
                assert f.read().strip() == f"vcpu {c['cpu-index']}", c

        # stop: STOP, the console goes quiet; cont: RESUME, it goes on.
        vm.expect("tick: 2")
        assert await qmp.execute("stop") == {}
        await next_event(events, "STOP")
        assert await qmp.execute("query-status") == {
            "running": False, "singlestep": False, "status": "paused"}
        vm.lines_for(0.5)  # what was printed before the pause
        quiet = vm.lines_for(1.5)
        assert quiet == [], f"the guest printed while paused: {quiet}"
        last = max(tick(l) for l in vm.seen if l.startswith("tick: "))
        assert await qmp.execute("stop") == {}  # again: no event
        assert await qmp.execute("cont") == {}
        await next_event(events, "RESUME")
        assert tick(vm.expect("tick: ")) == last + 1
        assert await qmp.execute("cont") == {}  # running: no event
        assert events.empty(), events.clear()

        await invalid_input(qmp, vm)
        assert events.empty(), events.clear()

        # calc-dirty-rate: at once {}, measured later; one at a time.
        assert await qmp.execute("query-dirty-rate") == {
            "status": "unstarted", "start-time": 0, "calc-time": 0,
            "calc-time-unit": "second", "sample-pages": 0, "mode": "page-sampling"}
        info = await dirty_rate(qmp, {"calc-time": 500, "calc-time-unit": "millisecond",
                                      "sample-pages": 1024})
        assert info["mode"] == "page-sampling" and info["sample-pages"] == 1024, info
        assert info["calc-time"] >= 500 and info["dirty-rate"] >= 0, info
        info = await dirty_rate(qmp, {"calc-time": 300, "calc-time-unit": "millisecond",
                                      "mode": "dirty-bitmap"})
        assert info["mode"] == "dirty-bitmap" and info["sample-pages"] == 0, info
        assert info["calc-time"] >= 300 and info["dirty-rate"] >= 0, info
        # The longest measurement cannot end before the VM does: a second
        # one is refused meanwhile.
        assert await qmp.execute("calc-dirty-rate", {"calc-time": 60}) == {}
        assert await error_of(qmp, "calc-dirty-rate", {"calc-time": 1}) == (
            "GenericError", "the dirty rate is already being measured.")
        info = await qmp.execute("query-dirty-rate")
        assert info["status"] == "measuring" and info["calc-time"] == 60, info

        # The power button: POWERDOWN, the guest powers off by itself.
        assert await qmp.execute("system_powerdown") == {}
        await next_event(events, "POWERDOWN")
        vm.expect("acpi: power button")
        ev = await next_event(events, "SHUTDOWN")
        assert ev["data"] == {"guest": True, "reason": "guest-shutdown"}, ev
    status, stderr = vm.wait()
    await disconnect_after_exit(qmp)
    assert status == 0, (status, stderr)
    assert not os.path.exists(vm.sock), "the socket is removed"


async def scenario_quit(vmm):
    vm = Vm(vmm, "quit", "ticks")
    vm.expect("ticks: every")
    qmp = await connect(vm)
    with qmp.listener() as events:
        assert await qmp.execute("stop") == {}
        await next_event(events, "STOP")
        # quit while paused: the reply, then SHUTDOWN; the VMM exits 0.
        assert await qmp.execute("quit") == {}
        ev = await next_event(events, "SHUTDOWN")
        assert ev["data"] == {"guest": False, "reason": "host-qmp-quit"}, ev
    status, stderr = vm.wait()
    await disconnect_after_exit(qmp)
    assert status == 0, (status, stderr)
    assert not os.path.exists(vm.sock)


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--vmm", default=os.environ.get("VMM_REFERENCE", "target/debug/vmm-reference"),
                   help="the vmm-reference binary")
    a = p.parse_args()
    if not kvm_gate():
        return 0
    for scenario in (scenario_powerdown, scenario_quit):
        t0 = time.monotonic()
        asyncio.run(scenario(a.vmm))
        print(f"test_qmp: {scenario.__name__} ok ({time.monotonic() - t0:.1f}s)")
    print("test_qmp: all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
