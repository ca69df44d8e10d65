#!/bin/sh
# Inside the guest: about 128 KiB of numbered lines on the serial console,
# far more than the cap the host put on its console file.
i=0
while [ $i -lt 2000 ]; do
	printf 'FLOOD %06d ..................................................\n' $i
	i=$((i + 1))
done
echo "FLOOD-END"
exit 0
