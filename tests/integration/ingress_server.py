#!/usr/bin/env python3
"""The server inside the sandbox for tests/integration/ingress_test.py.

    python3 ingress_server.py PORT SEEN_LOG

An HTTP/1.1 server on 127.0.0.1:PORT (standard library only, raw sockets so
every byte is the test's choice). Each request's head, as received, and its
body are appended to SEEN_LOG (the test reads it back to prove what never
reached the guest). Paths:

  /echo...          200 JSON: method, target, headers (as received, in order),
                    body length and sha256; keep-alive
  /ws               WebSocket handshake (RFC 6455), then echoes every message
  /ws-refuse        403 to a WebSocket handshake
  /hostile/nolength 200 without Content-Length or chunked: 1 MiB, then close
  /hostile/huge     200 with 200 fields of 1 KiB each
  /hostile/101      101 Switching Protocols to a request that asked for none
  /hostile/silent   reads the request and never answers
  /hostile/noread   reads only the head and never answers or reads again
  /hostile/flood    a 1 GiB Content-Length, written as fast as it is taken
  /hostile/garbage  a malformed status line
  /hostile/close    closes without a response
"""
import base64
import hashlib
import json
import socketserver
import sys
import threading
import time

PORT = int(sys.argv[1])
SEEN = sys.argv[2]
seen_lock = threading.Lock()
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


def record(data):
    with seen_lock, open(SEEN, "ab") as f:
        f.write(data + b"\n----\n")


class Conn:
    def __init__(self, sock):
        self.sock = sock
        self.buf = b""

    def fill(self):
        d = self.sock.recv(65536)
        if not d:
            raise EOFError
        self.buf += d

    def until(self, sep, cap=1 << 20):
        while sep not in self.buf:
            if len(self.buf) > cap:
                raise ValueError("too long")
            self.fill()
        i = self.buf.index(sep) + len(sep)
        out, self.buf = self.buf[:i], self.buf[i:]
        return out

    def exactly(self, n):
        while len(self.buf) < n:
            self.fill()
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


def read_body(c, headers):
    te = [v for k, v in headers if k.lower() == "transfer-encoding"]
    cl = [v for k, v in headers if k.lower() == "content-length"]
    if te and "chunked" in te[-1].lower():
        body, trailer = b"", b""
        while True:
            line = c.until(b"\r\n")
            size = int(line.split(b";")[0].strip(), 16)
            if size == 0:
                while True:
                    t = c.until(b"\r\n")
                    if t == b"\r\n":
                        return body, trailer
                    trailer += t
            body += c.exactly(size)
            c.until(b"\r\n")
    if cl:
        return c.exactly(int(cl[0])), b""
    return b"", b""


def send(c, status, fields, body=b""):
    head = f"HTTP/1.1 {status}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in fields)
    head += f"Content-Length: {len(body)}\r\n\r\n"
    c.sock.sendall(head.encode() + body)


def websocket(c, headers):
    key = dict((k.lower(), v) for k, v in headers).get("sec-websocket-key", "").encode()
    accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest()).decode()
    c.sock.sendall(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    f"Sec-WebSocket-Accept: {accept}\r\n\r\n").encode())
    while True:
        b0, b1 = c.exactly(2)
        opcode, n = b0 & 0x0F, b1 & 0x7F
        if n == 126:
            n = int.from_bytes(c.exactly(2), "big")
        elif n == 127:
            n = int.from_bytes(c.exactly(8), "big")
        mask = c.exactly(4) if b1 & 0x80 else b"\0\0\0\0"
        data = bytes(x ^ mask[i % 4] for i, x in enumerate(c.exactly(n)))
        if opcode == 9:
            opcode = 10  # ping -> pong
        out = bytes([0x80 | opcode])
        if len(data) < 126:
            out += bytes([len(data)])
        elif len(data) < 65536:
            out += bytes([126]) + len(data).to_bytes(2, "big")
        else:
            out += bytes([127]) + len(data).to_bytes(8, "big")
        c.sock.sendall(out + data)
        if opcode == 8:
            return


def hostile(c, path):
    if path == "/hostile/nolength":
        c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        for _ in range(16):
            c.sock.sendall(b"n" * 65536)
    elif path == "/hostile/huge":
        c.sock.sendall(b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Big-%d: %s\r\n" % (i, b"b" * 1024)
                                                        for i in range(200)) + b"Content-Length: 0\r\n\r\n")
    elif path == "/hostile/101":
        c.sock.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n")
        time.sleep(30)
    elif path in ("/hostile/silent", "/hostile/noread"):
        time.sleep(600)
    elif path == "/hostile/flood":
        c.sock.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1073741824\r\n\r\n")
        chunk = b"f" * 65536
        for _ in range(16384):
            c.sock.sendall(chunk)
    elif path == "/hostile/garbage":
        c.sock.sendall(b"HTTP/1.1 two hundred\r\n\x01\x02\r\n\r\n")
        time.sleep(5)
    # /hostile/close: nothing


class Handler(socketserver.BaseRequestHandler):
    def handle(self):
        c = Conn(self.request)
        try:
            while True:
                head = c.until(b"\r\n\r\n", cap=256 << 10)
                lines = head.decode("latin-1").split("\r\n")
                method, target, _ = lines[0].split(" ", 2)
                headers = [tuple(x.strip() for x in l.split(":", 1)) for l in lines[1:] if l]
                path = target.split("?", 1)[0]
                if path == "/hostile/noread":
                    record(head)
                    time.sleep(600)
                body, trailer = read_body(c, headers)
                record(head + body + trailer)
                if path.startswith("/hostile/"):
                    hostile(c, path)
                    return
                if path == "/ws":
                    websocket(c, headers)
                    return
                if path == "/ws-refuse":
                    send(c, "403 Forbidden", [("Content-Type", "text/plain")], b"no websocket here\n")
                    continue
                reply = json.dumps({"method": method, "target": target, "headers": headers,
                                    "body_len": len(body), "body_sha256": hashlib.sha256(body).hexdigest(),
                                    "trailer": trailer.decode("latin-1")}).encode()
                send(c, "200 OK", [("Content-Type", "application/json"),
                                   ("Set-Cookie", "_modal_connect_token=from-guest; Path=/"),
                                   ("Set-Cookie", "guest=1; Path=/")], reply)
        except (EOFError, ConnectionError, ValueError, OSError):
            pass


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    srv = Server(("127.0.0.1", PORT), Handler)
    print("listening", flush=True)
    srv.serve_forever()
