#!/bin/bash
# Build the Debian root filesystem image that sandboxes boot to run real
# code: Debian bookworm (debootstrap --variant=minbase) with python3,
# ca-certificates, what a base system has that minbase leaves out (netbase's
# /etc/services and /etc/protocols, procps; tzdata and OpenSSL's configuration
# are in minbase already and are kept), iperf3 (for bench/net) and python3-h2
# (the h2c server of the tunnel cases, tests/integration/tunnel_servers.py),
# trimmed for size, with the sandvm init at /sbin/init, packed into an ext4
# image by mke2fs -d (no root mount, no loop device).
#
# usage: rootfs/build-debian.sh OUT.ext4 INIT_BINARY
#
# Cache layout, under $SANDVM_CACHE (default $XDG_CACHE_HOME/sandvm, else
# ~/.cache/sandvm):
#   rootfs/debian-<H>/tree/            the trimmed tree, without INIT_BINARY
#   rootfs/debian-<H>/python-version   "Python 3.x.y" as found in the tree
#   rootfs/debian-<H>/packages.txt     installed packages and versions
#   rootfs/debian-<H>/images/<I>.ext4  finished images, one per init binary
#   rootfs/debian-<H>/complete         written last; a directory without it
#                                      is an interrupted build and is redone
#   rootfs/debian-<H>.lock             flock(1) lock serialising builds
# where H is the sha256 of this script (editing it rebuilds the tree) and I
# the sha256 of INIT_BINARY. Trees of older script versions are removed
# after a successful build; the two newest images of a tree are kept.
#
# OUT is a private copy (reflink where the file system can, else a sparse
# copy), never a hard link, because a VM that mounts the root rw writes to
# it. OUT is replaced atomically by rename.
#
# The image has a journal (plain ext4 defaults, 4 KiB blocks, no reserved
# blocks): it costs a few MiB of space and makes a writable root survive an
# unclean VM exit; mke2fs -d is fast enough that dropping it gains nothing.
#
# Environment:
#   SANDVM_CACHE           cache root, as for kernel-config/build.sh
#   SANDVM_DEBIAN_MIRROR   mirror URL (default: the host's apt mirror for
#                          bookworm, else http://deb.debian.org/debian)
#
# Needs root for the cold build (debootstrap, chroot); a warm run only copies.

set -euo pipefail

SUITE=bookworm
INCLUDE=python3,ca-certificates,netbase,procps,tzdata,iperf3,python3-h2,python3-hpack,python3-hyperframe
FALLBACK_MIRROR=http://deb.debian.org/debian

say() { printf 'sandvm-debian: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }
step() { printf 'sandvm-debian: [%s] %s (%ds)\n' "$1" "$2" "$SECONDS" >&2; }

[ $# -eq 2 ] || { echo "usage: $0 OUT.ext4 INIT_BINARY" >&2; exit 2; }
out=$1
init_bin=$2
if [ ! -f "$init_bin" ] || [ ! -x "$init_bin" ]; then
	die "$init_bin is not an executable"
fi
if command -v file >/dev/null && ! file -L "$init_bin" | grep -q 'statically linked'; then
	die "$init_bin is not statically linked"
fi

self=$(readlink -f "${BASH_SOURCE[0]}")
hash=$(sha256sum "$self" | cut -d' ' -f1)
init_sha=$(sha256sum "$init_bin" | cut -d' ' -f1)
cache_root=${SANDVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sandvm}
base=$cache_root/rootfs
dir=$base/debian-$hash
image=$dir/images/$init_sha.ext4

mkdir -p "$base"

# Removes a directory tree that an interrupted debootstrap may have left
# /proc, /sys or /dev mounted in; never crosses into another file system.
remove_tree() {
	local d=$1 m
	[ -e "$d" ] || return 0
	d=$(readlink -f "$d")
	awk -v p="$d/" 'index($2, p) == 1 { print $2 }' /proc/mounts | sort -r |
		while read -r m; do umount -l "$m" 2>/dev/null || true; done
	rm -rf --one-file-system "$d"
}

# The mirror apt uses here for $SUITE: one-line sources.list entries first,
# then deb822 .sources stanzas.
host_mirror() {
	local f uri=""
	for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
		[ -r "$f" ] || continue
		uri=$(awk -v s="$SUITE" '
			$1 == "deb" {
				i = 2
				if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
				if ($(i + 1) == s) { print $i; exit }
			}' "$f")
		[ -n "$uri" ] && break
	done
	if [ -z "$uri" ]; then
		for f in /etc/apt/sources.list.d/*.sources; do
			[ -r "$f" ] || continue
			uri=$(awk -v s="$SUITE" 'BEGIN { RS = "" } {
				types = uris = suites = ""; en = "yes"
				n = split($0, L, "\n")
				for (j = 1; j <= n; j++) {
					l = L[j]
					if (l ~ /^[ \t]*#/ || l ~ /^[ \t]/) continue
					k = tolower(l); sub(/:.*/, "", k)
					v = l; sub(/^[^:]*:[ \t]*/, "", v)
					if (k == "types") types = v
					else if (k == "uris") uris = v
					else if (k == "suites") suites = v
					else if (k == "enabled") en = tolower(v)
				}
				if (en == "no" || (" " types " ") !~ / deb / ||
				    (" " suites " ") !~ (" " s " ")) next
				split(uris, U, " "); print U[1]; exit
			}' "$f")
			[ -n "$uri" ] && break
		done
	fi
	case $uri in
	http://* | https://* | ftp://* | file:/*) echo "${uri%/}" ;;
	*) echo "$FALLBACK_MIRROR" ;;
	esac
}

