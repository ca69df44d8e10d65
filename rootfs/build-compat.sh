#!/bin/bash
# Build the compatibility drive: an ext4 image that the compatibility suite
# (tests/integration/compat.sh) attaches, read-only, to a Debian sandbox
# beside its root. It carries test suites and tools that every sandbox does
# not need, so the Debian image stays as it is:
#
#   /python/test/      CPython's regression tests: Debian's
#                      libpython3.11-testsuite merged with the test/
#                      package of libpython3.11-stdlib (support,
#                      libregrtest), byte-compiled. The suite bind-mounts
#                      it over the stdlib's test/ stub in the guest.
#   /runc/runc         Debian's runc (it links libseccomp.so.2, which the
#                      Debian image has: apt needs it)
#   /container/        an OCI bundle: config.json (from `runc spec`, then
#                      adjusted: no terminal, host name, a seccomp filter,
#                      the command) and rootfs/ (busybox-static)
#   /VERSIONS          "package version" of each package used
#
# The tests must be those of the guest's python3.11: given the Debian image,
# the two libpython3.11 packages are fetched in the version its dpkg status
# names (read with debugfs), else bookworm's (`PKG/bookworm`, the suite
# build-debian.sh bootstraps); runc and busybox-static are bookworm's. The
# suite compares /VERSIONS with the guest's dpkg status and fails on a
# mismatch. Nothing is installed on the host: the .debs are unpacked with
# dpkg-deb -x.
#
# usage: rootfs/build-compat.sh OUT.ext4 [DEBIAN_IMAGE]
#
# Cache, under $SANDVM_CACHE (default $XDG_CACHE_HOME/sandvm, else
# ~/.cache/sandvm):
#   compat/compat-<H>.ext4   the finished image, H from the sha256 of this
#                            script and the python version asked for
#   compat/compat.lock       flock(1) lock serialising builds
# Images of older script versions are removed after a successful build.
# OUT is a copy (reflink where possible), replaced atomically.
#
# Needs apt-get (and the host's apt lists for bookworm), dpkg-deb, mke2fs
# and python3 (3.11, to byte-compile the tests for the guest's 3.11).

set -euo pipefail

PACKAGES="libpython3.11-testsuite libpython3.11-stdlib runc busybox-static"

