# The egress firewall on real frames, sourced by tests/integration/net.sh
# (the tap $NET_TAP is up, 10.77.0.1/24 and fd77::1/64 on the L1 side). Two
# peers live in network namespaces made here, routed through the L1:
#   svpeerA 198.51.100.7, 2001:db8:a::7    svpeerB 203.0.113.7, 2001:db8:b::7
#   svpeerC 172.30.0.7, fd30::7 (a private network of the worker's)
# each with a TCP echo on 8080 and a UDP echo on 8081. A Debian sandbox
# (python3) probes them (tests/integration/net_probe.py) while the policy is
# changed at run time through the VMM's control socket.

fw_dir=$net_dir/fw
mkdir -p "$fw_dir"
peer_ok=1
fw_cleanup() {
	for p in A B C; do
		[ -n "${peer_pid[$p]:-}" ] && kill "${peer_pid[$p]}" 2>/dev/null
		ip netns del "svpeer$p" 2>/dev/null
		ip link del "sv$p-h" 2>/dev/null
	done
}
declare -A peer_pid
ip addr add fd77::1/64 dev "$NET_TAP" nodad || peer_ok=0
sysctl -qw net.ipv4.ip_forward=1 net.ipv6.conf.all.forwarding=1 || peer_ok=0
for p in A B C; do
	case $p in
	A) v4=198.51.100 v6=2001:db8:a ;;
	B) v4=203.0.113 v6=2001:db8:b ;;
	C) v4=172.30.0 v6=fd30:0:0 ;;
	esac
	ip netns add "svpeer$p" &&
		ip link add "sv$p-h" type veth peer name "sv$p-p" &&
		ip link set "sv$p-p" netns "svpeer$p" &&
		ip addr add "$v4.1/24" dev "sv$p-h" && ip addr add "$v6::1/64" dev "sv$p-h" nodad &&
		ip link set "sv$p-h" up &&
		ip -n "svpeer$p" addr add "$v4.7/24" dev "sv$p-p" &&
		ip -n "svpeer$p" addr add "$v6::7/64" dev "sv$p-p" nodad &&
		ip -n "svpeer$p" link set "sv$p-p" up && ip -n "svpeer$p" link set lo up &&
		ip -n "svpeer$p" route add default via "$v4.1" &&
		ip -n "svpeer$p" -6 route add default via "$v6::1" || peer_ok=0
	ip netns exec "svpeer$p" python3 - >"$RESULTS/net-peer$p.log" 2>&1 <<'PY' &
import socket, threading
t = socket.socket(socket.AF_INET6); t.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); t.bind(("::", 8080)); t.listen(16)
u = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM); u.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
u.bind(("::", 8081))
def udp():
    while True:
        d, a = u.recvfrom(64); u.sendto(d, a)
threading.Thread(target=udp, daemon=True).start()
print("listening", flush=True)
while True:
    c, _ = t.accept(); c.settimeout(5)
    try: c.sendall(c.recv(64))
    except OSError: pass
    c.close()
PY
	peer_pid[$p]=$!
done
for p in A B C; do
	for _ in $(seq 1 150); do grep -q listening "$RESULTS/net-peer$p.log" && break; sleep 0.2; done
done

# ctl JSON: one request to the VMM's control socket; the reply on stdout.
ctl() {
	python3 - "$fw_dir/control" "$1" <<'PY'
import socket, sys
s = socket.socket(socket.AF_UNIX); s.settimeout(10); s.connect(sys.argv[1])
s.sendall(sys.argv[2].encode() + b"\n"); print(s.makefile().readline().strip())
PY
}
# probe NAME [--src A] KIND:ADDR...: runs the probe in the guest; results in NAME.stdout.
probe() {
	local name=$1
	shift
	timeout -k 5 120 "$RUN" --attach "$fw_dir/vsock" --no-stdin -- python3 /tmp/net_probe.py "$@" \
		>"$RESULTS/$name.stdout" 2>"$RESULTS/$name.stderr"
}
# expect NAME "kind addr ok|fail"...: every line must be there.
expect() {
	local name=$1 line missing=""
	shift
	for line in "$@"; do grep -qx "$line" "$RESULTS/$name.stdout" || missing="$missing [$line]"; done
	if [ -z "$missing" ]; then report OK "$name"; else
		report FAIL "$name" "missing$missing; got: $(tr '\n' ';' <"$RESULTS/$name.stdout" | head -c 400)"
	fi
}
counter() { # counter NAME: the firewall counter's value now
	ctl '{"op":"net"}' | python3 -c "import json,sys; print(json.load(sys.stdin)['net']['counters']['$1'])"
}

