# The VMM's seccomp filters on real VMs, sourced by tests/integration/run (its helpers: report,
# has, RESULTS, BZIMAGE, INITRD...); SANDVM_ONLY=seccomp runs it alone. Needs the test build of
# the VMM, $BUILD/tests/vmm-testops (make build/tests/vmm-testops; the integration targets make it).

# Two VMMs; one is told to make a syscall its main thread's filter forbids (a test-only control
# op): it ends by SIGSYS and its log names the syscall, while the other still answers and stops.
seccomp_kill_case() {
	local name=seccomp-kill testops=$BUILD/tests/vmm-testops sock_a sock_b pid_a pid_b rc_a rc_b prc
	if [ ! -x "$testops" ]; then
		report FAIL "$name" "missing $testops (make $testops)"
		return
	fi
	sock_a=$(mktemp -u "${TMPDIR:-/tmp}/sandvm-control.XXXXXX")
	sock_b=$(mktemp -u "${TMPDIR:-/tmp}/sandvm-control.XXXXXX")
	# A death by SIGSYS dumps core by default; not into the repository.
	(ulimit -c 0; exec "$testops" --kernel "$BZIMAGE" --initrd "$INITRD" --cmdline "sandvm.test=shell" \
		--control "$sock_a" --cpus 2 >"$RESULTS/$name-a.out" 2>"$RESULTS/$name-a.err") &
	pid_a=$!
	(ulimit -c 0; exec "$testops" --kernel "$BZIMAGE" --initrd "$INITRD" --cmdline "sandvm.test=shell" \
		--control "$sock_b" >"$RESULTS/$name-b.out" 2>"$RESULTS/$name-b.err") &
	pid_b=$!
	for _ in $(seq 1 600); do
		has "$name-a" "boot timer" err && has "$name-b" "boot timer" err && break
		sleep 0.1
	done
	# Every thread of a running VMM (main and both vCPUs) is under its filter (Seccomp: 2 = filter mode).
	local threads filtered
	threads=$(ls /proc/"$pid_a"/task 2>/dev/null | wc -l)
	filtered=$(grep -l '^Seccomp:[[:space:]]*2$' /proc/"$pid_a"/task/*/status 2>/dev/null | wc -l)
	timeout 60 /usr/bin/python3 - "$sock_a" "$sock_b" >"$RESULTS/$name.replies" 2>&1 <<'PY'
import json, socket, sys
def conn(path):
    s = socket.socket(socket.AF_UNIX)
    s.connect(path)
    return s.makefile("rw")
def ask(f, req):
    f.write(json.dumps(req) + "\n"); f.flush()
    line = f.readline()
    return json.loads(line) if line else None
a, b = conn(sys.argv[1]), conn(sys.argv[2])
assert ask(a, {"op": "status"})["ok"]
# No reply: the VMM is gone before it can send one.
r = ask(a, {"op": "test-forbidden-syscall"})
assert r is None, r
st = ask(b, {"op": "status"})
assert st["ok"] and st["state"] == "running" and st["init_reached"], st
print("other VMM still running", st)
assert ask(b, {"op": "stop"})["ok"]
print("stopped")
PY
	prc=$?
	# (bash's own "Bad system call" notice of that end is not the test's output)
	{ wait "$pid_a"; } 2>/dev/null
	rc_a=$?
	wait "$pid_b"
	rc_b=$?
	rm -f "$sock_a"
	if [ "$threads" -ne 3 ] || [ "$filtered" -ne 3 ]; then
		report FAIL "$name" "$filtered of the $threads threads of a 2-vCPU VMM are under a seccomp filter, expected 3 of 3"
	elif [ "$rc_a" -ne $((128 + 31)) ]; then
		report FAIL "$name" "the VMM told to break its filter ended with status $rc_a, not by SIGSYS (159)"
	elif ! has "$name-a" "vmm: error: seccomp: thread main made forbidden syscall socket (41)" err; then
		report FAIL "$name" "its log does not name the syscall: $(tail -2 "$RESULTS/$name-a.err")"
	elif [ "$prc" -ne 0 ]; then
		report FAIL "$name" "control client: $(tail -3 "$RESULTS/$name.replies")"
	elif [ "$rc_b" -ne 0 ] || [ -e "$sock_b" ]; then
		report FAIL "$name" "the other VMM ended with status $rc_b (or left its socket)"
	else
		report OK "$name"
	fi
}
seccomp_kill_case
