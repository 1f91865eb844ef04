#!/usr/bin/env python3
"""SoftFlow end to end (EVALUATION.md "Method", paper section 7.1).

A generator namespace and a device namespace joined by a veth pair; sf-pktgen
replays a trace from the generator (pinned to --gen-cpu), rewriting the L4
ports on every pass, and counts what the device sends back out the port it
came in on.  Devices (each started and stopped by this script, every run):

  ceiling     sf-echo --mode xdp-tx (XDP_TX reflector) and --mode afxdp (bare
              AF_XDP echo): the I/O ceiling of this machine
  e2e         softflowd, pipelines x traces x coalescing on/off
  ablation    softflowd with and without --no-xdp-lookup (stage-0 megaflow
              lookups resolved in XDP vs in userspace)
  blackbox    paper Figure 5: each middlebox in its own softflowd ("VM") on
              its own veth pair, chained by a "hypervisor" softflowd doing the
              stateless L2/L3 part, vs one run-to-completion softflowd, on
              the same CPUs (--dut-cpus)
  peers       Open vSwitch's userspace datapath (afxdp port, ct()) and the
              Linux kernel (router with nftables conntrack; and without) on
              Pipeline A (scripts/peers)
  scaling     paper Figure 8: 1 queue / 1 PMD thread vs 2 queues / 2 PMD
              threads (veth with two queues; the generator sends on both)
  breakdown   paper Figure 12: softflowd --profile, cycles per packet by
              category (parse, lookup, slow path, services, actions, I/O)
  sweep       offered rate vs delivered rate (T2) for the bare AF_XDP echo
              and softflowd on Pipeline A: where each saturates, and whether
              it collapses when overdriven

NAPI (--napi): on veth the receive work of each direction (the receiving
end's XDP program, the AF_XDP copy) runs in softirq on the SENDER's CPU:
veth_xmit schedules the peer's NAPI locally.  With the default, softirq, the
generator's core thus pays for the switch's XDP program and the device's core
for the generator's receive.  With threaded, every veth end this script
creates gets threaded NAPI (/sys/class/net/IF/threaded), and the NAPI kernel
threads (napi/IF-ID; a veth has them only while native XDP is attached, so
they come and go with every device and every sf-pktgen) are pinned: those of
the device's ports to the CPU of the device thread serving that queue, those
of the generator's ports to --gen-cpu.  Each side then pays for its own
receive.  (The Linux peers attach no XDP, so their port has no NAPI in
either mode: linux.sh steers their receive to the device CPU with RPS.)

Runs are interleaved (run 1 of every configuration, then run 2, ...) so that
drift on a shared machine spreads over all of them.  Output in --out DIR:
runs.csv (one row per run), breakdown.csv (cycles per category), summary.md
(median and min-max per configuration; the switch as a fraction of the bare
AF_XDP echo; coalescing gains), and the traces and flow files used.  A
progress line on stderr while it runs.

  sudo scripts/bench-e2e.py --scale quick --out /tmp/e2e
  sudo scripts/bench-e2e.py --scale full --out /tmp/e2e-full
  sudo scripts/bench-e2e.py --smoke --out /tmp/e2e-smoke   (seconds; for CI)
"""
import argparse
import csv
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Per scale: trace scale, seconds measured per run, warmup, runs, rates.
SCALES = {
    "smoke": dict(trace_scale=0.002, seconds=1.0, warmup=0.3, runs=1,
                  traces="T1,T2,T3", pipelines="A,B,C", rules=50),
    "quick": dict(trace_scale=0.02, seconds=1.5, warmup=0.5, runs=3,
                  traces="T1,T2,T3", pipelines="A,B,C", rules=500),
    "full": dict(trace_scale=0.2, seconds=10.0, warmup=2.0, runs=5,
                 traces="T1,T2,T3", pipelines="A,B,C", rules=500),
}
EXPERIMENTS = ["ceiling", "e2e", "ablation", "blackbox", "peers", "scaling", "breakdown", "sweep"]
# Offered rates of the sweep (packets/s; 0 = as fast as the generator goes).
SWEEP_RATES = [200000, 400000, 600000, 800000, 1000000, 0]
CSV_FIELDS = ["experiment", "system", "pipeline", "trace", "coalesce", "variant", "run",
              "offered_pps", "sent_pps", "received_pps", "lost_pps", "generator_bound",
              "sent", "received", "seconds", "napi"]
PROFILE_CATEGORIES = ["parse", "lookup", "slow_path", "services", "actions",
                      "io_rx", "io_tx", "idle"]
