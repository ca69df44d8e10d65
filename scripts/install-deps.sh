#!/bin/sh
# Installs the Debian packages that building and testing sandvm need, only when
# some are missing, so a second run costs one dpkg query.
set -eu

PACKAGES="build-essential make pkg-config libfdt-dev libssl-dev libuv1-dev libcjson-dev
libzstd-dev libcmocka-dev busybox-static qemu-system-x86 linux-source-6.1 bc bison
flex libelf-dev cpio xz-utils kmod python3 curl ca-certificates clang libclang-rt-14-dev
debootstrap e2fsprogs libcurl4-openssl-dev libhttp-parser-dev nftables iproute2 iperf3
python3-httpx python3-websockets python3-h2 nghttp2-client libseccomp-dev
python3-prometheus-client python3-pytest python3-jsonschema python3-yaml etcd-server etcd-client"

missing=""
for p in $PACKAGES; do
	if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

echo "install-deps: installing:$missing" >&2
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
