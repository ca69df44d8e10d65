# virtio-net cases, sourced by tests/integration/run (its helpers: report,
# RESULTS, RUN, VMM...). A tap made here in the L1 (no other network exists
# there) is the host end; the guest runs the agent, configured with busybox's
# ip, and talks to a peer listening on the tap's address.

net_dir=$(mktemp -d "${TMPDIR:-/tmp}/sandvm-net.XXXXXX")
NET_SOCK=$net_dir/vsock
NET_TAP=svtest0
nx() { # nx NAME CMD...: exec in the net VM; output in NAME.stdout/.stderr, status in $rc
	local name=$1
	shift
	timeout -k 5 60 "$RUN" --attach "$NET_SOCK" --no-stdin -- "$@" \
		>"$RESULTS/$name.stdout" 2>"$RESULTS/$name.stderr"
	rc=$?
}

# The test network is private (10.77.0.0/24, fd77::/64), which the firewall
# closes unless the policy opens it, as an operator's --allow-private-egress
# would; PRIVATE is what policy() opens.
LAB_PRIVATE='"10.77.0.0/24", "fd77::/64"'
PRIVATE=$LAB_PRIVATE
# policy FILE GUEST_IP EXTRA_JSON: an egress policy for a guest on the test tap.
policy() {
	cat >"$1" <<JSON
{"ip": "$2", "gateway": "10.77.0.1", "gateway_mac": "$tap_mac",
 "ip6": "fd77::${2##*.}", "gateway6": "fd77::1", "allow_private": [$PRIVATE], $3}
JSON
}

ip tuntap del dev "$NET_TAP" mode tap 2>/dev/null
if ! ip tuntap add dev "$NET_TAP" mode tap || ! ip addr add 10.77.0.1/24 dev "$NET_TAP" ||
	! ip link set "$NET_TAP" up; then
	report FAIL net-tap-setup "cannot make tap $NET_TAP in the L1"
else
	tap_mac=$(cat "/sys/class/net/$NET_TAP/address")
	# The device's own cases: open policy, the tap's address as gateway.
	policy "$net_dir/open.json" 10.77.0.2 '"mode": "open"'
	"$VMM" --kernel "$VMLINUX" --initrd "$AGENT_INITRD" --cpus 1 --memory 256 \
		--vsock "$NET_SOCK" --net "tap=$NET_TAP,mac=02:53:56:00:00:02" --net-policy "$net_dir/open.json" \
		--cmdline quiet >"$RESULTS/net-vm.out" 2>"$RESULTS/net-vm.err" &
	net_vm=$!

	nx net-guest-config sh -c 'ip link set eth0 up && ip addr add 10.77.0.2/24 dev eth0 && cat /sys/class/net/eth0/address'
	if [ "$rc" -eq 0 ] && grep -q '^02:53:56:00:00:02$' "$RESULTS/net-guest-config.stdout"; then
		report OK net-guest-config
	else
		report FAIL net-guest-config "exit $rc: $(head -c 300 "$RESULTS/net-guest-config.stderr")"
	fi

	nx net-ping ping -c 3 -W 3 10.77.0.1
	if [ "$rc" -eq 0 ] && grep -q '3 packets received' "$RESULTS/net-ping.stdout"; then
		report OK net-ping
	else
		report FAIL net-ping "exit $rc: $(tail -c 300 "$RESULTS/net-ping.stdout") $(head -c 200 "$RESULTS/net-ping.stderr")"
	fi

	# 4 MB from the host peer to the guest and 4 MB back, each checksummed on both ends.
	head -c 4000000 /dev/urandom >"$net_dir/blob"
	want=$(sha256sum <"$net_dir/blob" | cut -d' ' -f1)
	python3 - "$net_dir/blob" >"$net_dir/peer.out" 2>&1 <<'PY' &
import hashlib, socket, sys
data = open(sys.argv[1], "rb").read()
srv = socket.socket(); srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
srv.bind(("10.77.0.1", 8077)); srv.listen(2); srv.settimeout(60)
print("listening", flush=True)
c, _ = srv.accept(); c.sendall(data); c.close()          # host -> guest
c, _ = srv.accept(); got = b""
while len(got) < len(data):                             # guest -> host; busybox nc may
    b = c.recv(65536)                                   # not half-close, so stop at the size
    if not b: break
    got += b
c.close()
print(hashlib.sha256(got).hexdigest(), len(got))
PY
	peer=$!
	for _ in $(seq 1 150); do grep -q listening "$net_dir/peer.out" && break; sleep 0.2; done
	nx net-tcp-in sh -c 'nc 10.77.0.1 8077 | sha256sum'
	nx net-tcp-out sh -c 'head -c 4000000 /dev/urandom > /tmp/b; sha256sum < /tmp/b; nc 10.77.0.1 8077 < /tmp/b'
	wait "$peer"
	if grep -q "^$want" "$RESULTS/net-tcp-in.stdout"; then
		report OK net-tcp-host-to-guest
	else
		report FAIL net-tcp-host-to-guest "guest got $(head -c 80 "$RESULTS/net-tcp-in.stdout"), want $want"
	fi
	sent=$(head -n1 "$RESULTS/net-tcp-out.stdout" | cut -d' ' -f1)
	if [ -n "$sent" ] && grep -q "^$sent 4000000$" "$net_dir/peer.out"; then
		report OK net-tcp-guest-to-host
	else
		report FAIL net-tcp-guest-to-host "guest sent $sent, peer got $(head -c 100 "$net_dir/peer.out")"
	fi

	timeout 30 "$RUN" --attach "$NET_SOCK" --shutdown >/dev/null 2>&1
	wait "$net_vm"

	# The agent configures eth0 itself from sandvm.net= / sandvm.dns= on the command line.
	NET_SOCK=$net_dir/vsock2
	policy "$net_dir/open3.json" 10.77.0.3 '"mode": "open"'
	"$VMM" --kernel "$VMLINUX" --initrd "$AGENT_INITRD" --cpus 1 --memory 256 \
		--vsock "$NET_SOCK" --net "tap=$NET_TAP,mac=02:53:56:00:00:03" --net-policy "$net_dir/open3.json" \
		--cmdline "quiet sandvm.net=10.77.0.3/24,10.77.0.1 sandvm.dns=10.77.0.1" \
		>"$RESULTS/net-vm2.out" 2>"$RESULTS/net-vm2.err" &
	net_vm=$!
	nx net-agent-config sh -c 'ip -4 addr show dev eth0; ip route; cat /etc/resolv.conf; ping -c 2 -W 3 10.77.0.1'
	if [ "$rc" -eq 0 ] && grep -q 'inet 10.77.0.3/24' "$RESULTS/net-agent-config.stdout" &&
		grep -q 'default via 10.77.0.1 dev eth0' "$RESULTS/net-agent-config.stdout" &&
		grep -q 'nameserver 10.77.0.1' "$RESULTS/net-agent-config.stdout" &&
		grep -q '2 packets received' "$RESULTS/net-agent-config.stdout"; then
		report OK net-agent-config
	else
		report FAIL net-agent-config "exit $rc: $(head -c 400 "$RESULTS/net-agent-config.stdout")"
	fi
	timeout 30 "$RUN" --attach "$NET_SOCK" --shutdown >/dev/null 2>&1
	wait "$net_vm"

	. tests/integration/net_firewall.sh
fi
ip tuntap del dev "$NET_TAP" mode tap 2>/dev/null
rm -rf "$net_dir"
