#!/bin/sh
# Inside the guest: the virtio-rng device is the kernel's hardware RNG and
# returns fresh random bytes on every read.
current=$(cat /sys/class/misc/hw_random/rng_current 2>/dev/null)
case "$current" in
virtio_rng*) ;;
*) echo "RNG-FAIL rng_current='$current'"; exit 1 ;;
esac
a=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
b=$(dd if=/dev/hwrng bs=32 count=1 2>/dev/null | od -An -tx1 | tr -d ' \n')
if [ ${#a} -eq 64 ] && [ ${#b} -eq 64 ] && [ "$a" != "$b" ]; then
	echo "RNG-OK $current $a"
	exit 0
fi
echo "RNG-FAIL a='$a' b='$b'"
exit 1