HOSTS='"deny_host": ["10.77.0.1/32", "198.51.100.1/32", "203.0.113.1/32", "fd77::1/128", "2001:db8:a::1/128", "2001:db8:b::1/128"]'
ALL_A="tcp:198.51.100.7 udp:198.51.100.7 icmp:198.51.100.7 tcp:2001:db8:a::7 udp:2001:db8:a::7 icmp:2001:db8:a::7"
ALL_B="tcp:203.0.113.7 udp:203.0.113.7 icmp:203.0.113.7 tcp:2001:db8:b::7 icmp:2001:db8:b::7"

if [ $peer_ok = 0 ] || [ ! -e "$DEBIAN_IMAGE" ]; then
	report FAIL net-firewall-setup "peers or the Debian image missing (peer_ok=$peer_ok)"
else
	policy "$fw_dir/allow-a.json" 10.77.0.4 "\"mode\": \"allowlist\", \"allow\": [\"198.51.100.0/24\", \"2001:db8:a::/48\"], $HOSTS"
	"$VMM" --kernel "$VMLINUX" --drive "$DEBIAN_IMAGE,ro,serial=rootfs" --cpus 1 --memory 512 \
		--vsock "$fw_dir/vsock" --control "$fw_dir/control" \
		--net "tap=$NET_TAP,mac=02:53:56:00:00:04" --net-policy "$fw_dir/allow-a.json" \
		--cmdline "quiet root=/dev/vda ro rootfstype=ext4 sandvm.overlay=1 sandvm.net=10.77.0.4/24,10.77.0.1 sandvm.net6=fd77::4/64,fd77::1" \
		>"$RESULTS/net-fw-vm.out" 2>"$RESULTS/net-fw-vm.err" &
	fw_vm=$!
	timeout 120 "$RUN" --attach "$fw_dir/vsock" --ready-timeout 90 --put tests/integration/net_probe.py \
		/tmp/net_probe.py >"$RESULTS/net-fw-put.out" 2>&1 || report FAIL net-fw-boot "$(tail -3 "$RESULTS/net-fw-put.out")"
	sleep 2 # IPv6 neighbour discovery settles

	# Allowlist: peer A on every protocol and family; B, the host's own addresses: nothing.
	probe net-fw-allowlist $ALL_A $ALL_B tcp:10.77.0.1 tcp:198.51.100.1 icmp:fd77::1
	expect net-fw-allowlist "tcp 198.51.100.7 ok" "udp 198.51.100.7 ok" "icmp 198.51.100.7 ok" \
		"tcp 2001:db8:a::7 ok" "udp 2001:db8:a::7 ok" "icmp 2001:db8:a::7 ok" \
		"tcp 203.0.113.7 fail" "udp 203.0.113.7 fail" "icmp 203.0.113.7 fail" \
		"tcp 2001:db8:b::7 fail" "icmp 2001:db8:b::7 fail" \
		"tcp 10.77.0.1 fail" "tcp 198.51.100.1 fail" "icmp fd77::1 fail"

	# Counters saw it: passes, refusals and the host hits, each non-zero.
	n_pass=$(counter pass_allowlist) n_not=$(counter drop_not_allowed) n_host=$(counter drop_host)
	if [ "${n_pass:-0}" -gt 0 ] && [ "${n_not:-0}" -gt 0 ] && [ "${n_host:-0}" -gt 0 ]; then
		report OK net-fw-counters
	else
		report FAIL net-fw-counters "pass_allowlist=$n_pass drop_not_allowed=$n_not drop_host=$n_host"
	fi

	# Counters count frames exactly: 25 datagrams to a denied peer are 25 drop_not_allowed,
	# 25 to an allowed one 25 pass_allowlist (the guest is otherwise quiet towards those).
	n0=$(counter drop_not_allowed) p0=$(counter pass_allowlist)
	probe net-fw-count udpsend:203.0.113.7 udpsend:198.51.100.7
	sleep 1
	n1=$(counter drop_not_allowed) p1=$(counter pass_allowlist)
	if [ $((n1 - n0)) -eq 25 ] && [ $((p1 - p0)) -eq 25 ]; then
		report OK net-fw-counters-exact
	else
		report FAIL net-fw-counters-exact "drop_not_allowed +$((n1 - n0)), pass_allowlist +$((p1 - p0)); 25 each sent"
	fi

	# A source address that is not the sandbox's is dropped as spoofed.
	before=$(counter drop_spoof_ip)
	# A second address on eth0 (an alias, SIOCSIFADDR on eth0:1) to send from.
	timeout 60 "$RUN" --attach "$fw_dir/vsock" --no-stdin -- python3 -c '
