"""A tunnel to an encrypted port: sandboxd ends TLS at https://LABEL.DOMAIN and
relays the bytes to the port in the guest. Anyone with the URL reaches it (no
token). Needs sandboxd with --ingress (docs/ingress.md)."""
import os
import ssl
import time

import httpx

import sandvm

app = sandvm.App.lookup("examples", create_if_missing=True)
sb = sandvm.Sandbox.create("python3", "-m", "http.server", "8000", app=app, workdir="/tmp",
                           encrypted_ports=[8000])
sb.write_file("/tmp/hello.txt", "hello through a tunnel\n")

tunnel = sb.tunnels()[8000]
print("url", tunnel.url)

# The certificate is checked: the system's CAs, or sandboxd's own (SANDVM_CACERT) when it made one.
ctx = ssl.create_default_context(cafile=os.environ.get("SANDVM_CACERT") or None)
with httpx.Client(verify=ctx, timeout=30) as http:
    deadline = time.monotonic() + 60
    while True:
        try:
            r = http.get(tunnel.url + "/hello.txt")
            break
        except httpx.TransportError:  # nothing listens yet: the tunnel closes the connection
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)
    print(r.status_code, r.text, end="")

sb.terminate()
