"""Runs in the guest (Debian image, python3): tries each target and prints one
line per probe, "<kind> <addr> ok|fail". Kinds: tcp (connect + echo on 8080),
udp (echo on 8081), icmp (echo request via a raw socket). Usage:
    python3 net_probe.py [--src ADDR] KIND:ADDR...
"""
import os
import socket
import struct
import sys
import time


def checksum(b):
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def tcp(addr, src):
    with socket.socket(family(addr), socket.SOCK_STREAM) as s:
        s.settimeout(3)
        if src:
            s.bind((src, 0))
        s.connect((addr, 8080))
        s.sendall(b"ping-tcp\n")
        return s.recv(64) == b"ping-tcp\n"


def udp(addr, src):
    with socket.socket(family(addr), socket.SOCK_DGRAM) as s:
        s.settimeout(3)
        if src:
            s.bind((src, 0))
        s.sendto(b"ping-udp", (addr, 8081))
        return s.recvfrom(64)[0] == b"ping-udp"


def icmp(addr, src):
    v6 = family(addr) == socket.AF_INET6
    proto = socket.IPPROTO_ICMPV6 if v6 else socket.IPPROTO_ICMP
    with socket.socket(family(addr), socket.SOCK_RAW, proto) as s:
        s.settimeout(3)
        if src:
            s.bind((src, 0))
        ident = os.getpid() & 0xFFFF
        typ = 128 if v6 else 8
        body = struct.pack("!HH", ident, 1) + b"sandvm-probe"
        csum = 0 if v6 else checksum(struct.pack("!BBH", typ, 0, 0) + body)  # the kernel fills ICMPv6's
        s.sendto(struct.pack("!BBH", typ, 0, csum) + body, (addr, 0))
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:
            data, _ = s.recvfrom(2048)
            msg = data if v6 else data[(data[0] & 0xF) * 4:]
            if msg[0] == (129 if v6 else 0) and msg[4:6] == struct.pack("!H", ident):
                return True
        return False


def udpsend(addr, src):
    """25 datagrams, fire and forget: for counting frames at the firewall."""
    with socket.socket(family(addr), socket.SOCK_DGRAM) as s:
        if src:
            s.bind((src, 0))
        for i in range(25):
            s.sendto(b"count-%d" % i, (addr, 9))  # no listener there: nothing comes back to answer
        return True


def main():
    args = sys.argv[1:]
    src = None
    if args[:1] == ["--src"]:
        src, args = args[1], args[2:]
    for target in args:
        kind, addr = target.split(":", 1)
        try:
            ok = {"tcp": tcp, "udp": udp, "icmp": icmp, "udpsend": udpsend}[kind](addr, src)
        except OSError:
            ok = False
        print(kind, addr, "ok" if ok else "fail", flush=True)


main()
