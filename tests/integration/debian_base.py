# What a Debian sandbox has of a base system, run in the guest by the exec case
# run-debian-base (tests/integration/exec.sh) as `python3 -c`. Every line it
# prints is fixed, so the case compares the output byte for byte:
#   services 80 80        getservbyname and getaddrinfo know "http" (netbase)
#   zoneinfo +02:00       Europe/Paris in July (tzdata)
#   encoding utf-8 UTF-8  the file system and locale encodings (C.UTF-8)
#   ps 1                  procps lists PID 1
#   TLSv1.3 x25519        loopback handshakes with default contexts, a certificate
#   TLSv1.3 secp256r1     made by the image's openssl, and the group read from the
#   TLSv1.2 x25519        server's key share (1.3) or key exchange (1.2)
import datetime
import locale
import os
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import zoneinfo

socket.setdefaulttimeout(30)
print("services", socket.getservbyname("http", "tcp"),
      socket.getaddrinfo("localhost", "http", type=socket.SOCK_STREAM)[0][4][1])
paris = datetime.datetime(2026, 7, 1, 12, tzinfo=zoneinfo.ZoneInfo("Europe/Paris"))
print("zoneinfo", paris.isoformat()[-6:])
print("encoding", sys.getfilesystemencoding(), locale.getpreferredencoding())
print("ps", subprocess.run(["ps", "-o", "pid=", "-p", "1"], check=True,
                           capture_output=True, text=True).stdout.strip())

GROUPS = {0x17: "secp256r1", 0x18: "secp384r1", 0x1d: "x25519", 0x1e: "x448"}


def server_group(msg):
    """The group of a ServerHello's key_share or a ServerKeyExchange's named curve."""
    if msg[0] == 12 and msg[4] == 3:
        return int.from_bytes(msg[5:7], "big")
    if msg[0] != 2:
        return None
    i = 4 + 2 + 32  # header, legacy_version, random
    i += 1 + msg[i]  # session id
    i += 2 + 1  # cipher suite, compression
    end = i + 2 + int.from_bytes(msg[i:i + 2], "big")
    i += 2
    while i + 4 <= end:
        kind, n = int.from_bytes(msg[i:i + 2], "big"), int.from_bytes(msg[i + 2:i + 4], "big")
        if kind == 51:
            return int.from_bytes(msg[i + 4:i + 6], "big")
        i += 4 + n
    return None


def handshake(d, version, curve=None):
    srv = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    srv.load_cert_chain(os.path.join(d, "cert.pem"), os.path.join(d, "key.pem"))
    cli = ssl.create_default_context(cafile=os.path.join(d, "cert.pem"))
    cli.minimum_version = cli.maximum_version = version
    if curve:
        cli.set_ecdh_curve(curve)
    seen = []

    def on_message(conn, direction, v, content_type, msg_type, data):
        if direction == "read" and content_type == ssl._TLSContentType.HANDSHAKE:
            g = server_group(data)
            if g is not None:
                seen.append(GROUPS.get(g, hex(g)))
    cli._msg_callback = on_message
    with socket.create_server(("127.0.0.1", 0)) as ls:
        def serve():
            with srv.wrap_socket(ls.accept()[0], server_side=True) as s:
                s.sendall(s.recv(4).upper())
        t = threading.Thread(target=serve, daemon=True)
        t.start()
        with cli.wrap_socket(socket.create_connection(ls.getsockname()),
                             server_hostname="localhost") as s:
            s.sendall(b"ping")
            assert s.recv(4) == b"PING"
            got = s.version()
        t.join()
    print(got, ",".join(seen))


with tempfile.TemporaryDirectory() as d:
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:P-256", "-nodes", "-subj", "/CN=localhost",
                    "-addext", "subjectAltName=DNS:localhost", "-days", "2",
                    "-keyout", os.path.join(d, "key.pem"), "-out", os.path.join(d, "cert.pem")],
                   check=True, capture_output=True)
    handshake(d, ssl.TLSVersion.TLSv1_3)
    handshake(d, ssl.TLSVersion.TLSv1_3, "prime256v1")
    handshake(d, ssl.TLSVersion.TLSv1_2)
