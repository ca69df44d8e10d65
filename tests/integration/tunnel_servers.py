#!/usr/bin/env python3
"""The servers inside the sandbox for tests/integration/tunnels_test.py
(and bench/tunnels).

    python3 tunnel_servers.py echo PORT [ADDRESS]
    python3 tunnel_servers.py h2c PORT [ADDRESS]

Each listens on ADDRESS:PORT (127.0.0.1 unless given; bench/tunnels uses
0.0.0.0 to reach the same server over the tap too), prints "listening" once
it does, and serves every connection on a thread of its own.

  echo  sends back every byte as it comes; when the client shuts its write
        side (EOF), it sends what is left, shuts its own and closes: a
        half-closed client still gets the whole echo, then EOF.
  h2c   HTTP/2 with prior knowledge (no TLS: sandboxd terminates it and
        relays the bytes; python3-h2): every request gets 200, content-type
        text/plain and the body "tunnel-h2 ok path=PATH\\n", PATH the
        request's :path as received.
"""
import socket
import socketserver
import sys

MODE = sys.argv[1]
PORT = int(sys.argv[2])
ADDRESS = sys.argv[3] if len(sys.argv) > 3 else "127.0.0.1"


class Echo(socketserver.BaseRequestHandler):
    def handle(self):
        s = self.request
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    break
                s.sendall(d)
            s.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def h2_body(path):
    return b"tunnel-h2 ok path=" + path + b"\n"


class H2c(socketserver.BaseRequestHandler):
    def handle(self):
        import h2.config
        import h2.connection
        import h2.events

        s = self.request
        conn = h2.connection.H2Connection(h2.config.H2Configuration(client_side=False,
                                                                    header_encoding=None))
        conn.initiate_connection()
        s.sendall(conn.data_to_send())
        try:
            while True:
                d = s.recv(65536)
                if not d:
                    return
                for ev in conn.receive_data(d):
                    if isinstance(ev, h2.events.RequestReceived):
                        path = dict(ev.headers).get(b":path", b"")
                        body = h2_body(path)
                        conn.send_headers(ev.stream_id, [(b":status", b"200"),
                                                         (b"content-type", b"text/plain"),
                                                         (b"content-length", str(len(body)).encode())])
                        conn.send_data(ev.stream_id, body, end_stream=True)
                    elif isinstance(ev, h2.events.ConnectionTerminated):
                        s.sendall(conn.data_to_send())
                        return
                out = conn.data_to_send()
                if out:
                    s.sendall(out)
        except OSError:
            pass


class Server(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    if MODE == "h2c":
        # Imported before "listening": under an emulated L1 the import alone can take longer than
        # the tunnel's idle timeout, which the first connection would otherwise wait through.
        import h2.config  # noqa: F401
        import h2.connection  # noqa: F401
        import h2.events  # noqa: F401
    srv = Server((ADDRESS, PORT), {"echo": Echo, "h2c": H2c}[MODE])
    print("listening", flush=True)
    srv.serve_forever()
