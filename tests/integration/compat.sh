# The compatibility suite, sourced by tests/integration/run (its helpers:
# report, RESULTS, VMM, RUN...); SANDVM_ONLY=compat runs it alone. Test
# suites that were not written here run inside one Debian sandbox:
# CPython's own regression tests, one case per module, and runc starting a
# container. Their files come on a second, read-only drive
# (rootfs/build-compat.sh, `make compat-drive`), so the Debian image every
# sandbox boots stays as it is. docs/testing.md, "Compatibility suite".

COMPAT_DRIVE=$BUILD/guest/compat.ext4
# CPython's modules. The default set (signals, threads, sockets, mmap, ssl, fcntl) fits the
# suite's budget in the emulated L1 (about five minutes; docs/testing.md, "Compatibility
# suite"); subprocess, asyncio and multiprocessing take 4 to 9 minutes each there and run with
# SANDVM_COMPAT_MODULES=all, which runs every module below, or a list of its own.
COMPAT_MODULES_DEFAULT="test_signal test_threading test_socket test_mmap test_ssl test_fcntl"
COMPAT_MODULES_ALL="$COMPAT_MODULES_DEFAULT test_subprocess test_asyncio test_multiprocessing_fork test_select test_resource
	test_pty test_fileio test_time test_posix test_os test_zlib test_hashlib test_tempfile test_shutil
	test_selectors test_io"
case ${SANDVM_COMPAT_MODULES:-} in
'') COMPAT_MODULES=$COMPAT_MODULES_DEFAULT ;;
all) COMPAT_MODULES=$COMPAT_MODULES_ALL ;;
*) COMPAT_MODULES=$SANDVM_COMPAT_MODULES ;;
esac
# Each module's limit in seconds (regrtest's own --timeout is per test, below it).
COMPAT_MODULE_LIMIT=${SANDVM_COMPAT_MODULE_LIMIT:-600}

compat_dir=$(mktemp -d "${TMPDIR:-/tmp}/sandvm-compat.XXXXXX")
COMPAT_SOCK=$compat_dir/vsock

# cx NAME LIMIT CMD: runs sh -c CMD in the compat VM; NAME.stdout / NAME.stderr, $rc.
cx() {
	local name=$1 limit=$2
	shift 2
	if [ -n "${compat_vm:-}" ] && ! kill -0 "$compat_vm" 2>/dev/null; then
		echo "the compat VM is gone: $(tail -2 "$RESULTS/compat-vm.err" | tr '\n' ' ')" \
			>"$RESULTS/$name.stderr"
		: >"$RESULTS/$name.stdout"
		rc=125
		return
	fi
	timeout -k 5 $((limit + 30)) "$RUN" --attach "$COMPAT_SOCK" --timeout "$limit" -- sh -c "$1" \
		>"$RESULTS/$name.stdout" 2>"$RESULTS/$name.stderr" </dev/null
	rc=$?
}
cwhy() { echo "exit $rc, stdout '$(tail -c 300 "$RESULTS/$1.stdout")', stderr '$(tail -c 300 "$RESULTS/$1.stderr")'"; }

