# The isolation monitor under its own sandboxd: healthy, then each wall broken
# on purpose (tests/integration/isolation_test.py). On the vm shard, beside jail.sh.
py_cases tests/integration/isolation_test.py 660