GEN_MAC = "02:47:45:4e:00:01"
NAPI_MODES = ["softirq", "threaded"]
# How long a NAPI thread may take to appear once its device is up.
NAPI_WAIT = 5.0
TASK_COMM_LEN = 16  # a thread's name: 15 characters (kernel threads: more, lately)


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, check=True, capture=False, **kw):
    r = subprocess.run(cmd, check=False, text=True,
                       stdout=subprocess.PIPE if capture else subprocess.DEVNULL,
                       stderr=subprocess.PIPE if capture else None, **kw)
    if check and r.returncode != 0:
        raise RuntimeError("command failed (%d): %s\n%s" % (
            r.returncode, " ".join(cmd), (r.stderr or "") if capture else ""))
    return r


def ns_exec(ns, cmd):
    return ["ip", "netns", "exec", ns] + cmd


class Topology:
    """Namespaces and veth pairs of one run of this script; removed by close()."""

    def __init__(self, run_id):
        self.id = run_id
        self.namespaces = []
        self.queues = {}  # interface -> queues

    @staticmethod
    def free_id():
        """A short id, so that the interface names stay whole in the names of
        their NAPI threads (napi/IF-ID) where those are cut to 15 characters
        (ps, top, older kernels): the PID modulo 10000, or the next one whose
        namespaces do not exist yet."""
        r = run(["ip", "netns", "list"], capture=True)
        taken = set(line.split()[0] for line in r.stdout.splitlines() if line.strip())
        start = os.getpid() % 10000
        for i in range(10000):
            cand = (start + i) % 10000
            if not any(n.endswith("-%d" % cand) for n in taken if n.startswith("sfe-")):
                return "%d" % cand
        raise RuntimeError("no free topology id (10000 sfe-* namespaces?)")

    def netns(self, role):
        name = "sfe-%s-%s" % (role, self.id)
        run(["ip", "netns", "add", name])
        self.namespaces.append(name)
        run(["ip", "-n", name, "link", "set", "lo", "up"])
        return name

    def veth(self, ns_a, if_a, ns_b, if_b, queues=1, mac_a=None):
        cmd = ["ip", "link", "add", if_a, "numtxqueues", str(queues), "numrxqueues",
               str(queues), "type", "veth", "peer", "name", if_b, "numtxqueues",
               str(queues), "numrxqueues", str(queues)]
        run(cmd)
        run(["ip", "link", "set", if_a, "netns", ns_a])
        run(["ip", "link", "set", if_b, "netns", ns_b])
        if mac_a:
            run(["ip", "-n", ns_a, "link", "set", if_a, "address", mac_a])
        for ns, itf in ((ns_a, if_a), (ns_b, if_b)):
            run(["ip", "-n", ns, "link", "set", itf, "up"])
            self.queues[itf] = queues

    def close(self):
        for ns in reversed(self.namespaces):
            run(["ip", "netns", "del", ns], check=False)
        self.namespaces = []


class Process:
    """A background process we started; stopped by PID."""

    def __init__(self, cmd, log_path):
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT,
                                     start_new_session=True)

    def alive(self):
        return self.proc.poll() is None

    def stop(self, timeout=10):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        return self.proc.returncode

    def output(self):
        with open(self.log_path) as f:
            return f.read()


