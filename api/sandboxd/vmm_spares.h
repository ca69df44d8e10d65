#ifndef SANDVM_API_SANDBOXD_VMM_SPARES_H
#define SANDVM_API_SANDBOXD_VMM_SPARES_H

/*
 * Spare VMMs: a few VMM processes started ahead of need (`vmm --args-from`,
 * lib/spare_args.h), their program and libraries loaded, each waiting on a
 * socket for a command line. A launch takes one (vmm_launcher.c) instead of
 * starting a process, which in the nested runner saves the exec and the
 * dynamic loader's 50-200 ms of a warm start; the pool starts a replacement
 * a moment later, off the create's path. A spare whose program changed on
 * disk since it started is never used (an upgraded VMM runs at once). A
 * spare that dies unused is reaped and replaced; after a few such deaths in
 * a row the pool stops (logged) and launches start fresh processes, as
 * without a pool. Event loop thread only.
 */

#include <uv.h>

#define VMM_SPARES_MAX 16u

struct vmm_spares;

/* A spare taken out of the pool: the caller owns its pidfd and socket (and must reap it). */
struct vmm_spare {
	int pid;
	int pidfd;
	int sock;
};

/* count (1..VMM_SPARES_MAX) spares of the program vmm, the first started at once. 0 or -errno. */
int vmm_spares_new(uv_loop_t *loop, const char *vmm, unsigned count, struct vmm_spares **out);

/* A live spare of program, unchanged on disk since it started: 0 with *out, or -ENOENT. */
int vmm_spares_take(struct vmm_spares *s, const char *program, struct vmm_spare *out);

/* Ready spares now (for tests and logs). */
unsigned vmm_spares_ready(const struct vmm_spares *s);

/* Ends the pool: each spare killed and reaped, handles closed, s freed on the loop. */
void vmm_spares_free(struct vmm_spares *s);

#endif
