# Guest agent cases, sourced by tests/integration/run (its helpers: report,
# RESULTS, RUN, VMM...). One VM with the agent as PID 1 serves every exec
# and file case through `sandvm-run --attach`; the Debian image gets a VM of
# its own. Every case checks what came back, byte for byte where it can.

exec_dir=$(mktemp -d "${TMPDIR:-/tmp}/sandvm-exec.XXXXXX")
EXEC_SOCK=$exec_dir/vsock

# ex NAME [sandvm-run options] -- CMD...: exec in the shared VM; output to
# NAME.stdout / NAME.stderr, exit status in $rc.
ex() {
	local name=$1
	shift
	# A VM that died fails every later case at once, saying why, instead of each waiting for it.
	if [ -n "${exec_vm:-}" ] && ! kill -0 "$exec_vm" 2>/dev/null; then
		echo "the shared exec VM is gone: $(tail -2 "$RESULTS/exec-vm.err" | tr '\n' ' ')" \
			>"$RESULTS/$name.stderr"
		: >"$RESULTS/$name.stdout"
		rc=125
		return
	fi
	timeout -k 5 120 "$RUN" --attach "$EXEC_SOCK" "$@" \
		>"$RESULTS/$name.stdout" 2>"$RESULTS/$name.stderr" </dev/null
	rc=$?
}
# control_query SOCKET OP: the VMM control socket's JSON reply to {"op": OP}, on one line.
control_query() {
	/usr/bin/python3 - "$1" "$2" <<'PY'
import json, socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(10)
s.connect(sys.argv[1])
s.sendall(json.dumps({"op": sys.argv[2]}).encode() + b"\n")
print(s.makefile().readline().strip())
PY
}
# exec_vm_state: where the shared exec VM's VMM threads are and its vsock device's state, for a
# case whose stream stalled (the VMM outlives the case).
exec_vm_state() {
	local t
	for t in /proc/"$exec_vm"/task/*; do
		echo "# thread $(cat "$t/comm" 2>/dev/null) $(cut -d' ' -f3 "$t/stat" 2>/dev/null) $(cat "$t/wchan" 2>/dev/null)"
	done
	echo "# vsock: $(control_query "$exec_dir/control" vsock 2>&1)"
}
out_is() { [ "$(cat "$RESULTS/$1.stdout")" = "$2" ]; }
err_has() { grep -q -- "$2" "$RESULTS/$1.stderr"; }
why() { echo "exit $rc, stdout '$(head -c 200 "$RESULTS/$1.stdout")', stderr '$(head -c 300 "$RESULTS/$1.stderr")'"; }

"$VMM" --kernel "$VMLINUX" --initrd "$AGENT_INITRD" --cpus 2 --memory 768 \
	--vsock "$EXEC_SOCK" --control "$exec_dir/control" --cmdline "loglevel=4" \
	>"$RESULTS/exec-vm.out" 2>"$RESULTS/exec-vm.err" &
exec_vm=$!

ex agent-ready --ready-timeout 90 --ping
if [ "$rc" -eq 0 ] && grep -q '^pong from sandvm-agent ' "$RESULTS/agent-ready.stdout"; then
	report OK agent-ready
else
	report FAIL agent-ready "$(why agent-ready)"
fi

ex exec-stdout-stderr -- sh -c 'echo to-out; echo to-err >&2; echo more-out'
if [ "$rc" -eq 0 ] && out_is exec-stdout-stderr "$(printf 'to-out\nmore-out')" &&
	[ "$(cat "$RESULTS/exec-stdout-stderr.stderr")" = to-err ]; then
	report OK exec-stdout-stderr
else
	report FAIL exec-stdout-stderr "$(why exec-stdout-stderr)"
fi

ok=1
for code in 0 1 42 255; do
	ex exec-exit-code -- sh -c "exit $code"
	[ "$rc" -eq "$code" ] || { ok=0; break; }
done
if [ $ok = 1 ]; then report OK exec-exit-code; else report FAIL exec-exit-code "exit $code gave $rc"; fi

# A process killed by a signal: 128+N, as a shell reports it.
ex exec-killed-by-signal -- sh -c 'kill -TERM $$; sleep 5'
if [ "$rc" -eq 143 ]; then report OK exec-killed-by-signal; else
	report FAIL exec-killed-by-signal "$(why exec-killed-by-signal), expected 143"; fi

# The control socket describes the vsock device: both queues set up by the guest's driver,
# and the agent's connection from the ping above gone again.
vsock_state=$(control_query "$exec_dir/control" vsock 2>&1)
if printf '%s' "$vsock_state" | /usr/bin/python3 -c '
import json, sys
r = json.load(sys.stdin)
v = r["vsock"]
assert r["ok"] and v["rxq"]["ready"] and v["txq"]["ready"] and v["rxq"]["size"] > 0, r
assert v["rxq"]["guest_avail_idx"] != v["rxq"]["last_avail_idx"], "no RX buffers posted"
assert isinstance(v["connections"], list), r'; then
	report OK control-vsock-status
else
	report FAIL control-vsock-status "$vsock_state"
fi

# No nested virtualization inside a sandbox: the flags name neither VMX nor SVM (fpu is counted
# too, so an empty or missing flags line fails rather than passes).
ex cpu-no-nested-virt -- sh -c 'grep -m1 "^flags" /proc/cpuinfo | tr " " "\n" | grep -c -x -E "vmx|svm|fpu"'
if out_is cpu-no-nested-virt 1; then report OK cpu-no-nested-virt; else
	report FAIL cpu-no-nested-virt "$(why cpu-no-nested-virt), expected 1 (fpu alone)"; fi

# /dev has the links a usual system has: /dev/stdin, /dev/stdout, /dev/stderr and /dev/fd.
ex dev-links -- sh -c 'echo through-stdin | cat /dev/stdin; echo to-stdout > /dev/stdout; echo to-stderr > /dev/stderr;
	ls /dev/fd/ | grep -c -x 0'
if [ "$rc" -eq 0 ] && out_is dev-links "$(printf 'through-stdin\nto-stdout\n1')" && err_has dev-links to-stderr; then
	report OK dev-links; else report FAIL dev-links "$(why dev-links)"; fi

# SIGINT to sandvm-run is forwarded to the guest process, which dies of it.
signal_case() {
	local name=exec-signal-forwarded pid
	"$RUN" --attach "$EXEC_SOCK" -- sh -c 'echo started; exec sleep 60' \
		>"$RESULTS/$name.stdout" 2>"$RESULTS/$name.stderr" </dev/null &
	pid=$!
	for _ in $(seq 1 100); do grep -q started "$RESULTS/$name.stdout" && break; sleep 0.1; done
	sleep 0.3
	kill -INT "$pid"
	wait "$pid"
	rc=$?
	if [ "$rc" -eq 130 ]; then report OK "$name"; else report FAIL "$name" "$(why "$name"), expected 130"; fi
}
signal_case

# A timeout kills the whole process group, background children included.
start=$(date +%s)
ex exec-timeout --timeout 2 -- sh -c 'sleep 300 & sleep 301 & echo spawned; wait'
took=$(($(date +%s) - start))
ex exec-timeout-after -- sh -c 'ps -o pid,args | grep -c "[s]leep 30[01]"'
if [ "$rc" -ne 0 ] && [ "$(cat "$RESULTS/exec-timeout.stdout")" = spawned ] && [ "$took" -lt 30 ] &&
	out_is exec-timeout-after 0; then
	ex exec-timeout -- true
	report OK exec-timeout
else
	report FAIL exec-timeout "exit $rc after ${took}s; sleepers left: $(cat "$RESULTS/exec-timeout-after.stdout")"
fi
ex exec-timeout-status --timeout 1 -- sleep 30
if [ "$rc" -eq 124 ] && err_has exec-timeout-status "timed out"; then report OK exec-timeout-status; else
	report FAIL exec-timeout-status "$(why exec-timeout-status), expected 124"; fi

# stdin: 3 MiB of random bytes through cat and back, and a checksum made in the guest.
stdin_case() {
	local name=exec-stdin-roundtrip
	head -c 3145728 /dev/urandom >"$exec_dir/in"
	timeout 120 "$RUN" --attach "$EXEC_SOCK" -- cat <"$exec_dir/in" >"$RESULTS/$name.stdout" \
		2>"$RESULTS/$name.stderr"
	rc=$?
	local want got guest
	want=$(sha256sum <"$exec_dir/in" | cut -d' ' -f1)
	got=$(sha256sum <"$RESULTS/$name.stdout" | cut -d' ' -f1)
	guest=$(timeout 120 "$RUN" --attach "$EXEC_SOCK" -- sha256sum <"$exec_dir/in" | cut -d' ' -f1)
	if [ "$rc" -eq 0 ] && [ "$want" = "$got" ] && [ "$want" = "$guest" ]; then
		report OK "$name"
	else
		report FAIL "$name" "exit $rc, sent $want, echoed $got, guest saw $guest"
		exec_vm_state
	fi
}
stdin_case

# 100 MiB of output, checksummed by the guest as it is produced and by the host as it arrives.
big_case() {
	local name=exec-100mib-output start took
	start=$(date +%s%N)
	(
		set -o pipefail
		timeout 600 "$RUN" --attach "$EXEC_SOCK" -- sh -c \
			'head -c 104857600 /dev/urandom >/tmp/big && sha256sum /tmp/big >&2 && cat /tmp/big && rm /tmp/big' \
			2>"$RESULTS/$name.stderr" </dev/null | sha256sum >"$RESULTS/$name.stdout"
	) &
	local job=$! waited=0
	# It takes well under a minute; at 4 minutes it has stalled: record where, while it still is.
	while kill -0 "$job" 2>/dev/null && [ "$waited" -lt 240 ]; do
		sleep 1
		waited=$((waited + 1))
	done
	kill -0 "$job" 2>/dev/null && exec_vm_state >"$RESULTS/$name.stalled"
	wait "$job"
	rc=$?
	took=$((($(date +%s%N) - start) / 1000000))
	local want got
	want=$(cut -d' ' -f1 "$RESULTS/$name.stderr")
	got=$(cut -d' ' -f1 "$RESULTS/$name.stdout")
	if [ "$rc" -eq 0 ] && [ -n "$want" ] && [ "$want" = "$got" ]; then
		report OK "$name"
		echo "# 100 MiB of stdout in ${took} ms (generation included)"
	else
		report FAIL "$name" "exit $rc, guest $want, host $got"
		if [ -s "$RESULTS/$name.stalled" ]; then
			echo "# stalled for 240 s; then:"
			cat "$RESULTS/$name.stalled"
		fi
		exec_vm_state
	fi
}
big_case

# A consumer faster than the guest: the host side drains at once, so the
# guest's vsock credit must come back without host-to-guest traffic to
# carry it (this once stalled for good).
ex exec-fast-consumer --verbose -- head -c 67108864 /dev/zero
if [ "$rc" -eq 0 ] && err_has exec-fast-consumer "stdout 67108864 bytes" &&
	[ "$(stat -c %s "$RESULTS/exec-fast-consumer.stdout")" -eq 67108864 ]; then
	report OK exec-fast-consumer
	: >"$RESULTS/exec-fast-consumer.stdout"
else
	report FAIL exec-fast-consumer "exit $rc: $(tail -2 "$RESULTS/exec-fast-consumer.stderr")"
	exec_vm_state
fi

# 20 execs at once: each waits until all 20 have started, which only
# completes if the agent runs them concurrently.
concurrent_case() {
	local name=exec-20-concurrent i pids="" bad=0
	ex exec-concurrent-setup -- sh -c 'rm -rf /tmp/barrier && mkdir /tmp/barrier'
	for i in $(seq 1 20); do
		timeout 120 "$RUN" --attach "$EXEC_SOCK" -- sh -c \
			"touch /tmp/barrier/$i; n=0; while [ \$(ls /tmp/barrier | wc -l) -lt 20 ]; do
			   n=\$((n+1)); [ \$n -gt 600 ] && exit 9; sleep 0.1; done; echo exec-$i" \
			>"$RESULTS/$name.$i" 2>&1 </dev/null &
		pids="$pids $!"
	done
	i=0
	for p in $pids; do
		i=$((i + 1))
		wait "$p" || bad=$((bad + 1))
		[ "$(cat "$RESULTS/$name.$i")" = "exec-$i" ] || bad=$((bad + 1))
	done
	if [ "$bad" -eq 0 ]; then report OK "$name"; else report FAIL "$name" "$bad of 20 went wrong"; fi
}
concurrent_case

ex exec-env-workdir-user --env FOO=bar --env PATH=/bin --workdir /tmp --user 1000:1001 -- \
	sh -c 'echo "$FOO $(pwd) $(id -u):$(id -g) ${HOME:-nohome}"'
if [ "$rc" -eq 0 ] && out_is exec-env-workdir-user "bar /tmp 1000:1001 nohome"; then
	report OK exec-env-workdir-user
else
	report FAIL exec-env-workdir-user "$(why exec-env-workdir-user)"
fi

ex exec-missing-binary -- no-such-program --flag
if [ "$rc" -eq 127 ] && err_has exec-missing-binary "cannot execute no-such-program: No such file"; then
	report OK exec-missing-binary
else
	report FAIL exec-missing-binary "$(why exec-missing-binary), expected 127"
fi
ex exec-missing-workdir --workdir /no/such/dir -- true
if [ "$rc" -eq 127 ] && err_has exec-missing-workdir "working directory /no/such/dir"; then
	report OK exec-missing-workdir
else
	report FAIL exec-missing-workdir "$(why exec-missing-workdir)"
fi

ex exec-pty --tty -- sh -c 'tty; stty size'
if [ "$rc" -eq 0 ] && grep -q '^/dev/pts/' "$RESULTS/exec-pty.stdout"; then
	report OK exec-pty
else
	report FAIL exec-pty "$(why exec-pty)"
fi

# Background output after the main process exits does not hold the exec open.
ex exec-background-child -- sh -c '(sleep 30; echo late) & echo main-done'
if [ "$rc" -eq 0 ] && out_is exec-background-child main-done; then
	report OK exec-background-child
else
	report FAIL exec-background-child "$(why exec-background-child)"
fi

# ---- files ----
files_case() {
	local name=files f=$exec_dir/file k=0 fails=""
	head -c 1500000 /dev/urandom >"$f"
	fcheck() { # fcheck DESCRIPTION EXPECTED-RC [GREP-IN-STDERR] -- sandvm-run args
		local d=$1 want=$2 pat=$3
		shift 4
		k=$((k + 1))
		ex "$name-$k" "$@"
		if [ "$rc" -ne "$want" ] || { [ -n "$pat" ] && ! err_has "$name-$k" "$pat"; }; then
			fails="$fails; $d: $(why "$name-$k")"
		fi
	}
	fcheck "mkdir -p" 0 "" -- --mkdir /tmp/f/a/b --parents
	fcheck "mkdir again" 1 "File exists" -- --mkdir /tmp/f/a/b
	fcheck "mkdir -p again" 0 "" -- --mkdir /tmp/f/a/b --parents
	timeout 60 "$RUN" --attach "$EXEC_SOCK" --put "$f" /tmp/f/a/data >"$RESULTS/$name.put" 2>&1 ||
		fails="$fails; put: $(cat "$RESULTS/$name.put")"
	timeout 60 "$RUN" --attach "$EXEC_SOCK" --cat /tmp/f/a/data >"$exec_dir/back" 2>"$RESULTS/$name.cat" ||
		fails="$fails; cat: $(cat "$RESULTS/$name.cat")"
	cmp -s "$f" "$exec_dir/back" || fails="$fails; content differs after put/cat"
	fcheck "stat" 0 "" -- --stat /tmp/f/a/data
	grep -q "type=1 mode=0644 size=1500000 " "$RESULTS/$name-$k.stdout" ||
		fails="$fails; stat said $(cat "$RESULTS/$name-$k.stdout")"
	fcheck "ls" 0 "" -- --ls /tmp/f/a
	sort "$RESULTS/$name-$k.stdout" | tr -s ' ' >"$exec_dir/ls"
	[ "$(cat "$exec_dir/ls")" = "$(printf 'd 40 b\nf 1500000 data')" ] ||
		fails="$fails; ls said $(cat "$exec_dir/ls")"
	fcheck "cat missing" 1 "No such file" -- --cat /tmp/f/nope
	fcheck "cat directory" 1 "Is a directory" -- --cat /tmp/f/a
	fcheck "put into a directory" 1 "Is a directory" -- --put "$f" /tmp/f/a
	fcheck "put into missing dir" 1 "No such file" -- --put "$f" /tmp/nodir/x
	fcheck "relative path" 1 "absolute" -- --stat tmp/f
	ex "$name-chmod" -- sh -c 'chmod 000 /tmp/f/a/data && mkdir -p /tmp/u && chown 1000 /tmp/u'
	fcheck "permission denied" 1 "Permission denied" -- --user 1000 -- cat /tmp/f/a/data
	fcheck "rm non-empty" 1 "not empty" -- --rm /tmp/f/a
	fcheck "rm -r" 0 "" -- --rm /tmp/f --recursive
	fcheck "stat removed" 1 "No such file" -- --stat /tmp/f
	if [ -z "$fails" ]; then report OK "$name"; else report FAIL "$name" "${fails#; }"; fi
}
files_case

# The relay port (docs/agent-protocol.md, section 9): a server bound to the guest's 127.0.0.1 is
# reached over vsock port 1025; a port nobody listens on is refused, a bad line refused.
relay_case() {
	local name=agent-relay
	ex relay-server -- sh -c 'mkdir -p /tmp/www && echo relay-ok > /tmp/www/index.html &&
		httpd -p 127.0.0.1:8080 -h /tmp/www'
	if [ "$rc" -ne 0 ]; then
		report FAIL "$name" "cannot start httpd in the guest: $(why relay-server)"
		return
	fi
	/usr/bin/python3 - "$EXEC_SOCK" >"$RESULTS/$name.stdout" 2>"$RESULTS/$name.stderr" <<'PY'
import socket, sys

def relay(line):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(30)
    s.connect(sys.argv[1])
    s.sendall(b"CONNECT 1025\n")
    ack = b""
    while not ack.endswith(b"\n"):
        ack += s.recv(1)
    assert ack.startswith(b"OK "), ack
    s.sendall(line)
    data = b""
    while chunk := s.recv(65536):
        data += chunk
    return data

got = relay(b"RELAY 8080\nGET /index.html HTTP/1.0\r\nHost: x\r\n\r\n")
assert got.startswith(b"OK\nHTTP/1.") and b" 200 " in got.split(b"\r\n")[0] and b"relay-ok" in got, got[:300]
got = relay(b"RELAY 8081\n")
assert got.startswith(b"ERROR refused"), got
got = relay(b"RELAY 99999\n")
assert got.startswith(b"ERROR bad-request"), got
print("relay ok")
PY
	rc=$?
	if [ "$rc" -eq 0 ] && out_is "$name" "relay ok"; then report OK "$name"; else report FAIL "$name" "$(why "$name")"; fi
}
relay_case

# The isolation monitor's probe program on the minimal image (docs/security.md, "Isolation
# monitor"): this VM has no network device and no vsock listener on the host side, so every
# probe holds, each for its own reason, within about one timeout; a bad command line runs nothing.
ex isolation-probe -- /sbin/sandvm-isolation-probe --timeout-ms 300 kvm,blocked,file,/dev/kvm \
	key,blocked,env,svk_ host_vsock,blocked,vsock,2,1 lo_ping,reached,icmp,127.0.0.1 \
	nowhere,blocked,tcp,198.51.100.1,9
if [ "$rc" -eq 0 ] && [ "$(head -1 "$RESULTS/isolation-probe.stdout")" = "sandvm-isolation-report 1" ] &&
	[ "$(tail -1 "$RESULTS/isolation-probe.stdout")" = "end 5" ] &&
	[ "$(awk '$1 == "probe" && $3 == $4' "$RESULTS/isolation-probe.stdout" | wc -l)" -eq 5 ]; then
	report OK isolation-probe
else
	report FAIL isolation-probe "$(why isolation-probe)"
fi
ex isolation-probe-usage -- /sbin/sandvm-isolation-probe a,maybe,env,x
if [ "$rc" -eq 2 ] && [ ! -s "$RESULTS/isolation-probe-usage.stdout" ] && err_has isolation-probe-usage usage; then
	report OK isolation-probe-usage
else
	report FAIL isolation-probe-usage "$(why isolation-probe-usage)"
fi

# SHUTDOWN ends the VM cleanly (the VMM exits 0).
ex agent-shutdown --shutdown
wait "$exec_vm"
vm_rc=$?
exec_vm=
if [ "$rc" -eq 0 ] && [ "$vm_rc" -eq 0 ]; then report OK agent-shutdown; else
	report FAIL agent-shutdown "client exit $rc, vmm exit $vm_rc"; fi

# ---- fresh VMs through sandvm-run ----
ex_fresh() { # ex_fresh NAME sandvm-run args...
	local name=$1
	shift
	timeout -k 5 300 "$RUN" --verbose "$@" >"$RESULTS/$name.stdout" 2>"$RESULTS/$name.stderr" </dev/null
	rc=$?
}
ex_fresh run-minimal --cpus 2 -- sh -c 'echo $(nproc) cpus; exit 7'
if [ "$rc" -eq 7 ] && out_is run-minimal "2 cpus"; then report OK run-minimal; else
	report FAIL run-minimal "$(why run-minimal)"; fi

if [ -f "$DEBIAN_IMAGE" ]; then
	ex_fresh run-debian-python --image "$DEBIAN_IMAGE" --memory 512 -- \
		python3 -c 'import hashlib, sys; print(sum(i * i for i in range(10**5)), hashlib.sha256(b"sandvm").hexdigest()[:12], sys.version_info[0])'
	want="333328333350000 $(printf sandvm | sha256sum | cut -c1-12) 3"
	if [ "$rc" -eq 0 ] && out_is run-debian-python "$want"; then report OK run-debian-python; else
		report FAIL run-debian-python "$(why run-debian-python), expected '$want'"; fi
	# What the image carries of a base system (tests/integration/debian_base.py):
	# /etc/services, zoneinfo, UTF-8, ps, TLS 1.3 and 1.2 on loopback with X25519 and P-256.
	ex_fresh run-debian-base --image "$DEBIAN_IMAGE" --memory 512 -- \
		python3 -B -c "$(cat tests/integration/debian_base.py)"
	want=$(printf '%s\n' 'services 80 80' 'zoneinfo +02:00' 'encoding utf-8 UTF-8' 'ps 1' \
		'TLSv1.3 x25519' 'TLSv1.3 secp256r1' 'TLSv1.2 x25519')
	if [ "$rc" -eq 0 ] && out_is run-debian-base "$want"; then report OK run-debian-base; else
		report FAIL run-debian-base "$(why run-debian-base), expected '$want'"; fi
	# The image is shared: a sandbox's writes go to its in-memory overlay.
	before=$(sha256sum "$DEBIAN_IMAGE" | cut -c1-16)
	ex_fresh run-debian-overlay --image "$DEBIAN_IMAGE" -- \
		sh -c 'echo x >/etc/sandvm-written && rm -f /usr/bin/python3 && cat /etc/sandvm-written && hostname'
	after=$(sha256sum "$DEBIAN_IMAGE" | cut -c1-16)
	if [ "$rc" -eq 0 ] && out_is run-debian-overlay "$(printf 'x\nsandbox')" && [ "$before" = "$after" ]; then
		report OK run-debian-overlay
	else
		report FAIL run-debian-overlay "$(why run-debian-overlay); image $before -> $after"
	fi
	# What the guest kernel offers real workloads (docs/guest.md, "What the kernel supports"): each
	# feature is used, not looked up, and names itself once it worked.
	kernel_features=$(cat <<'PY'
import ctypes, fcntl, mmap, os, signal, socket, struct, subprocess
done = []
signal.signal(signal.SIGIO, signal.SIG_IGN)  # what a directory watch raises
m = mmap.mmap(-1, 4096)
m.madvise(mmap.MADV_DONTNEED)
done.append("madvise")
fd = os.open("/etc/hostname", os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
done.append("fadvise")
d = os.open("/tmp", os.O_RDONLY)
fcntl.fcntl(d, fcntl.F_NOTIFY, fcntl.DN_CREATE)
done.append("dnotify")
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
ring = libc.syscall(425, 4, params)  # io_uring_setup
assert ring >= 0, os.strerror(ctypes.get_errno())
done.append("io_uring")
subprocess.run(["unshare", "--user", "--map-root-user", "--pid", "--fork", "--net", "--uts",
                "--ipc", "--mount", "sh", "-c", "hostname ns && [ $(id -u) = 0 ]"], check=True)
done.append("namespaces")
cg = subprocess.run(["unshare", "--mount", "sh", "-c",
                     "mount -t cgroup2 none /sys/fs/cgroup && cat /sys/fs/cgroup/cgroup.controllers"],
                    check=True, capture_output=True, text=True).stdout.split()
assert {"cpu", "cpuset", "io", "memory", "pids"} <= set(cg), cg
done.append("cgroup2")
alg = socket.socket(socket.AF_ALG, socket.SOCK_SEQPACKET)
alg.bind(("hash", "sha256"))
op, _ = alg.accept()
op.sendall(b"sandvm")
done.append("af_alg:" + op.recv(32).hex()[:12])
tun = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(tun, 0x400454ca, struct.pack("16sH", b"sandvm-tap", 0x0002 | 0x1000))  # TUNSETIFF, IFF_TAP|IFF_NO_PI
done.append("tun")
# An allow-everything seccomp filter, after no_new_privs as an unprivileged process would.
assert libc.prctl(38, 1, 0, 0, 0) == 0  # PR_SET_NO_NEW_PRIVS
allow = ctypes.create_string_buffer(struct.pack("HBBI", 0x06, 0, 0, 0x7fff0000))  # ret ALLOW
prog = struct.pack("HxxxxxxQ", 1, ctypes.addressof(allow))
assert libc.syscall(317, 1, 0, ctypes.c_char_p(prog)) == 0, os.strerror(ctypes.get_errno())  # seccomp
assert "Seccomp:\t2" in open("/proc/self/status").read()
done.append("seccomp")
print(" ".join(done))
PY
)
	ex_fresh run-debian-kernel-features --image "$DEBIAN_IMAGE" --memory 512 -- python3 -c "$kernel_features"
	want="madvise fadvise dnotify io_uring namespaces cgroup2 af_alg:$(printf sandvm | sha256sum | cut -c1-12) tun seccomp"
	if [ "$rc" -eq 0 ] && out_is run-debian-kernel-features "$want"; then report OK run-debian-kernel-features; else
		report FAIL run-debian-kernel-features "$(why run-debian-kernel-features), expected '$want'"; fi
else
	report FAIL run-debian-python "$DEBIAN_IMAGE missing (make debian-image)"
fi

rm -rf "$exec_dir"