compat_cases() {
	local m name t0 summary failing ran result
	if [ ! -f "$DEBIAN_IMAGE" ] || [ ! -f "$COMPAT_DRIVE" ]; then
		report FAIL compat-drive "$DEBIAN_IMAGE or $COMPAT_DRIVE missing (make debian-image compat-drive)"
		return
	fi
	# The Debian image as root under an in-memory overlay, as sandvm-run boots it
	# (lib/sandbox_vm.c), with the compat drive beside it.
	"$VMM" --kernel "$VMLINUX" --cpus 2 --memory 1536 \
		--drive "$DEBIAN_IMAGE,ro,serial=rootfs" --drive "$COMPAT_DRIVE,ro,serial=compat" \
		--vsock "$COMPAT_SOCK" --control "$compat_dir/control" \
		--cmdline "quiet root=/dev/vda ro rootfstype=ext4 sandvm.overlay=1" \
		>"$RESULTS/compat-vm.out" 2>"$RESULTS/compat-vm.err" &
	compat_vm=$!
	timeout -k 5 150 "$RUN" --attach "$COMPAT_SOCK" --ready-timeout 120 --ping \
		>"$RESULTS/compat-ready.stdout" 2>"$RESULTS/compat-ready.stderr" </dev/null
	rc=$?
	if [ "$rc" -ne 0 ]; then
		report FAIL compat-drive "the compat VM did not come up: $(cwhy compat-ready)"
		kill "$compat_vm" 2>/dev/null
		wait "$compat_vm" 2>/dev/null
		return
	fi

	# The drive, found by its serial and mounted read-only; its CPython tests must be the
	# guest's python's, and cgroup v2 must be where runc looks for it. The test package goes
	# over the stdlib's stub (PYTHONPATH would not do: the tests start child interpreters
	# with -I, which ignores it, and those import test modules too).
	# shellcheck disable=SC2016 # expanded in the guest
	cx compat-drive 60 '
		for d in /sys/block/vd*; do [ "$(cat $d/serial 2>/dev/null)" = compat ] && dev=/dev/${d##*/}; done
		[ -n "$dev" ] || { echo "no drive with serial compat" >&2; exit 1; }
		mkdir -p /mnt/compat && mount -o ro "$dev" /mnt/compat || exit 1
		mountpoint -q /sys/fs/cgroup || mount -t cgroup2 none /sys/fs/cgroup || exit 1
		mount --bind /mnt/compat/python/test /usr/lib/python3.11/test || exit 1
		want=$(awk "\$1 == \"libpython3.11-stdlib\" { print \$2 }" /mnt/compat/VERSIONS)
		have=$(dpkg-query -W -f "\${Version}" libpython3.11-stdlib)
		[ "$want" = "$have" ] || { echo "tests for $want, guest python $have" >&2; exit 1; }
		echo "$dev python3.11 $have"'
	if [ "$rc" -eq 0 ] && grep -q '^/dev/vd. python3.11 ' "$RESULTS/compat-drive.stdout"; then
		report OK compat-drive "($(cat "$RESULTS/compat-drive.stdout"))"
	else
		report FAIL compat-drive "$(cwhy compat-drive)"
	fi

	# CPython's regression tests, one module per exec: regrtest in verbose mode (each
	# test's name and result in NAME.stdout), with a per-test timeout. The summary line of
	# unittest is the case's note.
	for m in $COMPAT_MODULES; do
		name=compat-cpython-$m
		t0=$SECONDS
		cx "$name" "$COMPAT_MODULE_LIMIT" \
			"cd /tmp && exec python3 -m test -v --timeout $((COMPAT_MODULE_LIMIT - 30)) $m"
		summary=$(grep -E '^(OK|FAILED)( \(|$)' "$RESULTS/$name.stdout" | tail -1)
		ran=$(grep -oE '^Ran [0-9]+ tests?' "$RESULTS/$name.stdout" | tail -1 | cut -d' ' -f2)
		result=$(sed -n 's/^== Tests result: \(.*\) ==$/\1/p' "$RESULTS/$name.stdout" | tail -1)
		# ENV CHANGED (a test left a thread, a process or a file behind) exits 0 in regrtest
		# without --fail-env-changed; the note says so.
		if [ "$rc" -eq 0 ] && { [ "$result" = SUCCESS ] || [ "$result" = "ENV CHANGED" ]; }; then
			[ "$result" = SUCCESS ] && result="" || result=", $result"
			report OK "$name" "(ran ${ran:-?}, ${summary:-no summary}$result; $((SECONDS - t0)) s)"
		else
			failing=$(grep -E '^(FAIL|ERROR): ' "$RESULTS/$name.stdout" | sed 's/^\(FAIL\|ERROR\): //' |
				sort -u | head -8 | tr '\n' ';')
			report FAIL "$name" "exit $rc after $((SECONDS - t0)) s; ${summary:-no summary}; ${failing:-$(
				grep -E '^== Tests result|timed out|Timeout' "$RESULTS/$name.stdout" | tail -2 | tr '\n' ' ')}"
		fi
	done

	# runc from Debian starts a busybox container (the drive's OCI bundle, copied to /tmp):
	# PID 1 in its own PID namespace, its own host name, root inside, the bundle's seccomp
	# filter refusing chdir, and its exit status 7 back through runc; the guest's host name
	# stays, and nothing is left running.
	# shellcheck disable=SC2016 # expanded in the guest
	cx compat-runc 180 '
		rm -rf /tmp/ctr && cp -a /mnt/compat/container /tmp/ctr && cd /tmp/ctr || exit 1
		/mnt/compat/runc/runc run compat-ctr </dev/null
		echo "runc-status=$?"
		echo "guest-host=$(hostname)"
		echo "left=$(/mnt/compat/runc/runc list -q | wc -l)"'
	want=$(printf '%s\n' 'pid=1 host=sandvm-ctr uid=0' chdir-denied runc-status=7 guest-host=sandbox left=0)
	if [ "$rc" -eq 0 ] && [ "$(cat "$RESULTS/compat-runc.stdout")" = "$want" ]; then
		report OK compat-runc
	else
		report FAIL compat-runc "$(cwhy compat-runc), expected '$(tr '\n' ' ' <<<"$want")'"
	fi

	timeout -k 5 60 "$RUN" --attach "$COMPAT_SOCK" --shutdown >/dev/null 2>&1 </dev/null
	if ! timeout 60 tail --pid="$compat_vm" -f /dev/null; then
		kill "$compat_vm" 2>/dev/null
	fi
	wait "$compat_vm" 2>/dev/null
}
compat_cases
rm -rf "$compat_dir"
