# The Python SDK (python/sandvm) and examples/, sourced by tests/integration/run.
# sdk_test.py runs its own sandboxd (unix socket, HTTPS, ingress, tunnel ports),
# then the SDK's pytest tests on real VMs, and prints "OK name" / "FAIL name: why"
# per test.
py_cases tests/integration/sdk_test.py 300
