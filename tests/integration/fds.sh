# The VMM given only descriptors (fd:N), as sandboxd starts it: sourced by
# tests/integration/run in the vm shard (its helpers: report, has, RESULTS,
# VMM...); SANDVM_ONLY=fds runs it alone.
#
# /dev/kvm, the kernel, the initrd, the drive, the console directory, the
# control and vsock listening sockets all arrive as inherited descriptors.
# While the guest runs: a drive-swap naming a file by path still works (the
# VMM is not jailed here), a request with five descriptors or an index past
# the ones sent is refused, and a drive-swap whose file comes over SCM_RIGHTS
# changes what the guest reads. The console lands in console.log inside the
# directory, and the sockets the VMM was handed are still there after it.
fd_forms_case() {
	local name=fd-forms socks
	rm -rf "$RESULTS/$name.d"
	mkdir -p "$RESULTS/$name.d/console"
	# Unix sockets cannot be bound on the shared results folder.
	socks=$(mktemp -d "${TMPDIR:-/tmp}/sandvm-fds.XXXXXX")
	timeout -k 5 "$((CASE_TIMEOUT * 3))" /usr/bin/python3 - "$VMM" "$VMLINUX" "$TEST_INITRD" "$RESULTS/$name.d" "$socks" \
		>"$RESULTS/$name.out" 2>"$RESULTS/$name.err" <<'PY'
import json, os, socket, subprocess, sys, time

vmm, kernel, initrd, d, socks = sys.argv[1:6]
a, b, c = (os.path.join(d, n) for n in ("a.img", "b.img", "c.img"))
for path, size, text in ((a, 1 << 20, b"first-backing"), (b, 2 << 20, b"second-backing"),
                         (c, 1 << 20, b"first-backing")):
    with open(path, "wb") as f:
        f.truncate(size)
        f.write(text)

def listener(path):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.bind(path)
    s.listen(8)
    return s

control, vsock = listener(os.path.join(socks, "control")), listener(os.path.join(socks, "vsock"))
fds = {
    "kvm": os.open("/dev/kvm", os.O_RDWR),
    "kernel": os.open(kernel, os.O_RDONLY),
    "initrd": os.open(initrd, os.O_RDONLY),
    "drive": os.open(a, os.O_RDWR),
    "console": os.open(os.path.join(d, "console"), os.O_PATH | os.O_DIRECTORY),
    "control": control.fileno(),
    "vsock": vsock.fileno(),
}
argv = [vmm, "--kvm", "fd:%d" % fds["kvm"], "--kernel", "fd:%d" % fds["kernel"],
        "--initrd", "fd:%d" % fds["initrd"], "--drive", "fd:%d" % fds["drive"],
        "--console", "fd:%d" % fds["console"], "--control", "fd:%d" % fds["control"],
        "--vsock", "fd:%d" % fds["vsock"], "--cmdline", "sandvm.run=/tests/swap.sh"]
err = open(os.path.join(d, "vmm.err"), "wb")
p = subprocess.Popen(argv, pass_fds=list(fds.values()), stdout=subprocess.DEVNULL, stderr=err)
for fd in fds.values():
    if fd not in (control.fileno(), vsock.fileno()):
        os.close(fd)
log = os.path.join(d, "console", "console.log")

def console():
    try:
        with open(log, errors="replace") as f:
            return f.read()
    except FileNotFoundError:
        return ""

def fail(why):
    print("FAIL", why)
    p.kill()
    p.wait()
    sys.exit(1)

deadline = time.time() + 240
while "SWAP-READY" not in console():
    if p.poll() is not None or time.time() > deadline:
        fail("no SWAP-READY in the console directory's console.log (exit %s)" % p.poll())
    time.sleep(0.1)

def ask(req, send=()):
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(os.path.join(socks, "control"))
    line = (json.dumps(req) + "\n").encode()
    if send:
        socket.send_fds(s, [line], list(send))
    else:
        s.sendall(line)
    reply = s.makefile().readline()
    s.close()
    return json.loads(reply) if reply else {"ok": False, "error": "no reply"}

# Unjailed, a path still works (same size: the guest does not notice).
r = ask({"op": "drive-swap", "drive": 0, "path": c})
if not r["ok"]:
    fail("path-form drive-swap: %s" % r)
one = os.open(b, os.O_RDWR)
r = ask({"op": "drive-swap", "drive": 0, "fd": 0}, [one] * 5)
if r["ok"] or "at most 4" not in r.get("error", ""):
    fail("five descriptors were not refused: %s" % r)
r = ask({"op": "drive-swap", "drive": 0, "fd": 1}, [one])
if r["ok"] or "out of range" not in r.get("error", ""):
    fail("an index past the descriptors sent was not refused: %s" % r)
ro = os.open(b, os.O_RDONLY)
r = ask({"op": "drive-swap", "drive": 0, "fd": 0}, [ro])
if r["ok"]:
    fail("a read-only descriptor for a read-write drive was taken: %s" % r)
r = ask({"op": "drive-swap", "drive": 0, "fd": 0}, [one])
if not r["ok"]:
    fail("drive-swap over SCM_RIGHTS: %s" % r)
try:
    rc = p.wait(timeout=120)
except subprocess.TimeoutExpired:
    fail("the VMM did not end after the swap")
text = console()
if rc != 0 or "SWAP-OK" not in text:
    fail("exit %d, console: %s" % (rc, [l for l in text.splitlines() if "SWAP" in l][-2:]))
for s in ("control", "vsock"):
    if not os.path.exists(os.path.join(socks, s)):
        fail("the VMM unlinked the %s socket it was handed" % s)
print("OK")
PY
	rc=$?
	rm -rf "$socks"
	if [ "$rc" -eq 0 ] && has "$name" "^OK" out; then
		report OK "$name"
	else
		report FAIL "$name" "exit $rc: $(tail -2 "$RESULTS/$name.out") $(tail -2 "$RESULTS/$name.d/vmm.err" 2>/dev/null)"
	fi
}
fd_forms_case
