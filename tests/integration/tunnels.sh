# Tunnels (encrypted, unencrypted, h2 ports), sourced by tests/integration/run.
# tunnels_test.py runs its own sandboxd with --ingress and --tunnel-ports and
# real VMs and prints "OK name" / "FAIL name: why" per case.
py_cases tests/integration/tunnels_test.py 600
