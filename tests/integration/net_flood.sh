# The VMM's main thread under a guest flood, sourced by
# tests/integration/net_firewall.sh while its Debian sandbox runs (the
# control socket $fw_dir/control, peers A and B). The guest sends UDP as fast
# as it can to peer A, which the policy allows; the policy is then switched
# to block through the control socket. Each virtqueue is served with a
# budget per turn, so the switch must answer within 1 s, and once it has
# answered no frame may pass the firewall (its counters), while the flood
# goes on being dropped as blocked.

flood_bin=$BUILD/guest-tests/tests/bin/udp-flood
policy "$fw_dir/flood-allow.json" 10.77.0.4 "\"mode\": \"allowlist\", \"allow\": [\"198.51.100.0/24\"], $HOSTS"
ctl "{\"op\":\"net-policy\",\"path\":\"$fw_dir/flood-allow.json\"}" >"$RESULTS/net-flood-allow.reply"
policy "$fw_dir/flood-block.json" 10.77.0.4 "\"mode\": \"block\", $HOSTS"
if ! timeout 60 "$RUN" --attach "$fw_dir/vsock" --put "$flood_bin" /tmp/udp-flood \
	>"$RESULTS/net-flood-put.out" 2>&1 ||
	! timeout 60 "$RUN" --attach "$fw_dir/vsock" --no-stdin -- chmod 755 /tmp/udp-flood \
	>>"$RESULTS/net-flood-put.out" 2>&1; then
	report FAIL net-flood-block-switch "could not copy the flooder: $(tail -2 "$RESULTS/net-flood-put.out")"
else
	timeout -k 5 90 "$RUN" --attach "$fw_dir/vsock" --no-stdin -- /tmp/udp-flood 198.51.100.7 9 25 \
		>"$RESULTS/net-flood.stdout" 2>"$RESULTS/net-flood.stderr" &
	flood_pid=$!
	# Switches once the flood is passing, then watches the counters for 2 s.
	python3 - "$fw_dir/control" "$fw_dir/flood-block.json" >"$RESULTS/net-flood-switch.out" 2>&1 <<'PY'
import json, socket, sys, time
path, block = sys.argv[1], sys.argv[2]
def call(req):
    s = socket.socket(socket.AF_UNIX); s.settimeout(30); s.connect(path)
    t = time.monotonic(); s.sendall((json.dumps(req) + "\n").encode())
    line = s.makefile().readline(); s.close()
    return json.loads(line), time.monotonic() - t
def counters():
    return call({"op": "net"})[0]["net"]["counters"]
c0 = counters(); deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    time.sleep(0.5); c = counters()
    if c["pass_allowlist"] - c0["pass_allowlist"] > 200:
        break
else:
    moved = {k: c[k] - c0[k] for k in c if isinstance(c[k], int) and c[k] != c0[k]}
    print("FAIL the flood never got going: pass_allowlist", c0["pass_allowlist"], "->", c["pass_allowlist"],
          "; counters that moved:", moved); sys.exit(1)
reply, took = call({"op": "net-policy", "path": block})
after = counters(); time.sleep(2); later = counters()
passes = {k: later[k] - after[k] for k in later if k.startswith("pass_")}
print(f"switch answered in {took * 1000:.0f} ms: {json.dumps(reply)}")
print("passes after the switch:", passes, "drop_blocked +", later["drop_blocked"] - after["drop_blocked"])
ok = reply.get("ok") is True and took < 1.0 and later["pass_allowlist"] == after["pass_allowlist"] \
    and later["pass_open"] == after["pass_open"] and later["drop_blocked"] - after["drop_blocked"] > 100
print("PASS" if ok else "FAIL")
sys.exit(0 if ok else 1)
PY
	switch_rc=$?
	wait "$flood_pid"
	if [ "$switch_rc" -eq 0 ] && grep -q '^sent [0-9]' "$RESULTS/net-flood.stdout"; then
		report OK net-flood-block-switch
	else
		report FAIL net-flood-block-switch "$(tr '\n' ';' <"$RESULTS/net-flood-switch.out"); flooder: $(cat "$RESULTS/net-flood.stdout" "$RESULTS/net-flood.stderr" | tr '\n' ';' | head -c 300); allow reply: $(head -c 200 "$RESULTS/net-flood-allow.reply")"
	fi
fi
