#!/bin/bash
# Build the sandvm test initramfs: a gzip-compressed newc cpio holding
#   /init          the sandvm-init binary (PID 1)
#   /bin/busybox   busybox-static, with a symlink in /bin for every applet
#   /dev/console, /dev/null, /etc/passwd, /etc/group and empty mount points
# plus the contents of any EXTRA_DIR given (e.g. scripts for sandvm.run=).
#
# usage: rootfs/build-initramfs.sh OUT.cpio.gz INIT_BINARY [EXTRA_DIR...]
#
# The archive is written by the kernel's own usr/gen_init_cpio, which takes
# a text list of entries, so device nodes need no root and no mknod, and
# the same inputs give the same bytes: entries are sorted, every time stamp
# is SOURCE_DATE_EPOCH (default 0) and owners are root.
#
# Environment:
#   SANDVM_BUSYBOX      busybox binary to ship (default /bin/busybox)
#   SANDVM_KERNEL_SRC   source tarball used when no unpacked tree is cached
#   SANDVM_CACHE        cache root, as for kernel-config/build.sh

set -euo pipefail

say() { printf 'sandvm-initramfs: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ $# -ge 2 ] || { echo "usage: $0 OUT.cpio.gz INIT_BINARY [EXTRA_DIR...]" >&2; exit 2; }
out=$1
init_bin=$2
shift 2

busybox=${SANDVM_BUSYBOX:-/bin/busybox}
tarball=${SANDVM_KERNEL_SRC:-/usr/src/linux-source-6.1.tar.xz}
cache_root=${SANDVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sandvm}
epoch=${SOURCE_DATE_EPOCH:-0}

[ -x "$init_bin" ] || die "$init_bin is not an executable"
[ -x "$busybox" ] || die "$busybox missing (apt-get install busybox-static)"
# A dynamically linked busybox would need a loader the image does not have.
if command -v file >/dev/null && ! file -L "$busybox" | grep -q 'statically linked'; then
	die "$busybox is not statically linked"
fi
for d in "$@"; do
	[ -d "$d" ] || die "extra directory $d does not exist"
done

# Prefer the kernel tree build.sh already unpacked; otherwise pull the one
# file out of the tarball (xz has to stream the whole archive, ~10 s, once).
gen_cpio_source() {
	local c
	for c in "$cache_root"/kernel/src/*/usr/gen_init_cpio.c; do
		[ -f "$c" ] && { echo "$c"; return 0; }
	done
	c=$cache_root/tools/gen_init_cpio.c
	if [ ! -f "$c" ]; then
		[ -f "$tarball" ] || die "no kernel source for gen_init_cpio ($tarball)"
		say "extracting usr/gen_init_cpio.c from $tarball (once)"
		mkdir -p "$cache_root/tools"
		tar -xJOf "$tarball" --wildcards '*/usr/gen_init_cpio.c' >"$c.tmp"
		[ -s "$c.tmp" ] || die "usr/gen_init_cpio.c not found in $tarball"
		mv "$c.tmp" "$c"
	fi
	echo "$c"
}

gen_cpio_tool() {
	local src key tool
	src=$(gen_cpio_source)
	key=$(sha256sum "$src" | cut -c1-16)
	tool=$cache_root/tools/gen_init_cpio-$key
	if [ ! -x "$tool" ]; then
		mkdir -p "$cache_root/tools"
		${HOSTCC:-cc} -O2 -o "$tool.tmp.$$" "$src" || die "cannot compile $src"
		mv -f "$tool.tmp.$$" "$tool"
	fi
	echo "$tool"
}

work=$(mktemp -d "${TMPDIR:-/tmp}/sandvm-initramfs.XXXXXX")
trap 'rm -rf "$work"' EXIT

# Files are staged so their time stamps can be pinned: gen_init_cpio
# copies the mtime of every regular file into the archive.
stage() {
	local name=$1 src=$2
	mkdir -p "$work/stage$(dirname "$name")"
	cp "$src" "$work/stage$name"
	touch -d "@$epoch" "$work/stage$name"
	echo "$work/stage$name"
}

printf 'root:x:0:0:root:/root:/bin/sh\n' >"$work/passwd"
printf 'root:x:0:\n' >"$work/group"
touch -d "@$epoch" "$work/passwd" "$work/group"

# Entries for an extra directory, relative to its root. gen_init_cpio's
# list is split on blanks, so such names cannot be represented.
extra_entries() {
	local dir=$1 rel path mode
	while IFS= read -r -d '' rel; do
		rel=${rel#./}
		[ "$rel" = . ] && continue
		case $rel in *[[:space:]]*) die "$dir/$rel: blanks in names are not supported";; esac
		path=$dir/$rel
		mode=$(stat -c '%a' "$path")
		if [ -L "$path" ]; then
			echo "slink /$rel $(readlink "$path") 0777 0 0"
		elif [ -d "$path" ]; then
			echo "dir /$rel $mode 0 0"
		elif [ -f "$path" ]; then
			echo "file /$rel $(stage "/$rel" "$path") $mode 0 0"
		else
			die "$path: only files, directories and symlinks are supported"
		fi
	done < <(cd "$dir" && find . -print0)
}

list_entries() {
	local applet d
	# Extra directories come first so that, after the stable sort below,
	# their entries win over the defaults of the same name.
	for d in "$@"; do
		extra_entries "$d"
	done
	cat <<-EOF
	dir /bin 0755 0 0
	dir /dev 0755 0 0
	nod /dev/console 0600 0 0 c 5 1
	nod /dev/null 0666 0 0 c 1 3
	dir /etc 0755 0 0
	file /etc/group $work/group 0644 0 0
	file /etc/passwd $work/passwd 0644 0 0
	dir /proc 0555 0 0
	dir /root 0700 0 0
	dir /run 0755 0 0
	dir /sys 0555 0 0
	dir /tmp 1777 0 0
	file /init $(stage /init "$init_bin") 0755 0 0
	file /bin/busybox $(stage /bin/busybox "$busybox") 0755 0 0
	EOF
	# init and linuxrc would shadow our /init as PID 1 candidates.
	for applet in $("$busybox" --list); do
		case $applet in
		busybox | init | linuxrc | */*) ;;
		*) echo "slink /bin/$applet busybox 0777 0 0" ;;
		esac
	done
}

tool=$(gen_cpio_tool)
# Sorting by name puts every directory before its contents and makes the
# order independent of the host's directory iteration.
list_entries "$@" | LC_ALL=C sort -s -u -k2,2 >"$work/list"
mkdir -p "$(dirname "$out")"
"$tool" -t "$epoch" "$work/list" | gzip -9n >"$work/out.cpio.gz"
mv -f "$work/out.cpio.gz" "$out"
say "wrote $out ($(stat -c %s "$out") bytes)"
