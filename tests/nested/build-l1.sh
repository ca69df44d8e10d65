#!/usr/bin/env bash
# Builds the L1 kernel + initramfs that tests/nested/run boots under QEMU TCG, or finds them in the
# cache. Prints the directory holding kernel and initramfs.cpio on stdout; progress goes to stderr.
#
# The kernel is Debian's current generic one (the "cloud" flavour has no 9p). The initramfs holds
# static busybox, tests/nested/l1-init as /init, and the modules below plus their dependencies,
# decompressed so that busybox insmod can load them, and a load order taken from modules.dep.
set -euo pipefail

# Modules L1 loads at boot, by name ('-' and '_' are the same). Dependencies are added from the
# kernel's modules.dep; built-in ones are skipped. Add what new tests need here.
L1_MODULES="kvm_amd virtio_pci 9pnet_virtio 9p virtio_console tun veth bridge crc32c_generic nf_tables nft_chain_nat nft_masq nft_nat vhost_net vhost_vsock"

# The metapackage that names the current generic kernel package.
KERNEL_META=linux-image-amd64

here=$(cd -P -- "$(dirname -- "${BASH_SOURCE[0]}")" && pwd)
cache=${SANDVM_CACHE:-${XDG_CACHE_HOME:-${HOME:?HOME is not set}/.cache}/sandvm}/l1
apt_updated=0

log() { printf 'build-l1: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

need_tools() {
	local t
	for t in "$@"; do
		command -v "$t" >/dev/null 2>&1 ||
			die "'$t' is missing (scripts/install-deps.sh installs what is needed)"
	done
}

apt_update() {
	[ "$apt_updated" -eq 0 ] || return 1
	apt_updated=1
	if [ "$(id -u)" -ne 0 ]; then
		log "package lists look stale; run 'apt-get update' as root"
		return 1
	fi
	log "running apt-get update"
	apt-get update -q >&2 || return 1
}

# A fingerprint of the apt package lists, so that a lookup is only repeated after they change:
# apt-cache costs close to a second per call here, more than the rest of a cached run.
lists_stamp() {
	find /var/lib/apt/lists -maxdepth 1 -name '*_Packages*' -printf '%f %s %T@\n' 2>/dev/null |
		sort | sha256sum | cut -c1-16
}

# Sets pkg and ver to the kernel package the metapackage currently depends on, and its version.
lookup_kernel() {
	pkg=$(apt-cache depends "$KERNEL_META" 2>/dev/null |
		awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; exit }')
	[ -n "$pkg" ] || return 1
	ver=$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | awk '$1 == "Version:" { print $2; exit }')
	[ -n "$ver" ]
}

resolve_kernel() {
	local stamp memo=$cache/resolved s p v
	stamp=$(lists_stamp)
	if [ -r "$memo" ] && read -r s p v <"$memo" && [ "$s" = "$stamp" ] && [ -n "$v" ]; then
		pkg=$p ver=$v
		return 0
	fi
	if ! lookup_kernel; then
		if apt_update && lookup_kernel; then
			stamp=$(lists_stamp)
		elif [ -r "$memo" ] && read -r s p v <"$memo" && [ -n "$v" ]; then
			log "warning: cannot look up $KERNEL_META; using $p $v from an earlier lookup"
			pkg=$p ver=$v
			return 0
		else
			die "cannot find the kernel package that $KERNEL_META depends on (is apt usable?)"
		fi
	fi
	printf '%s %s %s\n' "$stamp" "$pkg" "$ver" >"$memo.$$"
	mv -f "$memo.$$" "$memo"
}

