#ifndef SANDVM_API_SANDBOXD_VMM_CONTROL_H
#define SANDVM_API_SANDBOXD_VMM_CONTROL_H

/*
 * One request to a VMM's control socket (docs/vmm.md), from a worker
 * thread: a JSON line out, a JSON line back, within one deadline.
 */

#include <stddef.h>

#define VMM_CONTROL_TIMEOUT_MS 10000

/*
 * Sends request (one line) to the control socket at socket_path and reads
 * the reply line into reply (NUL-terminated, cut at cap - 1 bytes). 0, or
 * -errno: -EINVAL or -ENAMETOOLONG for bad arguments (nothing is opened),
 * -ETIMEDOUT when no whole line came back within timeout_ms (all of it, not
 * per read), the connect's error when the socket takes no connection
 * (-ENOENT, -ECONNREFUSED), -EIO when the VMM closed without a reply.
 */
int vmm_control_call_timeout(const char *socket_path, const char *request, char *reply, size_t cap,
			     int timeout_ms);
/* The same with VMM_CONTROL_TIMEOUT_MS. */
int vmm_control_call(const char *socket_path, const char *request, char *reply, size_t cap);

/*
 * The same carrying nfds (at most VMM_CONTROL_MAX_FDS) descriptors with the
 * request (SCM_RIGHTS), which its ops name by index ("fd": 0, ...). The
 * descriptors stay the caller's: the VMM gets copies.
 */
#define VMM_CONTROL_MAX_FDS 4
int vmm_control_call_fds(const char *socket_path, const char *request, const int *fds, unsigned nfds, char *reply,
			 size_t cap);
/* The same within timeout_ms (a snapshot writes all of guest RAM: longer than a plain op). */
int vmm_control_call_fds_timeout(const char *socket_path, const char *request, const int *fds, unsigned nfds,
				 char *reply, size_t cap, int timeout_ms);

#endif
