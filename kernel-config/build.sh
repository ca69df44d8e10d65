#!/bin/bash
# Build the sandvm guest kernel (vmlinux for PVH entry, bzImage for the
# Linux boot protocol) and place both in OUTDIR.
#
# usage: kernel-config/build.sh OUTDIR
#
# The result is cached under
#   ${SANDVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sandvm}/kernel/<hash>/
# where <hash> is the sha256 of microvm.config, this script and the identity
# (name, size, mtime) of the source tarball, so any change to what goes into
# the kernel gives a fresh build while an unchanged tree costs ~nothing.
#
# Environment:
#   SANDVM_KERNEL_SRC      source tarball (default /usr/src/linux-source-6.1.tar.xz)
#   SANDVM_KERNEL_VERBOSE  1 streams the make output instead of logging it
#   SANDVM_CACHE           cache root (see above)

set -euo pipefail

say() { printf 'sandvm-kernel: %s\n' "$*" >&2; }
die() { say "error: $*"; exit 1; }

[ $# -eq 1 ] || { echo "usage: $0 OUTDIR" >&2; exit 2; }
outdir=$1

here=$(cd "$(dirname "$0")" && pwd)
fragment=$here/microvm.config
tarball=${SANDVM_KERNEL_SRC:-/usr/src/linux-source-6.1.tar.xz}
cache_root=${SANDVM_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sandvm}

[ -f "$fragment" ] || die "missing $fragment"
[ -f "$tarball" ] || die "missing kernel source $tarball (apt-get install linux-source-6.1)"

# The tarball is identified by name, size and mtime rather than by content:
# hashing 130 MiB of xz on every call would cost more than the whole warm
# path is allowed to take.
tar_id=$(stat -L -c '%n %s %Y' "$tarball")
key=$( { cat "$fragment" "$here/build.sh"; echo "$tar_id"; } | sha256sum | cut -d' ' -f1)
src_key=$(echo "$tar_id" | sha256sum | cut -c1-16)

kdir=$cache_root/kernel/$key
srcdir=$cache_root/kernel/src/$src_key
objdir=$kdir/build
done_stamp=$kdir/complete

install_outputs() {
	mkdir -p "$outdir"
	local f
	for f in vmlinux bzImage kernel.config; do
		# Copy through a temporary name so a reader of OUTDIR never sees a
		# half-written kernel; -p keeps the mtime so make rules downstream
		# do not rebuild on every warm run.
		cp -p "$kdir/out/$f" "$outdir/.$f.tmp"
		mv -f "$outdir/.$f.tmp" "$outdir/$f"
	done
}

if [ -f "$done_stamp" ]; then
	install_outputs
	say "cached kernel $kdir"
	exit 0
fi

mkdir -p "$kdir"
# Serialise concurrent builders of the same configuration; the second one
# waits and then finds the stamp.
exec 9>"$kdir/lock"
flock 9
if [ -f "$done_stamp" ]; then
	install_outputs
	say "cached kernel $kdir"
	exit 0
fi

unpack_source() {
	[ -f "$srcdir/complete" ] && return 0
	say "unpacking $tarball into $srcdir (once)"
	mkdir -p "$(dirname "$srcdir")"
	exec 8>"$srcdir.lock"
	flock 8
	if [ ! -f "$srcdir/complete" ]; then
		rm -rf "$srcdir.tmp"
		mkdir -p "$srcdir.tmp"
		tar -xJf "$tarball" -C "$srcdir.tmp" --strip-components=1
		touch "$srcdir.tmp/complete"
		rm -rf "$srcdir"
		mv "$srcdir.tmp" "$srcdir"
	fi
	exec 8>&-
}

log=$kdir/build.log
run_make() {
	# A fixed identity keeps the version banner independent of who built it.
	local env=(KBUILD_BUILD_USER=sandvm KBUILD_BUILD_HOST=sandvm
		   "KBUILD_BUILD_TIMESTAMP=1970-01-01")
	if [ "${SANDVM_KERNEL_VERBOSE:-0}" = 1 ]; then
		env "${env[@]}" make -C "$srcdir" O="$objdir" ARCH=x86_64 "$@" >&2
	elif ! env "${env[@]}" make -C "$srcdir" O="$objdir" ARCH=x86_64 "$@" >>"$log" 2>&1; then
		tail -n 40 "$log" >&2
		die "make $* failed (full log: $log)"
	fi
}

# Every explicit line of the fragment must survive olddefconfig: Kconfig
# silently drops symbols whose dependencies are unmet, and a kernel that
# quietly lacks, say, virtio-mmio only fails much later at boot.
verify_config() {
	local config=$1 line sym missing=()
	while IFS= read -r line; do
		case $line in
		CONFIG_*=*)
			grep -qxF -- "$line" "$config" || missing+=("$line")
			;;
		"# CONFIG_"*" is not set")
			sym=${line#\# }
			sym=${sym%% *}
			grep -q "^$sym=" "$config" && missing+=("$line")
			;;
		esac
	done <"$fragment"
	if [ ${#missing[@]} -ne 0 ]; then
		say "these fragment lines did not stick in $config:"
		for line in "${missing[@]}"; do
			sym=${line#\# }
			sym=${sym%%[= ]*}
			printf '  want %-40s have %s\n' "$line" \
				"$(grep -E "^$sym=|^# $sym is not set" "$config" || echo '(absent)')" >&2
		done
		die "kernel configuration does not match $fragment"
	fi
}

configure() {
	say "configuring (tinyconfig + $(basename "$fragment"))"
	mkdir -p "$objdir"
	: >"$log"
	run_make tinyconfig
	(cd "$srcdir" && ./scripts/kconfig/merge_config.sh -m -O "$objdir" \
		"$objdir/.config" "$fragment") >>"$log" 2>&1 ||
		die "merge_config.sh failed (log: $log)"
	run_make olddefconfig
	verify_config "$objdir/.config"
}

build() {
	local start=$SECONDS
	say "building vmlinux bzImage with -j$(nproc) (log: $log); this takes minutes"
	run_make -j"$(nproc)" vmlinux bzImage
	say "built in $((SECONDS - start)) s"
}

collect() {
	rm -rf "$kdir/out.tmp" "$kdir/out"
	mkdir -p "$kdir/out.tmp"
	# Only debug info goes: the PVH entry point lives in an ELF note and the
	# symbol table is handy when reading a guest crash.
	objcopy --strip-debug "$objdir/vmlinux" "$kdir/out.tmp/vmlinux"
	cp "$objdir/arch/x86/boot/bzImage" "$kdir/out.tmp/bzImage"
	cp "$objdir/.config" "$kdir/out.tmp/kernel.config"
	mv "$kdir/out.tmp" "$kdir/out"
}

unpack_source
configure
build
collect
# The stamp is written last, so an interrupted run leaves no stamp and the
# next run configures and builds again (make resumes what it can).
touch "$done_stamp"
install_outputs
say "kernel ready in $outdir (cache $kdir)"