class Bench:
    def __init__(self, args):
        self.a = args
        self.build = args.build
        self.out = args.out
        self.tmp = tempfile.mkdtemp(prefix="sfe-")
        self.topo = Topology(Topology.free_id())
        self.procs = []
        self.rows = []
        self.breakdown = []
        self.started = time.monotonic()
        self.done = 0
        self.total = 0
        self.peers_started = []  # (script, args) to stop on exit

    # ---- helpers ---------------------------------------------------------------
    def tool(self, name):
        path = os.path.join(self.build, name)
        if not os.access(path, os.X_OK):
            raise RuntimeError("%s not found: build the project first (scripts/build.sh)" % path)
        return path

    def spawn(self, ns, cmd, name):
        p = Process(ns_exec(ns, cmd), os.path.join(self.tmp, name + ".log"))
        self.procs.append(p)
        return p

    def stop(self, p):
        rc = p.stop()
        self.procs.remove(p)
        return rc

    def wait_for(self, what, predicate, proc=None, timeout=30.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            if proc is not None and not proc.alive():
                raise RuntimeError("%s exited:\n%s" % (what, proc.output()[-3000:]))
            time.sleep(0.05)
        raise RuntimeError("%s not ready after %.0f s:\n%s" % (
            what, timeout, proc.output()[-3000:] if proc else ""))

    def progress(self, text):
        elapsed = time.monotonic() - self.started
        left = ""
        if self.done:
            left = ", ~%s left" % fmt_time(elapsed / self.done * (self.total - self.done))
        sys.stderr.write("\r\033[K[%d/%d %s%s] %s" % (self.done + 1, self.total,
                                                      fmt_time(elapsed), left, text))
        sys.stderr.flush()

    # ---- inputs ----------------------------------------------------------------
    def make_inputs(self, scale):
        os.makedirs(self.out, exist_ok=True)
        self.traces = {}
        for t in self.a.traces:
            path = os.path.join(self.out, "%s.pcap" % t)
            run([self.tool("sf-tracegen"), "--trace", t, "--scale", str(scale["trace_scale"]),
                 "--seed", "1", "--out", path])
            self.traces[t] = path
        self.flows = {}
        rules = scale["rules"]
        base = [self.tool("sf-pipegen"), "--seed", "1", "--l2-rules", str(rules),
                "--l3-rules", str(rules), "--acl-rules", str(rules)]
        for p in sorted(set(self.a.pipelines) | {"A"}):
            path = os.path.join(self.out, "pipeline-%s.flows" % p)
            run(base + ["--pipeline", p, "--out", path])
            self.flows[p] = path
            roles = ["hypervisor", "firewall"] + {"B": ["aes"], "C": ["balancer"]}.get(p, [])
            for role in roles:
                path = os.path.join(self.out, "pipeline-%s-%s.flows" % (p, role))
                run(base + ["--pipeline", p, "--blackbox", role, "--out", path])
                self.flows[(p, role)] = path

    # ---- topology --------------------------------------------------------------
    def make_topology(self):
        self.gen = self.topo.netns("gen")
        self.dut = self.topo.netns("dut")
        self.gen_if, self.dut_if = "sfeg-%s" % self.topo.id, "sfed-%s" % self.topo.id
        self.topo.veth(self.gen, self.gen_if, self.dut, self.dut_if, mac_a=GEN_MAC)
        # Figure 8: a second pair with two queues.
        self.gen2_if, self.dut2_if = "sfeG-%s" % self.topo.id, "sfeD-%s" % self.topo.id
        self.topo.veth(self.gen, self.gen2_if, self.dut, self.dut2_if, queues=2, mac_a=GEN_MAC)
        # Figure 5: two "VMs", each with one veth pair to the hypervisor.
        self.vms = []
        for i in (1, 2):
            vm = self.topo.netns("vm%d" % i)
            hv_if, vm_if = "sfeh%d-%s" % (i, self.topo.id), "sfev%d-%s" % (i, self.topo.id)
            self.topo.veth(self.dut, hv_if, vm, vm_if)
            self.vms.append((vm, hv_if, vm_if))
        if self.a.napi == "threaded":
            for ns, itf in ((self.gen, self.gen_if), (self.dut, self.dut_if),
                            (self.gen, self.gen2_if), (self.dut, self.dut2_if)):
                self.set_threaded(ns, itf)
            for vm, hv_if, vm_if in self.vms:
                self.set_threaded(self.dut, hv_if)
                self.set_threaded(vm, vm_if)

    # ---- threaded NAPI -----------------------------------------------------------
    def set_threaded(self, ns, itf):
        """Threaded NAPI on one veth end.  The kernel refuses the write
        while the device has no NAPI instance, and a veth has
        them only with native XDP attached or GRO on; so GRO goes on for the
        write (when it was off) and back off: the device keeps the setting,
        and every NAPI instance it gets later (at each XDP attach) comes with
        its own kernel thread."""
        path = "/sys/class/net/%s/threaded" % itf
        gro = run(ns_exec(ns, ["ethtool", "-k", itf]), capture=True).stdout
        gro_off = "generic-receive-offload: off" in gro
        if gro_off:
            run(ns_exec(ns, ["ethtool", "-K", itf, "gro", "on"]), capture=True)
        try:
            run(ns_exec(ns, ["sh", "-c", "echo 1 > %s" % path]), capture=True)
        finally:
            if gro_off:
                run(ns_exec(ns, ["ethtool", "-K", itf, "gro", "off"]), capture=True)
        got = run(ns_exec(ns, ["cat", path]), capture=True).stdout.strip()
        if got != "1":
            raise RuntimeError("%s in %s: threaded NAPI reads %r after writing 1" % (
                path, ns, got))

    @staticmethod
    def kthreads():
        """PIDs of the kernel threads (children of kthreadd)."""
        try:
            with open("/proc/2/task/2/children") as f:
                return [int(x) for x in f.read().split()]
        except OSError:
            return [int(x) for x in os.listdir("/proc") if x.isdigit()]

    def napi_threads(self, itf, comms):
        """PIDs of the NAPI threads of interface itf, oldest first (the order
        the device added its queues in).  A NAPI thread is named napi/IF-ID
        (ID: the NAPI id).  /proc/PID/comm shows a kernel thread's full name
        on recent kernels, its first 15 characters on older ones: matched by
        the exact prefix napi/IF- and digits after it, or, when cut at 15,
        by the cut prefix."""
        full = "napi/%s-" % itf
        found = []
        for pid in self.kthreads():
            comm = comms.get(pid)
            if comm is None:
                try:
                    with open("/proc/%d/comm" % pid) as f:
                        comm = f.read().rstrip("\n")
                except OSError:
                    continue
                comms[pid] = comm
            if len(comm) > len(full):
                match = comm.startswith(full) and comm[len(full):].isdigit()
            else:
                match = len(comm) == TASK_COMM_LEN - 1 and full.startswith(comm)
            if match:
                found.append(pid)
        return sorted(found, key=lambda pid: (thread_start(pid), pid))

    def pin_napi(self, ports, proc=None, max_age=None):
        """Pins the NAPI threads of ports [(namespace, interface, cpus)]:
        queue q's thread to cpus[q % len(cpus)].  Waits up to NAPI_WAIT s
        for every queue's thread (or until proc exits); fails if one is
        missing or, with max_age, if it had been running longer than that
        when pinned (then traffic already measured went through it
        unpinned)."""
        deadline = time.monotonic() + NAPI_WAIT
        comms = {}
        todo = list(ports)
        while todo:
            ns, itf, cpus = todo[0]
            want = self.topo.queues.get(itf, 1)
            pids = self.napi_threads(itf, comms)
            if len(pids) >= want:
                for q, pid in enumerate(pids[-want:]):
                    cpu = cpus[q % len(cpus)]
                    try:
                        os.sched_setaffinity(pid, {cpu})
                        ok = os.sched_getaffinity(pid) == {cpu}
                    except OSError as e:
                        raise RuntimeError("cannot pin NAPI thread %d (%s) to CPU %d: %s" % (
                            pid, comms.get(pid), cpu, e))
                    if not ok:
                        raise RuntimeError("NAPI thread %d (%s) did not stay on CPU %d" % (
                            pid, comms.get(pid), cpu))
                    age = thread_age(pid)
                    if max_age is not None and age is not None and age > max_age:
                        raise RuntimeError(
                            "NAPI thread %d (%s) of %s pinned only %.2f s after it started, "
                            "later than the warmup (%.2f s): measured traffic went through it "
                            "unpinned; use a longer --warmup" % (pid, comms.get(pid), itf, age,
                                                                 max_age))
                todo.pop(0)
                continue
            if time.monotonic() > deadline or (proc is not None and proc.poll() is not None):
                raise RuntimeError(
                    "--napi threaded: %d NAPI thread(s) of %s (in %s; kernel threads "
                    "named %sID) expected, %d found%s.  Native XDP attached?" % (
                        want, itf, ns, "napi/%s-" % itf, len(pids),
                        " (the generator exited)" if proc is not None and proc.poll() is not None
                        else " after %.0f s" % NAPI_WAIT))
            time.sleep(0.002 if proc is not None else 0.01)

    # ---- devices ---------------------------------------------------------------
    def softflowd(self, ns, ports, flows, cpus, name, coalesce=True, extra=()):
        sock = os.path.join(self.tmp, name + ".sock")
        cmd = [self.tool("softflowd"), "--socket", sock, "--pin-dir", "", "--flows", flows,
               "--xdp-mode", self.a.xdp_mode, "--pmd-threads", str(len(cpus)), "--pmd-cpus"]
        cmd += [str(c) for c in cpus]
        for i, port in enumerate(ports):
            cmd += ["--port", "%s:%d" % (port, i + 1)]
        if not coalesce:
            cmd.append("--no-coalesce")
        if self.a.service_config:
            cmd += ["--service-config", self.a.service_config]
        cmd += list(extra)
        p = self.spawn(ns, ["taskset", "-c", ",".join(str(c) for c in cpus)] + cmd, name)
        p.sock = sock
        p.ns = ns
        p.napi_ports = [(ns, port, list(cpus)) for port in ports]
        self.wait_for("softflowd " + name, lambda: self.sfctl(p, check=False) is not None, p)
        return p

    def sfctl(self, p, check=True):
        r = run(ns_exec(p.ns, [self.tool("sfctl"), "--socket", p.sock, "--json", "show"]),
                check=check, capture=True)
        if r.returncode != 0:
            return None
        return json.loads(r.stdout)

    def echo(self, mode, cpu):
        p = self.spawn(self.dut, [self.tool("sf-echo"), "--iface", self.dut_if, "--mode", mode,
                                  "--cpu", str(cpu), "--xdp-mode", self.a.xdp_mode, "--json"],
                       "echo-" + mode)
        self.wait_for("sf-echo", lambda: "sf-echo: ready" in p.output(), p)
        p.napi_ports = [(self.dut, self.dut_if, [cpu])]
        return p

    def peer(self, script, start_args, stop_args):
        run(["bash", os.path.join(ROOT, "scripts", "peers", script), "start"] + start_args)
        entry = (script, stop_args)
        self.peers_started.append(entry)
        return entry

    def stop_peer(self, entry):
        script, stop_args = entry
        run(["bash", os.path.join(ROOT, "scripts", "peers", script), "stop"] + stop_args,
            check=False)
        self.peers_started.remove(entry)

    # ---- the generator -----------------------------------------------------------
    def pktgen(self, trace, iface, queues=1, rate=None):
        cmd = [self.tool("sf-pktgen"), "--iface", iface, "--pcap", self.traces[trace],
               "--queues", str(queues), "--rate", str(self.a.rate if rate is None else rate),
               "--duration", str(self.seconds + self.warmup), "--warmup", str(self.warmup),
               "--cpu", str(self.a.gen_cpu), "--interval", "0", "--xdp-mode", self.a.xdp_mode,
               "--json"]
        if self.a.napi != "threaded":
            r = run(ns_exec(self.gen, cmd), capture=True)
            return json.loads(r.stdout)
        # The generator's NAPI threads exist only while its XDP program is
        # attached: pinned as soon as they appear, within the warmup.
        proc = subprocess.Popen(ns_exec(self.gen, cmd), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        try:
            self.pin_napi([(self.gen, iface, [self.a.gen_cpu])], proc=proc,
                          max_age=self.warmup)
        except BaseException:
            exited = proc.poll() is not None
            if not exited:
                proc.terminate()
            _, err = proc.communicate()
            if exited and proc.returncode != 0:  # its own failure says more
                raise RuntimeError("command failed (%d): %s\n%s" % (
                    proc.returncode, " ".join(ns_exec(self.gen, cmd)), err))
            raise
        out, err = proc.communicate()
        if proc.returncode != 0:
            raise RuntimeError("command failed (%d): %s\n%s" % (
                proc.returncode, " ".join(ns_exec(self.gen, cmd)), err))
        return json.loads(out)

    # ---- configurations ----------------------------------------------------------
    def configs(self):
        """(key, start, stop, measure-options) per configuration, in run order."""
        a = self.a
        dut_cpu = a.dut_cpus[0]
        out = []

        def add(key, start, stop=None, iface=None, queues=1, after=None, rate=None,
                napi_ports=lambda dev: dev.napi_ports):
            # napi_ports(device): the device's veth ends with NAPI (native XDP)
            # and the CPUs serving their queues
            out.append(dict(key=key, start=start, stop=stop or self.stop,
                            iface=iface or self.gen_if, queues=queues, after=after, rate=rate,
                            napi_ports=napi_ports))

        def sfd(pipeline, coalesce=True, extra=(), cpus=None, ports=None, flows=None):
            return lambda: self.softflowd(self.dut, ports or [self.dut_if],
                                          flows or self.flows[pipeline], cpus or [dut_cpu],
                                          "sfd", coalesce, extra)

        for t in a.traces:
            if "ceiling" in a.experiments:
                for mode in ("xdp-tx", "afxdp"):
                    add(("ceiling", "echo-" + mode, "-", t, "-", "-"),
                        (lambda m: lambda: self.echo(m, dut_cpu))(mode))
            if "e2e" in a.experiments:
                for p in a.pipelines:
                    for c in a.coalesce:
                        add(("e2e", "softflowd", p, t, c, "-"), sfd(p, c == "on"))
            if "ablation" in a.experiments and t in ("T1", "T2"):
                add(("ablation", "softflowd", "A", t, "on", "xdp-lookup"), sfd("A"))
                add(("ablation", "softflowd", "A", t, "on", "no-xdp-lookup"),
                    sfd("A", extra=["--no-xdp-lookup"]))
            if "peers" in a.experiments:
                rundir = os.path.join(self.tmp, "peer")
                flows = self.flows["A"]
                add(("peers", "ovs-afxdp-ct", "A", t, "-", "-"),
                    lambda: self.peer("ovs.sh", [self.dut, self.dut_if, flows, rundir,
                                                 str(dut_cpu)],
                                      [self.dut, self.dut_if, flows, rundir]),
                    self.stop_peer, napi_ports=lambda _dev: self.ovs_napi_ports(rundir))
                for variant, opts in (("linux-nft", []), ("linux-router", ["--no-nft"])):
                    add(("peers", variant, "A", t, "-", "-"),
                        (lambda o: lambda: self.peer(
                            "linux.sh", o + ["--cpu", str(dut_cpu), self.dut, self.dut_if,
                                             flows, rundir, GEN_MAC],
                            [self.dut, self.dut_if, flows, rundir]))(opts),
                        self.stop_peer, napi_ports=lambda _dev: [])  # no XDP, no NAPI
            if "breakdown" in a.experiments and t in ("T1", "T2"):
                for c in a.coalesce:
                    add(("breakdown", "softflowd", "A", t, c, "profile"),
                        sfd("A", c == "on", extra=["--profile"]), after=self.read_profile)
        if "sweep" in a.experiments:
            t = "T2" if "T2" in a.traces else a.traces[0]
            for rate in SWEEP_RATES:
                variant = "rate=%dk" % (rate // 1000) if rate else "rate=max"
                add(("sweep", "echo-afxdp", "-", t, "-", variant),
                    lambda: self.echo("afxdp", dut_cpu), rate=rate)
                add(("sweep", "softflowd", "A", t, "on", variant), sfd("A"), rate=rate)
        if "blackbox" in a.experiments:
            t = "T1" if "T1" in a.traces else a.traces[0]
            for p in a.pipelines:
                add(("blackbox", "run-to-completion", p, t, "on", "-"),
                    sfd(p, cpus=a.dut_cpus[:1]))
                add(("blackbox", "black-box", p, t, "on", "-"),
                    (lambda pp: lambda: self.start_blackbox(pp))(p), self.stop_blackbox)
        if "scaling" in a.experiments:
            t = "T2" if "T2" in a.traces else a.traces[0]
            two = [a.dut_cpus[0], a.gen_cpu] if len(a.dut_cpus) < 2 else a.dut_cpus[:2]
            add(("scaling", "softflowd", "A", t, "on", "1q-1thread"),
                sfd("A", cpus=[dut_cpu]))
            add(("scaling", "softflowd", "A", t, "on", "2q-2threads"),
                sfd("A", cpus=two, ports=[self.dut2_if]), iface=self.gen2_if, queues=2)
        return out

    def ovs_napi_ports(self, rundir):
        """OVS's port has NAPI only as an afxdp port (XDP); ovs.sh falls back
        to a system port when this OVS has no afxdp."""
        try:
            with open(os.path.join(rundir, "port_type")) as f:
                afxdp = f.read().strip() == "afxdp"
        except OSError:
            afxdp = False
        return [(self.dut, self.dut_if, [self.a.dut_cpus[0]])] if afxdp else []

    def start_blackbox(self, pipeline):
        cpus = self.a.dut_cpus
        vms = []
        roles = ["firewall"] + {"B": ["aes"], "C": ["balancer"]}.get(pipeline, [])
        for i, role in enumerate(roles):
            vm_ns, _, vm_if = self.vms[i]
            cpu = cpus[(i + 1) % len(cpus)]
            vms.append(self.softflowd(vm_ns, [vm_if], self.flows[(pipeline, role)], [cpu],
                                      "vm-" + role))
        hv_ports = [self.dut_if] + [self.vms[i][1] for i in range(len(roles))]
        hv = self.softflowd(self.dut, hv_ports, self.flows[(pipeline, "hypervisor")],
                            [cpus[0]], "hypervisor")
        hv.vms = vms
        for vm in vms:
            hv.napi_ports += vm.napi_ports
        return hv

    def stop_blackbox(self, hv):
        self.stop(hv)
        for vm in hv.vms:
            self.stop(vm)

    def read_profile(self, p, cfg, run_no, before):
        """Cycles per packet over the traffic of this run (difference of two
        snapshots; idle includes the drain and the gaps between batches)."""
        prof = self.sfctl(p).get("profile") or {}
        prof0 = (before or {}).get("profile") or {}
        c1, c0 = prof.get("cycles") or {}, prof0.get("cycles") or {}
        cycles = {c: c1.get(c, 0) - c0.get(c, 0) for c in PROFILE_CATEGORIES}
        packets = (prof.get("packets") or 0) - (prof0.get("packets") or 0)
        row = dict(zip(("experiment", "system", "pipeline", "trace", "coalesce", "variant"),
                       cfg["key"]))
        row.update(run=run_no, packets=packets, tsc_hz=prof.get("tsc_hz", 0))
        for c in PROFILE_CATEGORIES:
            row[c] = (cycles.get(c, 0) / packets) if packets else 0
        self.breakdown.append(row)

    # ---- main loop ---------------------------------------------------------------
    def run_all(self):
        scale = SCALES[self.a.scale]
        self.seconds = self.a.seconds or scale["seconds"]
        self.warmup = self.a.warmup if self.a.warmup is not None else scale["warmup"]
        runs = self.a.runs or scale["runs"]
        self.header = ("bench-e2e: scale %s, %s s per run (+%s s warmup), %d runs; generator "
                       "CPU %d, device CPUs %s; NAPI %s" % (
                           self.a.scale, self.seconds, self.warmup, runs, self.a.gen_cpu,
                           ",".join(str(c) for c in self.a.dut_cpus), self.a.napi))
        log("%s; output %s" % (self.header, self.out))
        self.make_inputs(scale)
        self.make_topology()
        configs = self.configs()
        self.total = len(configs) * runs
        for r in range(1, runs + 1):
            for cfg in configs:
                self.one(cfg, r)
                self.done += 1
        sys.stderr.write("\n")

    def one(self, cfg, run_no):
        key = cfg["key"]
        label = "%s %s %s %s coalesce=%s %s run %d" % (key + (run_no,))
        self.progress(label)
        dev = cfg["start"]()
        try:
            if self.a.napi == "threaded":
                self.pin_napi(cfg["napi_ports"](dev))
            time.sleep(0.2)
            before = self.sfctl(dev) if cfg["after"] else None
            res = self.pktgen(key[3], cfg["iface"], cfg["queues"], cfg["rate"])
            if cfg["after"]:
                cfg["after"](dev, cfg, run_no, before)
        finally:
            cfg["stop"](dev)
        row = dict(zip(("experiment", "system", "pipeline", "trace", "coalesce", "variant"), key))
        row.update(run=run_no, offered_pps=res.get("offered_pps", 0),
                   sent_pps=round(res["sent_pps"]), received_pps=round(res["received_pps"]),
                   lost_pps=round(res["lost_pps"]), generator_bound=int(res["generator_bound"]),
                   sent=res["sent"], received=res["received"],
                   seconds=round(res["seconds"], 3), napi=self.a.napi)
        self.rows.append(row)
        self.write_csv()
        self.progress("%s: %.0f kpps back (%.0f sent)" % (label, res["received_pps"] / 1e3,
                                                          res["sent_pps"] / 1e3))

    def write_csv(self):
        with open(os.path.join(self.out, "runs.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=CSV_FIELDS)
            w.writeheader()
            w.writerows(self.rows)
        if self.breakdown:
            fields = ["experiment", "system", "pipeline", "trace", "coalesce", "variant",
                      "run", "packets", "tsc_hz"] + PROFILE_CATEGORIES
            with open(os.path.join(self.out, "breakdown.csv"), "w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=fields)
                w.writeheader()
                w.writerows(self.breakdown)

    def close(self):
        for p in list(self.procs):
            try:
                self.stop(p)
            except Exception as e:  # keep cleaning
                log("bench-e2e: stopping %s: %s" % (p.log_path, e))
        for entry in list(self.peers_started):
            self.stop_peer(entry)
        self.topo.close()
        shutil.rmtree(self.tmp, ignore_errors=True)


def thread_start(pid):
    """Start of a thread, in clock ticks since boot (0 if it is gone)."""
    try:
        with open("/proc/%d/stat" % pid) as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, IndexError, ValueError):
        return 0


def thread_age(pid):
    """Seconds since a thread started (None if it is gone)."""
    start = thread_start(pid)
    if not start:
        return None
    return time.clock_gettime(time.CLOCK_BOOTTIME) - start / os.sysconf("SC_CLK_TCK")


def fmt_time(s):
    s = int(s)
    return "%d:%02d" % (s // 60, s % 60)


def summarize(rows, breakdown, header=None):
    """Markdown: the run's settings (header), one line per configuration, the
    derived ratios after."""
    groups = {}
    for r in rows:
        k = (r["experiment"], r["system"], r["pipeline"], r["trace"], r["coalesce"], r["variant"])
        groups.setdefault(k, []).append(r)
    med = {k: statistics.median(float(r["received_pps"]) for r in v) for k, v in groups.items()}
    echo = {k[3]: v for k, v in med.items() if k[0] == "ceiling" and k[1] == "echo-afxdp"}
    lines = [header, ""] if header else []
    lines += ["| experiment | system | pipeline | trace | coalescing | variant | runs | "
             "received kpps, median (min-max) | sent kpps | lost % | of AF_XDP echo |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for k, v in groups.items():
        rec = [float(r["received_pps"]) for r in v]
        sent = statistics.median(float(r["sent_pps"]) for r in v)
        lost = 100.0 * (1 - med[k] / sent) if sent else 0.0
        frac = "%.0f%%" % (100 * med[k] / echo[k[3]]) if echo.get(k[3]) else "-"
        bound = " (generator-bound)" if any(int(r["generator_bound"]) for r in v) else ""
        lines.append("| %s | %s | %s | %s | %s | %s | %d | %.0f (%.0f-%.0f)%s | %.0f | %.1f | %s |"
                     % (k + (len(v), med[k] / 1e3, min(rec) / 1e3, max(rec) / 1e3, bound,
                             sent / 1e3, max(lost, 0.0), frac)))
    gains = []
    for k, v in med.items():
        if k[0] == "e2e" and k[4] == "on":
            off = med.get(k[:4] + ("off",) + k[5:])
            if off:
                gains.append("| %s | %s | %.0f | %.0f | %+.1f%% |" % (
                    k[2], k[3], v / 1e3, off / 1e3, 100 * (v / off - 1)))
    if gains:
        lines += ["", "Stage coalescing end to end (Figure 6), median kpps:", "",
                  "| pipeline | trace | on | off | gain |", "| --- | --- | --- | --- | --- |"]
        lines += gains
    ratios = []
    for k, v in med.items():
        if k[0] == "blackbox" and k[1] == "run-to-completion":
            bb = med.get(("blackbox", "black-box") + k[2:])
            if bb:
                ratios.append("| %s | %s | %.0f | %.0f | %.2fx |" % (
                    k[2], k[3], v / 1e3, bb / 1e3, v / bb if bb else float("inf")))
    if ratios:
        lines += ["", "Run-to-completion vs black-box chain (Figure 5), median kpps:", "",
                  "| pipeline | trace | run-to-completion | black box | ratio |",
                  "| --- | --- | --- | --- | --- |"]
        lines += ratios
    if breakdown:
        lines += ["", "CPU breakdown (Figure 12), cycles per packet, median of runs:", "",
                  "| pipeline | trace | coalescing | " + " | ".join(PROFILE_CATEGORIES) + " |",
                  "| --- | --- | --- |" + " --- |" * len(PROFILE_CATEGORIES)]
        bgroups = {}
        for r in breakdown:
            bgroups.setdefault((r["pipeline"], r["trace"], r["coalesce"]), []).append(r)
        for k, v in bgroups.items():
            cells = ["%.0f" % statistics.median(float(r[c]) for r in v)
                     for c in PROFILE_CATEGORIES]
            lines.append("| %s | %s | %s | %s |" % (k + (" | ".join(cells),)))
    return "\n".join(lines) + "\n"


def csv_list(text, allowed=None, what="value"):
    items = [x.strip() for x in text.split(",") if x.strip()]
    if allowed is not None:
        for x in items:
            if x not in allowed:
                raise argparse.ArgumentTypeError("unknown %s '%s' (one of %s)" % (
                    what, x, ", ".join(allowed)))
    if not items:
        raise argparse.ArgumentTypeError("empty list")
    return items


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scale", choices=list(SCALES), default="quick")
    ap.add_argument("--smoke", action="store_const", dest="scale", const="smoke",
                    help="tiny traffic, one run: checks the script, measures nothing")
    ap.add_argument("--build", default=os.path.join(ROOT, "build"))
    ap.add_argument("--out", required=True, help="directory for traces, CSV and summary")
    ap.add_argument("--experiments", type=lambda s: csv_list(s, EXPERIMENTS, "experiment"),
                    default=EXPERIMENTS)
    ap.add_argument("--pipelines", type=lambda s: csv_list(s, ["A", "B", "C"], "pipeline"))
    ap.add_argument("--traces", type=lambda s: csv_list(s, ["T1", "T2", "T3"], "trace"))
    ap.add_argument("--coalesce", type=lambda s: csv_list(s, ["on", "off"], "setting"),
                    default=["on", "off"])
    ap.add_argument("--runs", type=int, help="runs per configuration (default: by scale)")
    ap.add_argument("--seconds", type=float, help="seconds measured per run")
    ap.add_argument("--warmup", type=float, help="seconds sent before measuring")
    ap.add_argument("--rate", type=float, default=0,
                    help="offered packets/s (0: as fast as the generator goes)")
    ap.add_argument("--gen-cpu", type=int, default=0)
    ap.add_argument("--dut-cpus", type=lambda s: [int(x) for x in csv_list(s)], default=[1],
                    help="CPUs of the device under test (first one: single-core devices)")
    ap.add_argument("--xdp-mode", choices=["native", "generic"], default="native")
    ap.add_argument("--service-config", help="softflowd --service-config FILE")
    ap.add_argument("--napi", choices=NAPI_MODES, default="softirq",
                    help="where the veths' receive work runs: softirq (on the sender's CPU, "
                    "the default) or threaded (NAPI kernel threads, pinned to the receiving "
                    "side's CPUs)")
    a = ap.parse_args()
    if a.napi == "threaded" and a.xdp_mode != "native":
        ap.error("--napi threaded needs --xdp-mode native (generic XDP on a veth runs in "
                 "the backlog, not in the veth's NAPI)")
    scale = SCALES[a.scale]
    a.pipelines = a.pipelines or scale["pipelines"].split(",")
    a.traces = a.traces or scale["traces"].split(",")
    a.build = os.path.abspath(a.build)
    a.out = os.path.abspath(a.out)
    if os.geteuid() != 0:
        sys.exit("bench-e2e: needs root (network namespaces, XDP)")
    if a.napi == "threaded" and shutil.which("ethtool") is None:
        sys.exit("bench-e2e: --napi threaded needs ethtool (to give a veth a NAPI instance "
                 "while threaded NAPI is switched on)")
    if "peers" in a.experiments:
        missing = [t for t in ("ovs-vswitchd", "nft") if shutil.which(t) is None]
        if missing:
            sys.exit("bench-e2e: peers need %s (scripts/install-deps.sh installs them; or "
                     "--experiments without peers)" % " and ".join(missing))
    bench = Bench(a)
    interrupted = []

    def on_signal(signo, _frame):
        interrupted.append(signo)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    status = 0
    try:
        bench.run_all()
    except KeyboardInterrupt:
        log("\nbench-e2e: interrupted; results so far are in %s" % a.out)
        status = 130
    except RuntimeError as e:
        log("\nbench-e2e: %s" % e)
        status = 1
    finally:
        bench.close()
    if bench.rows:
        text = summarize(bench.rows, bench.breakdown, getattr(bench, "header", None))
        with open(os.path.join(a.out, "summary.md"), "w") as f:
            f.write(text)
        print(text)
    return status


if __name__ == "__main__":
    sys.exit(main())
