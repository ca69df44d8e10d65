# The jailed VMM, sourced by tests/integration/run. jail_test.py runs its own
# sandboxd and checks its VMMs' walls from outside (credentials, capabilities,
# seccomp, namespaces, root, cgroup limits, an out-of-memory end, a restart,
# --no-jail) and prints "OK name" / "FAIL name: why" per case.
py_cases tests/integration/jail_test.py 900