import fcntl, socket, struct
ifr = struct.pack("16sH2s4s8s", b"eth0:1", socket.AF_INET, b"\0\0", socket.inet_aton("10.77.0.99"), bytes(8))
fcntl.ioctl(socket.socket(), 0x8916, ifr)' >"$RESULTS/net-fw-spoof-setup.out" 2>&1
	probe net-fw-spoof --src 10.77.0.99 tcp:198.51.100.7 udp:198.51.100.7
	after=$(counter drop_spoof_ip)
	if grep -qx "tcp 198.51.100.7 fail" "$RESULTS/net-fw-spoof.stdout" &&
		grep -qx "udp 198.51.100.7 fail" "$RESULTS/net-fw-spoof.stdout" && [ "${after:-0}" -gt "${before:-0}" ]; then
		report OK net-fw-spoof
	else
		report FAIL net-fw-spoof "$(tr '\n' ';' <"$RESULTS/net-fw-spoof.stdout"), drop_spoof_ip $before -> $after"
	fi

	# Run time: block_network; nothing gets out, exec still works.
	policy "$fw_dir/block.json" 10.77.0.4 "\"mode\": \"block\", $HOSTS"
	reply=$(ctl "{\"op\":\"net-policy\",\"path\":\"$fw_dir/block.json\"}")
	probe net-fw-block $ALL_A tcp:203.0.113.7
	if echo "$reply" | grep -q '"ok":true'; then
		expect net-fw-block "tcp 198.51.100.7 fail" "udp 198.51.100.7 fail" "icmp 198.51.100.7 fail" \
			"tcp 2001:db8:a::7 fail" "udp 2001:db8:a::7 fail" "icmp 2001:db8:a::7 fail" "tcp 203.0.113.7 fail"
	else
		report FAIL net-fw-block "policy change refused: $reply"
	fi

	# Everything allowed (0.0.0.0/0, ::/0): both peers, but never the host's own addresses.
	policy "$fw_dir/all.json" 10.77.0.4 "\"mode\": \"allowlist\", \"allow\": [\"0.0.0.0/0\", \"::/0\"], $HOSTS"
	ctl "{\"op\":\"net-policy\",\"path\":\"$fw_dir/all.json\"}" >/dev/null
	# Nor a private network the allowlist holds without naming it.
	probe net-fw-allow-all tcp:198.51.100.7 tcp:203.0.113.7 tcp:2001:db8:b::7 tcp:10.77.0.1 tcp:198.51.100.1 \
		tcp:2001:db8:a::1 icmp:169.254.169.254 tcp:172.30.0.7 tcp:fd30::7
	expect net-fw-allow-all "tcp 198.51.100.7 ok" "tcp 203.0.113.7 ok" "tcp 2001:db8:b::7 ok" \
		"tcp 10.77.0.1 fail" "tcp 198.51.100.1 fail" "tcp 2001:db8:a::1 fail" "icmp 169.254.169.254 fail" \
		"tcp 172.30.0.7 fail" "tcp fd30::7 fail"

	# Longest prefix: 198.51.100.0/24 allowed but 198.51.100.7/32 denied as another sandbox's.
	policy "$fw_dir/lpm.json" 10.77.0.4 "\"mode\": \"allowlist\", \"allow\": [\"198.51.100.0/24\", \"203.0.113.0/25\"], \"deny_sandboxes\": [\"198.51.100.7/32\"], $HOSTS"
	ctl "{\"op\":\"net-policy\",\"path\":\"$fw_dir/lpm.json\"}" >/dev/null
	probe net-fw-longest-prefix tcp:198.51.100.7 tcp:203.0.113.7
	expect net-fw-longest-prefix "tcp 198.51.100.7 fail" "tcp 203.0.113.7 ok"

	# A policy that makes no sense is refused and the old one stays.
	echo '{"ip": "10.77.0.4", "gateway": "10.77.0.1", "gateway_mac": "'"$tap_mac"'", "mode": "block", "allow": ["198.51.100.0/24"]}' \
		>"$fw_dir/bad.json"
	reply=$(ctl "{\"op\":\"net-policy\",\"path\":\"$fw_dir/bad.json\"}")
	probe net-fw-bad-policy tcp:203.0.113.7
	if echo "$reply" | grep -q '"ok":false' && echo "$reply" | grep -q 'allow' &&
		grep -qx "tcp 203.0.113.7 ok" "$RESULTS/net-fw-bad-policy.stdout"; then
		report OK net-fw-bad-policy
	else
		report FAIL net-fw-bad-policy "reply $reply; probe $(cat "$RESULTS/net-fw-bad-policy.stdout")"
	fi

	# The worker's private networks: peer C is out of reach in open mode, over IPv4, IPv6 and
	# an IPv6 form that carries its IPv4 (6to4 2002:ac1e:7::), each frame a drop_private.
	policy "$fw_dir/open.json" 10.77.0.4 "\"mode\": \"open\", $HOSTS"
	reply=$(ctl "{\"op\":\"net-policy\",\"path\":\"$fw_dir/open.json\"}")
	# The reply says what is now in force, as the net op would.
	if echo "$reply" | python3 -c 'import json,sys; n=json.load(sys.stdin)["net"]; assert n["mode"] == "open" and n["allow_private"] == 2, n'; then
		report OK net-fw-policy-reply
	else
		report FAIL net-fw-policy-reply "reply $reply"
	fi
	d0=$(counter drop_private)
	probe net-fw-private-closed tcp:172.30.0.7 udp:172.30.0.7 icmp:172.30.0.7 tcp:fd30::7 icmp:fd30::7 \
		tcp:2002:ac1e:7::1 tcp:198.51.100.7
	d1=$(counter drop_private)
	expect net-fw-private-closed "tcp 172.30.0.7 fail" "udp 172.30.0.7 fail" "icmp 172.30.0.7 fail" \
		"tcp fd30::7 fail" "icmp fd30::7 fail" "tcp 2002:ac1e:7::1 fail" "tcp 198.51.100.7 ok"
	if [ $((d1 - d0)) -ge 6 ]; then
		report OK net-fw-private-counter
	else
		report FAIL net-fw-private-counter "drop_private $d0 -> $d1 for at least 6 frames to peer C"
	fi

	# The operator opens it (allow_private, what sandboxd --allow-private-egress writes).
	PRIVATE="$LAB_PRIVATE, \"172.30.0.0/24\", \"fd30::/64\""
	policy "$fw_dir/open-private.json" 10.77.0.4 "\"mode\": \"open\", $HOSTS"
	PRIVATE=$LAB_PRIVATE
	ctl "{\"op\":\"net-policy\",\"path\":\"$fw_dir/open-private.json\"}" >/dev/null
	probe net-fw-private-opt-in tcp:172.30.0.7 udp:172.30.0.7 icmp:172.30.0.7 tcp:fd30::7
	expect net-fw-private-opt-in "tcp 172.30.0.7 ok" "udp 172.30.0.7 ok" "icmp 172.30.0.7 ok" "tcp fd30::7 ok"

	# A sandbox's allowlist names it: that part opens, the rest of the list as usual.
	policy "$fw_dir/allow-c.json" 10.77.0.4 "\"mode\": \"allowlist\", \"allow\": [\"172.30.0.0/24\", \"198.51.100.0/24\"], $HOSTS"
	ctl "{\"op\":\"net-policy\",\"path\":\"$fw_dir/allow-c.json\"}" >/dev/null
	probe net-fw-private-allowlist tcp:172.30.0.7 tcp:fd30::7 tcp:198.51.100.7 tcp:203.0.113.7
	expect net-fw-private-allowlist "tcp 172.30.0.7 ok" "tcp fd30::7 fail" "tcp 198.51.100.7 ok" "tcp 203.0.113.7 fail"

	# The main thread under a guest flood: a switch to block is in force at once.
	. tests/integration/net_flood.sh

	timeout 30 "$RUN" --attach "$fw_dir/vsock" --shutdown >/dev/null 2>&1
	wait "$fw_vm"
fi
fw_cleanup