# Downloads exactly one package version into $cache/deb (kept, so that a change to the init script
# or the module list does not download the kernel again). Sets deb.
download_kernel() {
	local dl f opts=()
	deb=$cache/deb/${pkg}_${ver//[^A-Za-z0-9.+~-]/_}.deb
	[ -s "$deb" ] && return 0
	mkdir -p "$cache/deb"
	dl=$(mktemp -d "$cache/deb/.dl.XXXXXX")
	# The cache usually lives in a home that apt's unprivileged download user cannot write to.
	[ "$(id -u)" -ne 0 ] || opts=(-o APT::Sandbox::User=root)
	log "downloading $pkg $ver"
	if ! (cd "$dl" && apt-get download -q "${opts[@]}" "$pkg=$ver" >&2); then
		if apt_update && lookup_kernel; then
			deb=$cache/deb/${pkg}_${ver//[^A-Za-z0-9.+~-]/_}.deb
			(cd "$dl" && apt-get download -q "${opts[@]}" "$pkg=$ver" >&2) ||
				{ rm -rf "$dl"; die "apt-get download $pkg=$ver failed"; }
		else
			rm -rf "$dl"
			die "apt-get download $pkg=$ver failed"
		fi
	fi
	for f in "$dl"/*.deb; do
		[ -f "$f" ] || { rm -rf "$dl"; die "apt-get download left no .deb"; }
		mv -f "$f" "$deb"
	done
	rm -rf "$dl"
	# Older kernels' packages are of no further use.
	find "$cache/deb" -maxdepth 1 -name '*.deb' ! -path "$deb" -delete
}

# Prints the relative paths (as in modules.dep) of L1_MODULES and their dependencies, each after
# everything it depends on.
module_load_order() {
	local moddir=$1
	awk -v want="$L1_MODULES" '
		function norm(p, n) {
			n = p
			sub(/.*\//, "", n)
			sub(/\.ko(\.(xz|zst|gz))?$/, "", n)
			gsub(/-/, "_", n)
			return n
		}
		function visit(n, d, k, i) {
			if (n in done)
				return
			if (!(n in path)) {
				if (!(n in builtin))
					missing = missing " " n
				done[n] = 1
				return
			}
			done[n] = 1
			k = split(deps[n], d, " ")
			for (i = 1; i <= k; i++)
				visit(d[i])
			print path[n]
		}
		FILENAME ~ /modules\.builtin$/ { builtin[norm($1)] = 1; next }
		{
			p = $1
			sub(/:$/, "", p)
			n = norm(p)
			path[n] = p
			deps[n] = ""
			for (i = 2; i <= NF; i++)
				deps[n] = deps[n] " " norm($i)
		}
		END {
			k = split(want, w, " ")
			for (i = 1; i <= k; i++) {
				n = w[i]
				gsub(/-/, "_", n)
				visit(n)
			}
			if (missing != "") {
				print "unknown modules:" missing > "/dev/stderr"
				exit 1
			}
		}
	' "$moddir/modules.builtin" "$moddir/modules.dep"
}

# Reads a little-endian unsigned integer of $3 bytes at offset $2 of file $1.
read_le() {
	od -A n -t "u$3" -j "$2" -N "$3" --endian=little "$1" | tr -d ' '
}

# Writes to $2 the ELF kernel that bzImage $1 carries compressed, if the kernel can be entered
# through PVH (the ELF note XEN_ELFNOTE_PHYS32_ENTRY, type 18). QEMU then loads it directly: under
# TCG that skips about 3 s of firmware and in-guest decompression per boot. Fails otherwise.
extract_pvh_elf() {
	local bz=$1 elf=$2 setup_sects payload_offset payload_length start magic
	command -v readelf >/dev/null 2>&1 || return 1
	[ "$(od -A n -c -j 514 -N 4 "$bz" | tr -d ' ')" = HdrS ] || return 1
	setup_sects=$(read_le "$bz" 497 1)
	payload_offset=$(read_le "$bz" 584 4)
	payload_length=$(read_le "$bz" 588 4)
	[ "$setup_sects" -gt 0 ] && [ "$payload_length" -gt 0 ] || return 1
	start=$(((setup_sects + 1) * 512 + payload_offset))
	magic=$(od -A n -t x1 -j "$start" -N 4 "$bz" | tr -d ' ')
	local decompress
	case $magic in
	fd377a58) decompress="xz -dc --single-stream" ;;
	28b52ffd) decompress="zstd -qdc" ;;
	1f8b*) decompress="gzip -dc" ;;
	*) return 1 ;;
	esac
	# The payload ends with the uncompressed size (4 bytes), which some decoders call trailing
	# garbage: their exit status says nothing, the size does.
	tail -c "+$((start + 1))" "$bz" | head -c "$payload_length" | $decompress >"$elf" 2>/dev/null ||
		true
	[ "$(stat -c %s "$elf")" = "$(read_le "$bz" $((start + payload_length - 4)) 4)" ] || return 1
	[ "$(od -A n -c -N 4 "$elf" | tr -d ' ')" = 177ELF ] || return 1
	readelf -n "$elf" 2>/dev/null | grep -q 'Xen.*(0x00000012)'
}

build() {
	local out=$1 work root kver moddir m name
	work=$(mktemp -d "$cache/.build.XXXXXX")
	root=$work/pkg
	log "unpacking $(basename "$deb")"
	dpkg-deb -x "$deb" "$root"
	kver=${pkg#linux-image-}
	moddir=$root/lib/modules/$kver
	[ -d "$moddir" ] || die "$pkg has no lib/modules/$kver"
	[ -f "$root/boot/vmlinuz-$kver" ] || die "$pkg has no boot/vmlinuz-$kver"
	# The package leaves modules.dep to its postinst.
	[ -f "$moddir/modules.dep" ] || depmod -b "$root" "$kver"

	local init=$work/initramfs
	mkdir -p "$init"/{bin,dev,proc,sys,tmp,newroot,sandvm,lib/modules}
	cp "$busybox" "$init/bin/busybox"
	for m in $("$busybox" --list); do
		[ "$m" = busybox ] || ln -s busybox "$init/bin/$m"
	done
	cp "$here/l1-init" "$init/init"
	chmod 0755 "$init/init"

	: >"$init/lib/modules/load-order"
	module_load_order "$moddir" >"$work/order" || die "module list does not match $pkg"
	while read -r m; do
		name=$(basename "$m")
		name=${name%.xz}
		name=${name%.zst}
		name=${name%.gz}
		case $m in
		*.ko.xz) xz -dc "$moddir/$m" >"$init/lib/modules/$name" ;;
		*.ko.zst) zstd -qdc "$moddir/$m" >"$init/lib/modules/$name" ;;
		*.ko.gz) gzip -dc "$moddir/$m" >"$init/lib/modules/$name" ;;
		*) cp "$moddir/$m" "$init/lib/modules/$name" ;;
		esac
		echo "$name" >>"$init/lib/modules/load-order"
	done <"$work/order"

	mkdir -p "$work/out"
	# Uncompressed: decompressing under TCG would cost more boot time than reading a few MiB.
	(cd "$init" && find . -print0 | LC_ALL=C sort -z |
		cpio --null -o -H newc -R 0:0 --quiet) >"$work/out/initramfs.cpio"
	if extract_pvh_elf "$root/boot/vmlinuz-$kver" "$work/out/vmlinux"; then
		ln -s vmlinux "$work/out/kernel"
	else
		log "cannot boot $pkg through PVH; falling back to the slower bzImage boot"
		rm -f "$work/out/vmlinux"
		cp "$root/boot/vmlinuz-$kver" "$work/out/vmlinuz"
		ln -s vmlinuz "$work/out/kernel"
	fi
	printf '%s\n' "$kver" >"$work/out/kernel-release"
	printf '%s %s\n' "$pkg" "$ver" >"$work/out/package"
	tr '\n' ' ' <"$init/lib/modules/load-order" | sed 's/ $/\n/' >"$work/out/modules"
	mv "$work/out" "$out"
	rm -rf "$work"
	log "built $out ($(du -sh "$out/initramfs.cpio" | cut -f1) initramfs; modules: $(cat "$out/modules"))"
}

main() {
	need_tools apt-cache apt-get sha256sum awk flock
	mkdir -p "$cache"
	local key out
	resolve_kernel
	key=$(cat "$here/build-l1.sh" "$here/l1-init" | sha256sum | cut -c1-12)
	out=$cache/${pkg}_${ver//[^A-Za-z0-9.+~-]/_}_$key
	if [ ! -d "$out" ]; then
		exec 9>"$cache/.lock"
		flock 9
		if [ ! -d "$out" ]; then
			need_tools dpkg-deb cpio depmod xz
			busybox=$(command -v busybox) || die "busybox is missing (install busybox-static)"
			# The initramfs has no libc: a dynamically linked busybox cannot run there.
			if ldd "$busybox" >/dev/null 2>&1; then
				die "$busybox is dynamically linked; install busybox-static"
			fi
			# Left by builds or downloads that were interrupted.
			rm -rf "$cache"/.build.* "$cache"/deb/.dl.*
			download_kernel
			build "$out"
		fi
		exec 9>&-
	fi
	# Builds untouched for a day belong to older kernels or older versions of these scripts.
	touch "$out"
	find "$cache" -mindepth 1 -maxdepth 1 -type d -name 'linux-image-*' ! -path "$out" -mmin +1440 \
		-exec rm -rf {} +
	printf '%s\n' "$out"
}

main "$@"
