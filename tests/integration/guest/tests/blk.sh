#!/bin/sh
# Inside the guest, with three drives: vda read-only with a known pattern and
# serial RO-DISK, vdb read-write (zeros), vdc read-write 1 MiB + 512 bytes.
fail() { echo "BLK-FAIL $*"; exit 1; }
[ -b /dev/vda ] && [ -b /dev/vdb ] && [ -b /dev/vdc ] || fail "devices: $(ls /dev/vd* 2>&1)"
[ "$(cat /sys/block/vda/ro)" = 1 ] || fail "vda not read-only"
[ "$(cat /sys/block/vdb/ro)" = 0 ] || fail "vdb read-only"
[ "$(cat /sys/block/vda/serial 2>/dev/null)" = RO-DISK ] || fail "serial '$(cat /sys/block/vda/serial)'"
# Capacity in 512-byte sectors, exactly as the host file sizes give.
[ "$(cat /sys/block/vdc/size)" = 2049 ] || fail "vdc size $(cat /sys/block/vdc/size)"
# The read-only drive's content: the host wrote "sandvm-blk-pattern" at offset 4096.
head -c 4114 /dev/vda | tail -c 18 | grep -q sandvm-blk-pattern || fail "vda content"
# Writes to the read-only drive fail.
if echo x | dd of=/dev/vda bs=512 count=1 conv=notrunc,fsync 2>/dev/null; then
	fail "write to read-only vda succeeded"
fi
# Write a pattern to vdb at sector 8, flushed; read it back through O_DIRECT-free path.
printf 'guest-wrote-this' | dd of=/dev/vdb bs=512 seek=8 conv=sync,fsync 2>/dev/null ||
	fail "write vdb"
echo 3 > /proc/sys/vm/drop_caches 2>/dev/null
dd if=/dev/vdb bs=512 skip=8 count=1 2>/dev/null | grep -q guest-wrote-this || fail "read back vdb"
# The last sector of vdc is readable; the one past the end is not.
dd if=/dev/vdc bs=512 skip=2048 count=1 2>/dev/null | wc -c | grep -qx 512 || fail "last sector"
n=$(dd if=/dev/vdc bs=512 skip=2049 count=1 2>/dev/null | wc -c)
[ "$n" = 0 ] || fail "read past the end gave $n bytes"
echo BLK-OK
