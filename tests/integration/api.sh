# sandboxd and vmctl cases, sourced by tests/integration/run. api_test.py runs a
# real daemon with real VMs and prints "OK name" / "FAIL name: why" per case.
py_cases tests/integration/api_test.py 2000
