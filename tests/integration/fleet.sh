# A fleet on real VMs, sourced by tests/integration/run (daemon shard; SANDVM_ONLY=fleet alone).
# fleet_test.py runs three etcd members, three workers (each in its own network namespace) and
# a gateway, and prints "OK name" / "FAIL name: why" per case (docs/fleet.md).
py_cases tests/integration/fleet_test.py 420
