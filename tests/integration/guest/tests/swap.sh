#!/bin/sh
# Inside the guest: the host swaps vda's backing file at run time; the new
# size arrives through a config-change interrupt and the new content reads back.
old=$(cat /sys/block/vda/size)
echo "SWAP-READY size=$old"
i=0
while [ "$(cat /sys/block/vda/size)" = "$old" ]; do
	i=$((i + 1))
	if [ "$i" -gt 1200 ]; then
		echo "SWAP-FAIL size still $old"
		exit 1
	fi
	sleep 0.1
done
new=$(cat /sys/block/vda/size)
# Forget blocks cached from the old file before reading the new one.
blockdev --flushbufs /dev/vda 2>/dev/null || echo 3 >/proc/sys/vm/drop_caches
if head -c 14 /dev/vda | grep -q second-backing; then
	echo "SWAP-OK $old -> $new"
	exit 0
fi
echo "SWAP-FAIL content: $(head -c 14 /dev/vda | od -c | head -1)"
exit 1