# Every step below runs under the per-script lock, so concurrent runs wait
# for one build and then share its result.
exec 9>"$dir.lock"
if ! flock -n 9; then
	say "waiting for another build of debian-${hash:0:12} to finish"
	flock 9
fi

# ---- the tree ----
if [ -f "$dir/complete" ] && [ -d "$dir/tree" ]; then
	step 1/4 "debootstrap: cached in $dir"
	step 2/4 "trim: cached"
else
	[ "$(id -u)" -eq 0 ] || die "building the tree needs root (debootstrap, chroot)"
	command -v debootstrap >/dev/null ||
		die "debootstrap missing (make deps, or apt-get install debootstrap)"
	# Anything here without the marker is from an interrupted run.
	remove_tree "$dir"
	for t in "$base/.debian-$hash".tmp.*; do remove_tree "$t"; done

	tmp=$(mktemp -d "$base/.debian-$hash.tmp.XXXXXX")
	trap 'remove_tree "$tmp"' EXIT
	tree=$tmp/tree
	mirror=${SANDVM_DEBIAN_MIRROR:-$(host_mirror)}
	step 1/4 "debootstrap $SUITE minbase +$INCLUDE from $mirror"
	set +e
	LC_ALL=C DEBIAN_FRONTEND=noninteractive \
		debootstrap --variant=minbase --include="$INCLUDE" --components=main \
		"$SUITE" "$tree" "$mirror" 2>&1 | tee "$tmp/debootstrap.log" |
		awk '/^I: (Retrieving Release|Resolving|Checking component|Retrieving Packages|Installing core|Unpacking the base|Configuring the base|Base system installed)/ {
			print "  " $0; fflush() }' >&2
	rc=${PIPESTATUS[0]}
	set -e
	if [ "$rc" -ne 0 ]; then
		tail -n 30 "$tmp/debootstrap.log" >&2
		[ -f "$tree/debootstrap/debootstrap.log" ] &&
			tail -n 30 "$tree/debootstrap/debootstrap.log" >&2
		die "debootstrap failed (exit $rc)"
	fi
	# debootstrap unmounts what it mounted; be sure before trimming.
	if awk -v p="$(readlink -f "$tree")/" 'index($2, p) == 1 { f = 1 } END { exit !f }' /proc/mounts; then
		die "file systems still mounted under $tree"
	fi

	step 2/4 "trim and configure the tree ($(du -sh "$tree" | cut -f1) untrimmed)"
	dpkg-query --admindir="$tree/var/lib/dpkg" -W -f '${Package} ${Version}\n' \
		>"$tmp/packages.txt"
	# Package manager caches and logs.
	find "$tree/var/lib/apt/lists" -maxdepth 1 -type f -delete
	rm -f "$tree"/var/cache/apt/*.bin "$tree"/var/cache/apt/archives/*.deb
	find "$tree/var/cache/apt/archives/partial" -mindepth 1 -delete 2>/dev/null || true
	rm -f "$tree"/var/cache/debconf/*-old "$tree"/var/lib/dpkg/*-old
	find "$tree/var/log" -type f -delete
	# Documentation (the copyright files stay), manuals, translations.
	find "$tree/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
	find "$tree/usr/share/doc" -mindepth 1 -type d -empty -delete
	rm -rf "$tree"/usr/share/man/* "$tree"/usr/share/info/* \
		"$tree"/usr/share/lintian/* "$tree"/usr/share/doc-base/*
	find "$tree/usr/share/locale" -mindepth 1 -maxdepth 1 -type d -exec rm -rf {} +
	# Compiled locales other than C.utf8 (libc's built-in C needs no file;
	# C.UTF-8 comes compiled with libc-bin and is the default LANG below).
	if [ -d "$tree/usr/lib/locale" ]; then
		find "$tree/usr/lib/locale" -mindepth 1 -maxdepth 1 ! -name C.utf8 \
			! -name 'C.UTF-8' -exec rm -rf {} +
	fi
	# Byte code python3 regenerates on demand.
	find "$tree" -xdev -type d -name __pycache__ -prune -exec rm -rf {} +
	find "$tree" -xdev -type f -name '*.py[co]' -delete
	# Scratch and run-time directories: the guest mounts devtmpfs on /dev
	# (CONFIG_DEVTMPFS_MOUNT) and tmpfs on /tmp, so all start empty.
	for d in dev proc sys tmp run var/tmp; do
		rm -rf --one-file-system "${tree:?}/$d"
		mkdir -p "$tree/$d"
	done
	chmod 0755 "$tree"/dev "$tree"/run "$tree"/sys
	chmod 0555 "$tree"/proc
	chmod 1777 "$tree"/tmp "$tree"/var/tmp
	# Identity and host files.
	echo sandbox >"$tree/etc/hostname"
	printf '127.0.0.1\tlocalhost\n127.0.1.1\tsandbox\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' \
		>"$tree/etc/hosts"
	printf '# Placeholder: sandvm writes the name servers here when a sandbox has a network.\n' \
		>"$tree/etc/resolv.conf"
	: >"$tree/etc/fstab"
	# The agent gives every command LANG=C.UTF-8; this is the same default
	# for anything that reads Debian's locale file.
	echo LANG=C.UTF-8 >"$tree/etc/default/locale"
	rm -f "$tree/sbin/init"

	# What a base system has and the trimming above must leave in place.
	for f in etc/services etc/protocols etc/ssl/openssl.cnf etc/ssl/certs/ca-certificates.crt \
		usr/share/zoneinfo/Etc/UTC usr/share/zoneinfo/Europe/Paris \
		usr/lib/locale/C.utf8/LC_CTYPE usr/bin/ps usr/bin/openssl; do
		[ -s "$tree/$f" ] || die "/$f missing from the tree"
	done
	compgen -G "$tree/usr/lib/*-linux-gnu/ossl-modules/legacy.so" >/dev/null ||
		die "the OpenSSL providers (ossl-modules) are missing from the tree"

	# python3 must work as shipped; -B keeps it from writing byte code back.
	chroot "$tree" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
		/usr/bin/python3 -B -c '
import json, hashlib, sqlite3, ssl, zlib, bz2, lzma, ctypes, decimal, uuid
import asyncio, subprocess, urllib.request, csv, socket, struct, zoneinfo
import h2.connection, h2.config, h2.events
assert hashlib.sha256(b"").hexdigest().startswith("e3b0c442")
sqlite3.connect(":memory:").execute("select 1").fetchone()
ssl.create_default_context()
json.dumps({"ok": True})
assert socket.getservbyname("http", "tcp") == 80
assert socket.getaddrinfo("localhost", "http", type=socket.SOCK_STREAM)[0][4][1] == 80
zoneinfo.ZoneInfo("Europe/Paris")
' || die "python3 in the tree fails its import check"
	# TLS 1.2 and 1.3 on loopback with default contexts and a certificate
	# from the image's own openssl: the configuration and providers work.
	tls=$(mktemp -d "$tree/tmp/tls.XXXXXX")
	chroot "$tree" /usr/bin/openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
		-nodes -subj /CN=localhost -addext subjectAltName=DNS:localhost -days 2 \
		-keyout "/tmp/${tls##*/}/key.pem" -out "/tmp/${tls##*/}/cert.pem" 2>/dev/null ||
		die "openssl in the tree cannot make a certificate"
	chroot "$tree" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 \
		/usr/bin/python3 -B - "/tmp/${tls##*/}" <<'PY' || die "TLS handshakes fail in the tree"
import socket, ssl, sys, threading
socket.setdefaulttimeout(30)
srv = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
srv.load_cert_chain(sys.argv[1] + "/cert.pem", sys.argv[1] + "/key.pem")
for v in (ssl.TLSVersion.TLSv1_2, ssl.TLSVersion.TLSv1_3):
    cli = ssl.create_default_context(cafile=sys.argv[1] + "/cert.pem")
    cli.minimum_version = cli.maximum_version = v
    ls = socket.create_server(("127.0.0.1", 0))
    def serve():
        with srv.wrap_socket(ls.accept()[0], server_side=True) as s:
            s.sendall(s.recv(4))
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with cli.wrap_socket(socket.create_connection(ls.getsockname()),
                         server_hostname="localhost") as s:
        s.sendall(b"ping")
        assert s.recv(4) == b"ping" and s.version() == v.name.replace("v1_", "v1."), s.version()
    t.join()
    ls.close()
PY
	rm -rf "$tls"
	chroot "$tree" /usr/bin/python3 -B --version >"$tmp/python-version" 2>&1
	[ -z "$(find "$tree" -xdev -name __pycache__ -print -quit)" ] ||
		die "byte code appeared in the tree"

	mkdir -p "$tmp/images"
	trap - EXIT
	mv "$tmp" "$dir"
	touch "$dir/complete"
	say "tree ready: $(du -sh "$dir/tree" | cut -f1) in $dir"
	# Trees built by earlier versions of this script (skip any in use).
	for old in "$base"/debian-*/; do
		old=${old%/}
		[ "$old" = "$dir" ] && continue
		(
			exec 8>"$old.lock"
			flock -n 8 && remove_tree "$old"
		) || true
	done
fi
tree=$dir/tree
pyver=$(cat "$dir/python-version")

# ---- the image ----
if [ -f "$image" ]; then
	step 3/4 "mke2fs: cached image ${init_sha:0:12}"
else
	step 3/4 "mke2fs -t ext4 -d (init ${init_sha:0:12})"
	mkdir -p "$dir/images"
	rm -rf "$dir"/images/.stage.* "$dir"/images/.*.ext4.tmp
	stage=$(mktemp -d "$dir/images/.stage.XXXXXX")
	imgtmp=$dir/images/.$init_sha.ext4.tmp
	trap 'rm -rf "$stage" "$imgtmp"' EXIT
	# A hard-linked copy of the tree, with only /sbin/init replaced.
	cp -al "$tree" "$stage/root"
	rm -f "$stage/root/sbin/init"
	install -m 0755 "$init_bin" "$stage/root/sbin/init"

	kib=$(du -sk "$stage/root" | cut -f1)
	mib=$(((kib * 13 / 10 + 1023) / 1024 + 64))
	truncate -s "${mib}M" "$imgtmp"
	mke2fs -q -F -t ext4 -b 4096 -m 0 -L sandvm-root -E root_owner=0:0 \
		-d "$stage/root" "$imgtmp" ||
		die "mke2fs failed"
	e2fsck -fn "$imgtmp" >/dev/null 2>&1 || die "e2fsck found errors in the new image"
	mv -f "$imgtmp" "$image"
	rm -rf "$stage"
	trap - EXIT
	# Keep the two newest images of this tree.
	# shellcheck disable=SC2012
	ls -1t "$dir"/images/*.ext4 | tail -n +3 | while read -r f; do rm -f "$f"; done
fi

# ---- OUT ----
step 4/4 "copy to $out"
outtmp=$out.tmp.$$
trap 'rm -f "$outtmp"' EXIT
cp --reflink=auto --sparse=always "$image" "$outtmp"
mv -f "$outtmp" "$out"
trap - EXIT

size=$(stat -c %s "$out")
used=$(du -k "$out" | cut -f1)
echo "$out: ext4 $((size / 1048576)) MiB ($((used / 1024)) MiB allocated), $pyver, init ${init_sha:0:12}"
step 4/4 "done"
