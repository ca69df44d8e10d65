#!/usr/bin/python3
"""Host side of the vsock integration test (run by tests/integration/run).

usage: vsock_host.py SOCKET PHASE
  listen   serve SOCKET_6000 once: reply "hello-from-host:" + what the guest sent
  streams  8 concurrent connections to the guest's echo port 5000, 1 MiB each,
           checked by SHA-256; refused port; bad CONNECT line; then port 5001
"""
import hashlib
import os
import socket
import sys
import threading

sock_path, phase = sys.argv[1], sys.argv[2]


def listen_once():
    srv = socket.socket(socket.AF_UNIX)
    path = sock_path + "_6000"
    if os.path.exists(path):
        os.unlink(path)
    srv.bind(path)
    srv.listen(1)
    print("listening", flush=True)
    conn, _ = srv.accept()
    data = b""
    while chunk := conn.recv(4096):
        data += chunk
    conn.sendall(b"hello-from-host:" + data)
    conn.close()


def connect(port):
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(60)
    s.connect(sock_path)
    s.sendall(f"CONNECT {port}\n".encode())
    line = b""
    while not line.endswith(b"\n"):
        c = s.recv(1)
        if not c:
            return s, None
        line += c
    return s, line.decode().strip()


def stream(i, results):
    payload = os.urandom(1 << 20) + bytes([i])
    s, ok = connect(5000)
    if not ok or not ok.startswith("OK "):
        results[i] = f"no OK: {ok!r}"
        return
    sender = threading.Thread(target=lambda: (s.sendall(payload), s.shutdown(socket.SHUT_WR)))
    sender.start()
    got = hashlib.sha256()
    n = 0
    while n < len(payload):
        chunk = s.recv(65536)
        if not chunk:
            break
        got.update(chunk)
        n += len(chunk)
    sender.join()
    s.close()
    results[i] = "ok" if got.digest() == hashlib.sha256(payload).digest() else f"mismatch after {n} bytes"


def streams():
    results = {}
    threads = [threading.Thread(target=stream, args=(i, results)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bad = {i: r for i, r in results.items() if r != "ok"}
    assert len(results) == 8 and not bad, bad
    print("8 streams of 1 MiB echoed intact", flush=True)
    # Nobody listens on 5999 in the guest: the connection is reset, never OK.
    s, ok = connect(5999)
    assert ok is None, ok
    s.close()
    print("refused port reset", flush=True)
    s = socket.socket(socket.AF_UNIX)
    s.connect(sock_path)
    s.sendall(b"HELLO\n")
    assert s.recv(100).startswith(b"ERROR"), "bad CONNECT line accepted"
    s.close()
    print("bad handshake refused", flush=True)
    s, ok = connect(5001)
    assert ok and ok.startswith("OK "), ok
    s.close()


{"listen": listen_once, "streams": streams}[phase]()
