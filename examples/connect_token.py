"""A web server in a sandbox, reached through a connect token: the server
receives the token's user metadata in the X-Verified-User-Data header, which
no client can forge. Needs sandboxd with --ingress (docs/ingress.md)."""
import os
import time

import httpx

import sandvm

app = sandvm.App.lookup("examples", create_if_missing=True)
sb = sandvm.Sandbox.create("python3", "-m", "http.server", "8080", app=app, workdir="/tmp")
sb.write_file("/tmp/hello.txt", "hello through a connect token\n")

creds = sb.create_connect_token(user_metadata={"user_id": "ada"})
print("url", creds.url)

# sandboxd's own CA signs the ingress certificate unless it was given one (SANDVM_CACERT names it).
verify = os.environ.get("SANDVM_CACERT") or True
with httpx.Client(verify=verify, headers={"Authorization": f"Bearer {creds.token}"}, timeout=30) as http:
    deadline = time.monotonic() + 60
    while True:
        r = http.get(creds.url + "/hello.txt")
        if r.status_code != 502 or time.monotonic() > deadline:  # 502: the server is not up yet
            break
        time.sleep(0.5)
    print(r.status_code, r.text, end="")

sb.terminate()
