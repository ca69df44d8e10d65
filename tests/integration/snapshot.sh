# Snapshots of a running VM, restores, pause and resume (docs/vmm.md,
# "Snapshots"): sourced by tests/integration/run in the vm shard (its
# helpers: report, RESULTS, VMM, RUN...); SANDVM_ONLY=snapshot runs it alone.
#
# One VM boots the agent, gets a file written and a counting process
# started; pause stops the counter (the VM holds no CPU) and resume starts it
# again; a snapshot op writes state + memory; two VMs restored from it each
# answer exec, see the file, and run apart; a snapshot sealed with a memory
# key holds no guest RAM in clear and restores with the key; a broken state
# file, a truncated memory file, another machine shape, a sealed memory file
# with another key, without a key or tampered are refused with exit 2
# before anything runs.
snap_dir=$(mktemp -d "${TMPDIR:-/tmp}/sandvm-snap.XXXXXX")
timeout -k 5 "$((CASE_TIMEOUT * 4))" /usr/bin/python3 - "$VMM" "$RUN" "$VMLINUX" "$AGENT_INITRD" "$snap_dir" \
	"$RESULTS" >"$RESULTS/snapshot.out" 2>"$RESULTS/snapshot.err" <<'PY'
import json, os, shutil, socket, subprocess, sys, time

vmm, run, kernel, initrd, d, results = sys.argv[1:7]
procs = []

def case(name, ok, why=""):
    print("CASE %s %s %s" % (name, "OK" if ok else "FAIL", why.replace("\n", " ")[:400]), flush=True)

def ctl(sock, req, timeout=60):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(sock)
    s.sendall(json.dumps(req).encode() + b"\n")
    return json.loads(s.makefile().readline())

def vmm_start(name, args):
    err = open(os.path.join(results, "snapshot-%s.err" % name), "wb")
    p = subprocess.Popen([vmm] + args, stdout=open(os.path.join(results, "snapshot-%s.out" % name), "wb"),
                         stderr=err)
    procs.append(p)
    return p

def ex(sock, *cmd, timeout=120, ready=0):
    argv = [run, "--attach", sock]
    if ready:
        argv += ["--ready-timeout", str(ready)]
    r = subprocess.run(argv + ["--"] + list(cmd), capture_output=True, timeout=timeout)
    return r.returncode, r.stdout.decode(errors="replace"), r.stderr.decode(errors="replace")

def log_of(name):
    with open(os.path.join(results, "snapshot-%s.err" % name), errors="replace") as f:
        return f.read()

def count(sock):
    rc, out, _ = ex(sock, "cat", "/tmp/count")
    return int(out.strip() or -1) if rc == 0 else -1