say() { printf 'sandvm-compat: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ $# -eq 1 ] || [ $# -eq 2 ] || { echo "usage: $0 OUT.ext4 [DEBIAN_IMAGE]" >&2; exit 2; }
out=$1
pyver=""
if [ $# -eq 2 ]; then
	command -v debugfs >/dev/null || die "debugfs missing (e2fsprogs)"
	status=$(debugfs -R "cat /var/lib/dpkg/status" "$2" 2>/dev/null) || die "debugfs cannot read $2"
	pyver=$(awk '/^Package: / { p = $2 } /^Version: / && p == "libpython3.11-stdlib" { print $2 }' \
		<<<"$status")
	[ -n "$pyver" ] || die "no libpython3.11-stdlib in $2's dpkg status"
fi

self=$(readlink -f "${BASH_SOURCE[0]}")
hash=$( (sha256sum "$self" | cut -d' ' -f1; echo "$pyver") | sha256sum | cut -d' ' -f1)
cache_root=${SANDVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sandvm}
base=$cache_root/compat
image=$base/compat-${hash:0:16}.ext4
mkdir -p "$base"

exec 9>"$base/compat.lock"
if ! flock -n 9; then
	say "waiting for another build of the compatibility drive"
	flock 9
fi

if [ -f "$image" ]; then
	say "cached: $image"
else
	for t in apt-get dpkg-deb mke2fs e2fsck python3; do
		command -v "$t" >/dev/null || die "$t missing (make deps)"
	done
	python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))' ||
		die "python3 here is not 3.11: the byte code would not match the guest's"
	rm -rf "$base"/.build.*
	tmp=$(mktemp -d "$base/.build.XXXXXX")
	trap 'rm -rf "$tmp"' EXIT
	mkdir -p "$tmp/debs" "$tmp/x" "$tmp/root"
	chmod 0777 "$tmp/debs" # apt's _apt user downloads into it
	pkgs=""
	for p in $PACKAGES; do
		case $p in
		libpython3.11-*) [ -n "$pyver" ] && pkgs="$pkgs $p=$pyver" && continue ;;
		esac
		pkgs="$pkgs $p/bookworm"
	done
	say "apt-get download$pkgs"
	# shellcheck disable=SC2086
	(cd "$tmp/debs" && apt-get download -q $pkgs) >"$tmp/download.log" 2>&1 || {
		tail -20 "$tmp/download.log" >&2
		die "apt-get download failed (apt-get update first?)"
	}
	for p in $PACKAGES; do
		deb=$(ls "$tmp/debs/${p}_"*.deb)
		mkdir -p "$tmp/x/$p"
		dpkg-deb -x "$deb" "$tmp/x/$p"
		echo "$p $(dpkg-deb -f "$deb" Version)" >>"$tmp/root/VERSIONS"
	done

	# CPython's tests: the test package whole.
	mkdir -p "$tmp/root/python"
	cp -a "$tmp/x/libpython3.11-stdlib/usr/lib/python3.11/test" "$tmp/root/python/"
	cp -a "$tmp/x/libpython3.11-testsuite/usr/lib/python3.11/test/." "$tmp/root/python/test/"
	for f in __init__.py regrtest.py libregrtest/main.py support/__init__.py \
		test_os.py test_asyncio/__init__.py test_multiprocessing_fork.py; do
		[ -s "$tmp/root/python/test/$f" ] || die "test/$f missing after the merge"
	done
	# Byte code now, once: the guest would compile each imported test module on every run
	# (the drive is read-only). Some files are broken on purpose (badsyntax_*); their
	# errors are expected and not fatal.
	python3 -m compileall -q -j 2 -d /usr/lib/python3.11/test "$tmp/root/python/test" >"$tmp/compile.log" 2>&1 || true
	[ -s "$tmp/root/python/test/__pycache__/regrtest.cpython-311.pyc" ] ||
		die "byte-compiling the tests failed: $(tail -5 "$tmp/compile.log")"

	# runc.
	mkdir -p "$tmp/root/runc"
	install -m 0755 "$tmp/x/runc/usr/sbin/runc" "$tmp/root/runc/runc"

	# The container: busybox as its whole root file system.
	ctr=$tmp/root/container
	mkdir -p "$ctr/rootfs/bin" "$ctr/rootfs/proc" "$ctr/rootfs/dev" "$ctr/rootfs/sys" \
		"$ctr/rootfs/tmp" "$ctr/rootfs/etc"
	install -m 0755 "$tmp/x/busybox-static/bin/busybox" "$ctr/rootfs/bin/busybox"
	for a in sh echo cat hostname id ls; do ln -s busybox "$ctr/rootfs/bin/$a"; done
	echo "root:x:0:0:root:/:/bin/sh" >"$ctr/rootfs/etc/passwd"
	echo "root:x:0:" >"$ctr/rootfs/etc/group"
	# runc's default spec, from the runc itself (it runs here too: bookworm's libseccomp).
	(cd "$ctr" && "$tmp/root/runc/runc" spec) || die "runc spec failed"
	python3 - "$ctr/config.json" <<'PY'
import json, sys
path = sys.argv[1]
c = json.load(open(path))
p = c["process"]
p["terminal"] = False
# What the container prints shows it is one: PID 1 of its own PID namespace,
# its own host name, root inside, a chdir refused by the seccomp filter below;
# and its exit status comes back through runc.
p["args"] = ["sh", "-c",
             'echo "pid=$$ host=$(hostname) uid=$(id -u)"; '
             'cd / 2>/dev/null && echo chdir-allowed || echo chdir-denied; exit 7']
c["hostname"] = "sandvm-ctr"
ns = c["linux"]["namespaces"]
if not any(n["type"] == "cgroup" for n in ns):
    ns.append({"type": "cgroup"})
c["linux"]["seccomp"] = {
    "defaultAction": "SCMP_ACT_ALLOW",
    "architectures": ["SCMP_ARCH_X86_64"],
    "syscalls": [{"names": ["chdir"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}],
}
json.dump(c, open(path, "w"), indent=1)
PY

	kib=$(du -sk "$tmp/root" | cut -f1)
	mib=$(((kib * 13 / 10 + 1023) / 1024 + 32))
	truncate -s "${mib}M" "$tmp/img"
	mke2fs -q -F -t ext4 -b 4096 -m 0 -L sandvm-compat -E root_owner=0:0 \
		-d "$tmp/root" "$tmp/img" || die "mke2fs failed"
	e2fsck -fn "$tmp/img" >/dev/null 2>&1 || die "e2fsck found errors in the new image"
	mv -f "$tmp/img" "$image"
	say "built $image: $(tr '\n' ';' <"$tmp/root/VERSIONS")"
	rm -rf "$tmp"
	trap - EXIT
	for old in "$base"/compat-*.ext4; do
		[ "$old" = "$image" ] || rm -f "$old"
	done
fi

outtmp=$out.tmp.$$
trap 'rm -f "$outtmp"' EXIT
cp --reflink=auto --sparse=always "$image" "$outtmp"
mv -f "$outtmp" "$out"
trap - EXIT
echo "$out: ext4 $(($(stat -c %s "$out") / 1048576)) MiB"
