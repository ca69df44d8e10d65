#ifndef SANDVM_VMM_BACKENDS_TAP_H
#define SANDVM_VMM_BACKENDS_TAP_H

/*
 * A tap network device as the host end of a sandbox's virtio-net: frames
 * without packet information or vnet headers, non-blocking. The device is
 * made (or a persistent one attached) by name; whoever owns the sandbox sets
 * its host-side address and routes.
 */

/* 0 and *fd, or -errno (-EPERM without CAP_NET_ADMIN, -EBUSY when another process holds it). */
int tap_open(const char *name, int *fd);

/*
 * Takes a tap someone else opened and attached (TUNSETIFF) as the same kind
 * tap_open makes: checked (TUNGETIFF: a tap, no packet information, no vnet
 * header) and made non-blocking. The descriptor stays the caller's. 0 or
 * -errno (-EINVAL: not such a tap).
 */
int tap_check_fd(int fd);

#endif
