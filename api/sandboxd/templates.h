#ifndef SANDVM_API_SANDBOXD_TEMPLATES_H
#define SANDVM_API_SANDBOXD_TEMPLATES_H

/*
 * Warm-start templates (docs/architecture.md, "Templates"): per shape of
 * sandbox (kernel, image, VMM binary, vCPUs, memory, a network device or
 * not, the spare drives' serials) one snapshot of a VM booted with a
 * neutral identity and taken once its agent answered, in
 * STATE_DIR/templates/KEY/ (state, memory, meta.json; root's, 0600). Built
 * lazily by the first create of a shape, which waits for it, as does every
 * create of that shape meanwhile: one build, not N. Rebuilt when the kernel,
 * the image (which holds the agent) or the VMM changes (device, inode, size,
 * mtime); a build that failed is not retried until one of them changes or
 * the daemon restarts. Touched from the event loop thread only.
 */

#include <stdbool.h>
#include <stddef.h>

struct sandboxd;

#define TEMPLATES_DIR "templates" /* in the state directory */
#define TEMPLATES_KEY_LEN 16      /* hex characters of a key */

struct template_shape {
	const char *kernel, *initrd, *rootfs; /* resolved paths, one of initrd and rootfs */
	unsigned cpus, memory_mib;
	bool net;                         /* a network device (the template's blocks everything) */
	const char *const *spare_drives;  /* NULL-terminated serials, may be NULL */
};

/* A create waiting for a template; done is called once, unless cancelled first. */
struct template_wait {
	struct template_wait *next;
	/* r 0: dir is the template to restore from; -errno: none, why says so (cold boot). */
	void (*done)(struct template_wait *w, int r, const char *dir, const char *why);
};

/*
 * The template of shape: 0 with its directory in dir when it is ready; 1
 * when it is being built (w->done comes later); -errno with why when there
 * is none to be had (the caller boots cold).
 */
int templates_get(struct sandboxd *d, const struct template_shape *shape, struct template_wait *w, char *dir,
		  size_t cap, char *why, size_t whylen);
void templates_cancel(struct sandboxd *d, struct template_wait *w);
/* A restore from dir failed: the template is deleted, the next create of its shape builds it again. */
void templates_discard(struct sandboxd *d, const char *dir, const char *why);
/* At the daemon's end: builds are abandoned, their VMMs killed (a template VM is never adopted). */
void templates_shutdown(struct sandboxd *d);

/* ---- pure parts ---- */

/* The key of a shape: the first TEMPLATES_KEY_LEN hex characters of a SHA-256 over its canonical text. */
void templates_key(const struct template_shape *shape, const char *vmm, char key[TEMPLATES_KEY_LEN + 1]);

#endif
