# Connect tokens and the ingress proxy, sourced by tests/integration/run.
# ingress_test.py runs its own sandboxd with --ingress and real VMs and prints
# "OK name" / "FAIL name: why" per case.
py_cases tests/integration/ingress_test.py 700