try:
    src_sock, src_ctl = os.path.join(d, "src.vsock"), os.path.join(d, "src.control")
    src = vmm_start("source", ["--verbose", "--kernel", kernel, "--initrd", initrd, "--cpus", "2", "--memory", "512",
                               "--console", os.path.join(d, "source.console"), "--vsock", src_sock,
                               "--control", src_ctl, "--cmdline", "loglevel=4"])
    rc, out, err = ex(src_sock, "sh", "-c", "echo snapshot-marker > /tmp/marker; echo ok", ready=120)
    if rc != 0 or out.strip() != "ok":
        case("snapshot-source-boot", False, "exec on the source VM: rc %d %s %s" % (rc, out, err))
        raise SystemExit(1)
    # A counter that outlives its exec: the agent's exec ends, the process goes on. It renames a
    # finished file into place, so a read never catches one truncated and not yet written.
    ex(src_sock, "sh", "-c", "setsid sh -c 'i=0; while :; do i=$((i+1)); echo $i > /tmp/count.n; "
       "mv /tmp/count.n /tmp/count; sleep 0.1; done' </dev/null >/dev/null 2>&1 &")
    time.sleep(1.5)
    c1 = count(src_sock)

    # ---- pause / resume ----
    r = ctl(src_ctl, {"op": "pause"})
    st = ctl(src_ctl, {"op": "status"})
    def cpu_ticks(pid):
        ticks = 0
        for t in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/stat" % (pid, t)) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            ticks += int(fields[11]) + int(fields[12])
        return ticks
    t0 = cpu_ticks(src.pid)
    time.sleep(2)
    t1 = cpu_ticks(src.pid)
    r2 = ctl(src_ctl, {"op": "resume"})
    time.sleep(1.5)
    c2 = count(src_sock)
    time.sleep(1)
    c3 = count(src_sock)
    ok = (r.get("ok") and r.get("state") == "paused" and st.get("state") == "paused" and r2.get("ok")
          and r2.get("state") == "running" and t1 - t0 <= 10 and c1 > 0 and c3 > c2 > c1)
    case("vm-pause-resume", ok, "pause %s status %s resume %s cpu ticks while paused %d counts %d %d %d"
         % (r, st.get("state"), r2, t1 - t0, c1, c2, c3))

    # ---- snapshot ----
    snap = os.path.join(d, "snap")
    os.mkdir(snap)
    r = ctl(src_ctl, {"op": "snapshot", "dir": snap}, timeout=300)
    st = ctl(src_ctl, {"op": "status"})
    size = os.path.getsize(os.path.join(snap, "memory")) if os.path.exists(os.path.join(snap, "memory")) else -1
    used = os.stat(os.path.join(snap, "memory")).st_blocks * 512 if size >= 0 else -1
    ok = r.get("ok") and st.get("state") == "paused" and size == 512 << 20 and 0 < used < size
    case("vm-snapshot", ok, "reply %s, state %s, memory file %d bytes, %d allocated" % (r, st.get("state"), size, used))
    ctl(src_ctl, {"op": "stop"})
    src.wait(timeout=60)

    # ---- two restores, a while after the snapshot ----
    time.sleep(6)
    clones = []
    for i in (1, 2):
        sock, c = os.path.join(d, "c%d.vsock" % i), os.path.join(d, "c%d.control" % i)
        p = vmm_start("clone%d" % i, ["--restore", snap, "--verbose", "--cpus", "2", "--memory", "512", "--console",
                                      os.path.join(d, "clone%d.console" % i), "--vsock", sock, "--control", c])
        clones.append((p, sock, c))
    # The guest's clock stood still while the snapshot sat on disk; the agent's RESTORED sets it, reseeds
    # the RNG and names the clone, before anything else runs in it.
    lag, restored, rand, names, skew = [], [], [], [], []
    # The guest's date(1) (busybox) has whole seconds: its time g lies in [s, s + 1), read between the
    # host's times before and after the exec; (lo, hi) bounds g minus the host's time.
    def guest_offset(sock, ready=0):
        before = time.time()
        rc, out, _ = ex(sock, "date", "+%s", ready=ready)
        after = time.time()
        if rc != 0 or not out.strip().isdigit():
            return None
        s_ = int(out.strip())
        return (round(s_ - after, 2), round(s_ + 1 - before, 2))
    for p, sock, c in clones:
        lag.append(guest_offset(sock, ready=60))
    for i, (p, sock, c) in enumerate(clones):
        r = subprocess.run([run, "--attach", sock, "--restored", "--hostname", "clone%d" % (i + 1)],
                           capture_output=True, text=True, timeout=60)
        rc, out, err = r.returncode, r.stdout, r.stderr
        restored.append((rc, out.strip(), err.strip()[:200]))
    for p, sock, c in clones:
        rand.append(ex(sock, "sh", "-c", "head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \\n'")[1].strip())
        names.append(ex(sock, "hostname")[1].strip())
        skew.append(guest_offset(sock))
    ok = (all(r[0] == 0 and r[1] == "restored" for r in restored) and len(set(rand)) == 2 and all(rand)
          and names == ["clone1", "clone2"] and all(x is not None and x[0] < 1.0 and x[1] > -1.0 for x in skew))
    case("vm-restore-reseed", ok, "guest clock minus host's before RESTORED within %s s, RESTORED %s, urandom %s, "
         "hostnames %s, guest clock minus host's after within %s s" % (lag, restored, rand, names, skew))
    answers = []
    for p, sock, c in clones:
        rc, out, err = ex(sock, "cat", "/tmp/marker", ready=60)
        answers.append((rc, out.strip(), err.strip()[:200]))
    stats = [ctl(c, {"op": "status"}) for _, _, c in clones]
    ok = all(a[0] == 0 and a[1] == "snapshot-marker" for a in answers) and all(s.get("restored") for s in stats)
    case("vm-restore-exec", ok, "clones answered %s, status restored %s restore_ms %s"
         % (answers, [s.get("restored") for s in stats], [s.get("restore_ms") for s in stats]))
    # The counter was running when the snapshot was taken: it runs on in each clone, apart.
    a1 = [count(sock) for _, sock, _ in clones]
    time.sleep(1.5)
    a2 = [count(sock) for _, sock, _ in clones]
    rc, _, _ = ex(clones[0][1], "sh", "-c", "echo only-one > /tmp/marker")
    b = [ex(sock, "cat", "/tmp/marker")[1].strip() for _, sock, _ in clones]
    ok = all(x > 0 for x in a1) and a2[0] > a1[0] and a2[1] > a1[1] and b == ["only-one", "snapshot-marker"]
    case("vm-restore-apart", ok, "counters %s then %s, markers after writing in clone 1: %s" % (a1, a2, b))
    # Pause and resume work on a restored VM too, and it stops cleanly.
    r = ctl(clones[0][2], {"op": "pause"})
    r2 = ctl(clones[0][2], {"op": "resume"})
    rc, out, _ = ex(clones[0][1], "echo", "after")
    ms = [l for l in log_of("clone1").splitlines() if "restored from snapshot in" in l]
    case("vm-restore-pause", r.get("ok") and r2.get("ok") and rc == 0 and out.strip() == "after",
         "pause %s resume %s exec %d %s; %s" % (r, r2, rc, out.strip(), ms[:1]))
    # A sealed snapshot (the main thread's seccomp filter in kill mode, the VMM's default): no RAM in
    # clear on disk, restored with the key; refused with another key, without one, or tampered.
    token = "SEALED-MARKER-" + os.urandom(12).hex()
    ex(clones[0][1], "sh", "-c", "i=0; while [ $i -lt 4000 ]; do echo %s; i=$((i+1)); done > /tmp/sealed; echo ok"
       % token)
    sealed = os.path.join(d, "sealed")
    os.mkdir(sealed)
    key, other = os.urandom(32), os.urandom(32)
    keyf, otherf = os.path.join(d, "memory.key"), os.path.join(d, "other.key")
    for path, k in ((keyf, key), (otherf, other)):
        with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
            f.write(k)
    r = ctl(clones[0][2], {"op": "snapshot", "dir": sealed, "memory_key": key.hex()}, timeout=300)
    with open(os.path.join(sealed, "memory"), "rb") as f:
        blob = f.read()
    with open(os.path.join(sealed, "state"), "rb") as f:
        state_blob = f.read()
    ok = (r.get("ok") and r.get("memory_sealed") and blob[:8] == b"SANDVMIM" and token.encode() not in blob
          and state_blob[:8] == b"SVSTSEAL")
    case("vm-snapshot-sealed", ok, "reply %s, memory file %d bytes, starts %r, marker in it: %s; state file starts %r"
         % (r, len(blob), blob[:8], token.encode() in blob, state_blob[:8]))
    for p, _, c in clones:
        ctl(c, {"op": "stop"})
        p.wait(timeout=60)
    sock, c = os.path.join(d, "s.vsock"), os.path.join(d, "s.control")
    p = vmm_start("sealed", ["--restore", sealed, "--restore-memory-key", keyf, "--cpus", "2", "--memory", "512",
                             "--console", "none", "--vsock", sock, "--control", c])
    rc, out, _ = ex(sock, "sh", "-c", "grep -c %s /tmp/sealed" % token, ready=60)
    case("vm-restore-sealed", rc == 0 and out.strip() == "4000", "exec %d %r; %s" % (rc, out.strip(),
         [l for l in log_of("sealed").splitlines() if "restored" in l or "error" in l][:2]))
    ctl(c, {"op": "stop"})
    p.wait(timeout=60)

    # ---- refusals: nothing runs, exit 2, the message says why ----
    def refused(name, args, want):
        p = vmm_start(name, args)
        try:
            p.wait(timeout=60)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        text = log_of(name)
        case(name, p.returncode == 2 and want in text, "exit %s, log %s" % (p.returncode, text.strip()[-300:]))

    # Copies of the state file only: a copy of the sparse memory file would fill it in.
    bad = os.path.join(d, "bad")
    os.mkdir(bad)
    shutil.copyfile(os.path.join(snap, "state"), os.path.join(bad, "state"))
    os.symlink(os.path.join(snap, "memory"), os.path.join(bad, "memory"))
    with open(os.path.join(bad, "state"), "r+b") as f:
        f.seek(200)
        b0 = f.read(1)
        f.seek(200)
        f.write(bytes([b0[0] ^ 0x40]))
    common = ["--cpus", "2", "--memory", "512", "--console", "none", "--vsock", os.path.join(d, "x.vsock")]
    refused("vm-restore-corrupt-state", ["--restore", bad] + common, "snapshot:")
    short = os.path.join(d, "short")
    os.mkdir(short)
    shutil.copyfile(os.path.join(snap, "state"), os.path.join(short, "state"))
    with open(os.path.join(short, "memory"), "wb") as f:
        f.truncate(256 << 20)
    refused("vm-restore-short-memory", ["--restore", short] + common, "memory file")
    refused("vm-restore-sealed-wrong-key", ["--restore", sealed, "--restore-memory-key", otherf] + common,
            "snapshot: memory file")
    refused("vm-restore-sealed-no-key", ["--restore", sealed] + common, "no --restore-memory-key")
    tampered = os.path.join(d, "tampered")
    os.mkdir(tampered)
    shutil.copyfile(os.path.join(sealed, "state"), os.path.join(tampered, "state"))
    shutil.copyfile(os.path.join(sealed, "memory"), os.path.join(tampered, "memory"))
    with open(os.path.join(tampered, "memory"), "r+b") as f:
        f.seek(len(blob) - 100)
        b0 = f.read(1)
        f.seek(len(blob) - 100)
        f.write(bytes([b0[0] ^ 1]))
    refused("vm-restore-sealed-tampered", ["--restore", tampered, "--restore-memory-key", keyf] + common,
            "failed authentication")
    # The memory intact, one bit of the sealed registers flipped.
    shutil.copyfile(os.path.join(sealed, "memory"), os.path.join(tampered, "memory"))
    with open(os.path.join(tampered, "state"), "r+b") as f:
        f.seek(len(state_blob) // 2)
        b0 = f.read(1)
        f.seek(len(state_blob) // 2)
        f.write(bytes([b0[0] ^ 1]))
    refused("vm-restore-sealed-state-tampered", ["--restore", tampered, "--restore-memory-key", keyf] + common,
            "does not open with this key")
    refused("vm-restore-other-shape", ["--restore", snap, "--cpus", "1", "--memory", "512", "--console", "none",
                                       "--vsock", os.path.join(d, "y.vsock")], "vCPUs")
finally:
    for p in procs:
        if p.poll() is None:
            p.kill()
            p.wait()
PY
snap_rc=$?
while read -r tag name verdict why; do
	[ "$tag" = CASE ] || continue
	if [ "$verdict" = OK ]; then report OK "$name"; else report FAIL "$name" "$why"; fi
done <"$RESULTS/snapshot.out"
if ! grep -q '^CASE vm-restore-other-shape ' "$RESULTS/snapshot.out"; then
	report FAIL snapshot "the snapshot script ended early (exit $snap_rc): $(tail -3 "$RESULTS/snapshot.err" | tr '\n' ' ')"
fi
rm -rf "$snap_dir"
