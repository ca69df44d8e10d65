#ifndef SANDVM_VMM_BACKENDS_TAP_H
#define SANDVM_VMM_BACKENDS_TAP_H

#include <stdbool.h>

/*
 * A tap network device as the host end of a sandbox's virtio-net: frames
 * without packet information, non-blocking, and with a 12-byte virtio-net
 * header in front of each (IFF_VNET_HDR, TUNSETVNETHDRSZ) when the device
 * is to offer checksum and segmentation offloads. The device is made (or a
 * persistent one attached) by name; whoever owns the sandbox sets its
 * host-side address and routes.
 */

/* The size of the header with IFF_VNET_HDR: struct virtio_net_hdr_v1, num_buffers included. */
#define TAP_VNET_HDR_LEN 12

/*
 * Opens (or attaches to) the tap NAME with IFF_VNET_HDR, the header size
 * set and no offloads on: 0 and *fd, or -errno (-EPERM without
 * CAP_NET_ADMIN, -EBUSY when another process holds it).
 */
int tap_open(const char *name, int *fd);

/*
 * Takes a tap someone else opened and attached (TUNSETIFF) as tap_open
 * would, or as taps were before offloads (no vnet header): checked
 * (TUNGETIFF: a tap, no packet information), made non-blocking and, with
 * IFF_VNET_HDR (*vnet_hdr true), given the header size and no offloads.
 * The descriptor stays the caller's. 0 or -errno (-EINVAL: not such a tap).
 */
int tap_check_fd(int fd, bool *vnet_hdr);

/*
 * TUNSETOFFLOAD: which offloaded frames (TUN_F_* of <linux/if_tun.h>) the
 * host may hand the reader: partial checksums, TCP segments up to 64 KiB.
 * 0 or -errno.
 */
int tap_set_offload(int fd, unsigned tun_flags);

#endif
