# The guest console's sinks, sourced by tests/integration/run (its helpers:
# vm, report, RESULTS, VMM...); SANDVM_ONLY=console runs it alone.

# The console can go to a file, or to a listening unix socket the VMM connects to.
vm console-file --kernel "$BZIMAGE" --initrd "$INITRD" --console "$RESULTS/console-file.log" \
	--cmdline "sandvm.expect_cpus=1 sandvm.expect_mem_mib=128"
if [ "$rc" -eq 0 ] && grep -q "sandvm-init: check ok" "$RESULTS/console-file.log" &&
	! grep -q "sandvm-init" "$RESULTS/console-file.out"; then
	report OK console-file
else
	report FAIL console-file "exit $rc, or the console did not land in the file alone"
fi

console_socket_case() {
	local name=console-socket sock
	sock=$(mktemp -u "${TMPDIR:-/tmp}/sandvm-console.XXXXXX")
	/usr/bin/python3 - "$sock" >"$RESULTS/$name.captured" 2>&1 <<'PY' &
import socket, sys
srv = socket.socket(socket.AF_UNIX)
srv.bind(sys.argv[1]); srv.listen(1)
conn, _ = srv.accept()
data = b""
while chunk := conn.recv(65536):
    data += chunk
sys.stdout.buffer.write(data)
PY
	local lpid=$!
	for _ in $(seq 1 100); do [ -S "$sock" ] && break; sleep 0.1; done
	vm "$name" --kernel "$VMLINUX" --initrd "$INITRD" --console "$sock"
	wait "$lpid"
	rm -f "$sock"
	if [ "$rc" -eq 0 ] && grep -q "sandvm-init: rebooting" "$RESULTS/$name.captured"; then
		report OK "$name"
	else
		report FAIL "$name" "exit $rc; listener got: $(tail -c 200 "$RESULTS/$name.captured")"
	fi
}
console_socket_case

# A guest printing about 128 KiB to a console file capped at 32 KiB: the file
# and its rotated predecessor hold at most the cap, and it is the newest output.
console_cap_case() {
	local name=console-cap cap=32768 log=$RESULTS/console-cap.log
	local total first last
	rm -f "$log" "$log.1"
	vm "$name" --kernel "$VMLINUX" --initrd "$TEST_INITRD" --console "$log" \
		--console-max-bytes "$cap" --cmdline "sandvm.run=/tests/console-flood.sh"
	total=$(( $(stat -c %s "$log" 2>/dev/null || echo 0) + $(stat -c %s "$log.1" 2>/dev/null || echo 0) ))
	first=$(cat "$log.1" "$log" 2>/dev/null | grep -m1 -o 'FLOOD [0-9]*' | cut -d' ' -f2)
	last=$(cat "$log.1" "$log" 2>/dev/null | grep -o 'FLOOD [0-9]*' | tail -1 | cut -d' ' -f2)
	if [ "$rc" -ne 0 ]; then
		report FAIL "$name" "exit status $rc, expected 0"
	elif [ ! -s "$log.1" ]; then
		report FAIL "$name" "no $log.1: the console was not rotated ($total bytes)"
	elif [ "$total" -gt $((cap + 64)) ]; then
		report FAIL "$name" "console.log and console.log.1 hold $total bytes, more than the cap $cap"
	elif ! cat "$log.1" "$log" | grep -q "FLOOD-END" ||
		! cat "$log.1" "$log" | grep -q "sandvm-init: run status=0"; then
		report FAIL "$name" "the newest output is missing: $(tail -c 200 "$log")"
	elif [ "$last" != 001999 ] || [ -z "$first" ] || [ "$first" = 000000 ]; then
		report FAIL "$name" "kept lines $first..$last, expected the last ones up to 001999"
	elif [ "$total" -lt $((cap / 2)) ]; then
		report FAIL "$name" "only $total bytes kept, less than half the cap"
	else
		report OK "$name"
	fi
}
console_cap_case
