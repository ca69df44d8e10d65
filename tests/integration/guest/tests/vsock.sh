#!/bin/sh
# Inside the guest: serve an echo on vsock port 5000 for the host, connect to
# the host's port 6000 once, and finish when the host connects to port 5001.
/tests/bin/vsock-test echo 5000 &
/tests/bin/vsock-test connect 6000 hello-from-guest || exit 1
echo VSOCK-READY
/tests/bin/vsock-test wait 5001 || exit 1
echo VSOCK-DONE
