/*
 * Pause, resume, snapshot and restore of a whole VM (docs/vmm.md,
 * "Snapshots"): the vCPUs parked out of KVM_RUN, KVM's state and the
 * devices' into one checked state file (snapshot/format.h), guest RAM into
 * a sparse memory file, and the way back.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "arch/x86/cpu_state.h"
#include "fd_spec.h"
#include "log.h"
#include "parse.h"
#include "snapshot/format.h"
#include "snapshot/mem_seal.h"
#include "snapshot/state_seal.h"
#include "vcpu.h"
#include "vm.h"

#define PAGE 4096u

/* ---- pause ---- */

void vm_vcpu_park_if_paused(struct vm *vm, struct vcpu *v)
{
	/*
	 * KVM_RUN with immediate_exit completes the exit KVM waits on (the
	 * data of an MMIO or port read goes into the registers) and returns
	 * without entering the guest, so the state read while parked is whole.
	 */
	__atomic_store_n(&v->run->immediate_exit, 1, __ATOMIC_SEQ_CST);
	if (ioctl(v->fd, KVM_RUN, 0) == 0) {
		/* Not expected with immediate_exit; the exit is handled on the next turn anyway. */
	}
	pthread_mutex_lock(&vm->pause_lock);
	vm->parked++;
	pthread_cond_broadcast(&vm->pause_cond);
	while (atomic_load(&vm->pause_requested) && atomic_load(&vm->stop_reason) == VM_RUNNING)
		pthread_cond_wait(&vm->pause_cond, &vm->pause_lock);
	vm->parked--;
	pthread_mutex_unlock(&vm->pause_lock);
	/* A stop or a new pause after this store kicks again; one before it is seen by the loop's checks. */
	__atomic_store_n(&v->run->immediate_exit, 0, __ATOMIC_SEQ_CST);
}

bool vm_paused(struct vm *vm)
{
	bool all;

	pthread_mutex_lock(&vm->pause_lock);
	all = atomic_load(&vm->pause_requested) && vm->parked == vm->nvcpus;
	pthread_mutex_unlock(&vm->pause_lock);
	return all;
}

int vm_pause(struct vm *vm)
{
	struct timespec deadline;
	int r = 0;

	if (atomic_load(&vm->stop_reason) != VM_RUNNING)
		return -ESHUTDOWN;
	if (vm->nvcpus == 0)
		return -EAGAIN;
	atomic_store(&vm->pause_requested, true);
	for (unsigned i = 0; i < vm->nvcpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	clock_gettime(CLOCK_REALTIME, &deadline);
	deadline.tv_sec += 1;
	pthread_mutex_lock(&vm->pause_lock);
	/*
	 * A vCPU may be waiting for this thread (a device reset runs on the main
	 * loop): then it cannot park, and the pause gives up rather than wait.
	 */
	while (vm->parked < vm->nvcpus && atomic_load(&vm->stop_reason) == VM_RUNNING && r == 0)
		r = -pthread_cond_timedwait(&vm->pause_cond, &vm->pause_lock, &deadline);
	if (vm->parked == vm->nvcpus && atomic_load(&vm->stop_reason) == VM_RUNNING)
		r = 0;
	else if (r == 0 || r == -ETIMEDOUT)
		r = atomic_load(&vm->stop_reason) != VM_RUNNING ? -ESHUTDOWN : -EBUSY;
	pthread_mutex_unlock(&vm->pause_lock);
	if (r < 0)
		vm_resume(vm);
	return r;
}

void vm_resume(struct vm *vm)
{
	/*
	 * While every vCPU is parked, tell each one's kvmclock that the time it
	 * did not run was a pause, not a lock-up (the guest's watchdogs). Only
	 * then: a vCPU ioctl waits for a vCPU that is in KVM_RUN, and an idle
	 * guest may stay there a long time.
	 */
	if (vm_paused(vm))
		for (unsigned i = 0; i < vm->nvcpus; i++)
			x86_vcpu_kvmclock_ctrl(vm->vcpus[i].fd);
	pthread_mutex_lock(&vm->pause_lock);
	atomic_store(&vm->pause_requested, false);
	pthread_cond_broadcast(&vm->pause_cond);
	pthread_mutex_unlock(&vm->pause_lock);
}

/* ---- snapshot ---- */

static void fill_machine(const struct vm *vm, struct snap_machine *m)
{
	struct timespec now;

	memset(m, 0, sizeof(*m));
	m->cpus = vm->nvcpus;
	m->nregions = vm->mem.nregions;
	m->memory_bytes = vm->mem.total;
	for (unsigned i = 0; i < vm->mem.nregions; i++) {
		m->region_gpa[i] = vm->mem.regions[i].gpa;
		m->region_size[i] = vm->mem.regions[i].size;
	}
	m->nvirtio = vm->nvirtio;
	for (unsigned i = 0; i < vm->nvirtio; i++)
		m->device_id[i] = vm->virtio[i]->dev.ops->device_id;
	m->flags = vm->xsave_size ? SNAP_MACHINE_HAS_XSAVE : 0;
	clock_gettime(CLOCK_REALTIME, &now);
	m->snapshot_unix_ns = (uint64_t)now.tv_sec * 1000000000ull + (uint64_t)now.tv_nsec;
}

static int write_all(int fd, const void *buf, size_t len, off_t off)
{
	const uint8_t *p = buf;

	while (len) {
		ssize_t n = pwrite(fd, p, len, off);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return n < 0 ? -errno : -EIO;
		p += n;
		len -= (size_t)n;
		off += n;
	}
	return 0;
}

static bool page_is_zero(const uint8_t *p)
{
	const uint64_t *w = (const uint64_t *)(const void *)p;
	uint64_t acc = 0;

	for (unsigned i = 0; i < PAGE / 8; i++)
		acc |= w[i];
	return acc == 0;
}

/* Guest RAM, regions one after another; runs of non-zero pages are written, zero pages stay holes. */
static int write_memory(const struct vm *vm, int fd)
{
	off_t base = 0;
	int r;

	if (ftruncate(fd, 0) < 0 || ftruncate(fd, (off_t)vm->mem.total) < 0)
		return -errno;
	for (unsigned i = 0; i < vm->mem.nregions; i++) {
		const struct guest_mem_region *g = &vm->mem.regions[i];
		uint64_t off = 0;

		while (off < g->size) {
			uint64_t start, end;

			while (off < g->size && page_is_zero(g->host + off))
				off += PAGE;
			start = off;
			/* Runs of at most 8 MiB: one write never holds too much at once. */
			while (off < g->size && off - start < (8u << 20) && !page_is_zero(g->host + off))
				off += PAGE;
			end = off;
			if (end > start) {
				r = write_all(fd, g->host + start, end - start, base + (off_t)start);
				if (r < 0)
					return r;
			}
		}
		base += (off_t)g->size;
	}
	return fdatasync(fd) < 0 ? -errno : 0;
}

static int build_state(struct vm *vm, struct snap_writer *w, char *err, size_t errlen)
{
	struct snap_machine m;
	struct snap_serial ser;
	int r;

	fill_machine(vm, &m);
	snap_writer_init(w);
	snap_put(w, SNAP_MACHINE, 0, &m, sizeof(m));
	r = x86_vm_state_save(vm->vm_fd, w, err, errlen);
	for (unsigned i = 0; r == 0 && i < vm->nvcpus; i++)
		r = x86_vcpu_state_save(vm->vcpus[i].fd, i, vm->xsave_size, vm->xsave.xcr0 != 0, vm->msrs, w, err,
					errlen);
	for (unsigned i = 0; r == 0 && i < vm->nvirtio; i++) {
		struct snap_virtio v;

		virtio_mmio_save(vm->virtio[i], &v);
		snap_put(w, SNAP_DEV_VIRTIO, i, &v, sizeof(v));
	}
	if (r == 0) {
		serial_save(&vm->serial, &ser);
		snap_put(w, SNAP_DEV_SERIAL, 0, &ser, sizeof(ser));
	}
	if (r == 0 && snap_writer_finish(w) < 0)
		r = sv_errf(w->err, err, errlen, "snapshot: building the state file: %s", strerror(-w->err));
	return r;
}

int vm_snapshot(struct vm *vm, int state_fd, int mem_fd, const uint8_t *memory_key, uint64_t *mem_bytes, char *err,
		size_t errlen)
{
	struct snap_writer w = { 0 };
	uint8_t *sealed = NULL;
	int r;

	if (!vm_paused(vm)) {
		r = vm_pause(vm);
		if (r < 0)
			return sv_errf(r, err, errlen, "snapshot: %s",
				       r == -EBUSY ? "a vCPU did not stop within a second; try again"
						   : "the VM is stopping");
	}
	r = build_state(vm, &w, err, errlen);
	if (r == 0 && memory_key) {
		/* Registers are sealed like RAM: XSAVE holds what the guest last had in its vector registers. */
		sealed = malloc(w.len + STATE_SEAL_OVERHEAD);
		r = !sealed ? -ENOMEM : state_seal(memory_key, w.buf, w.len, sealed);
		if (r < 0)
			sv_errf(r, err, errlen, "snapshot: sealing the state file: %s", strerror(-r));
	}
	if (r == 0) {
		r = ftruncate(state_fd, 0) < 0 ? -errno
		    : sealed		   ? write_all(state_fd, sealed, w.len + STATE_SEAL_OVERHEAD, 0)
					   : write_all(state_fd, w.buf, w.len, 0);
		if (r == 0 && fdatasync(state_fd) < 0)
			r = -errno;
		if (r < 0)
			sv_errf(r, err, errlen, "snapshot: writing the state file: %s", strerror(-r));
	}
	if (r == 0 && memory_key) {
		char why[256] = "";

		r = mem_seal_write(&vm->mem, mem_fd, memory_key, why, sizeof(why));
		if (r < 0)
			sv_errf(r, err, errlen, "snapshot: writing the sealed memory file: %s", why);
	} else if (r == 0) {
		r = write_memory(vm, mem_fd);
		if (r < 0)
			sv_errf(r, err, errlen, "snapshot: writing the memory file: %s", strerror(-r));
	}
	if (sealed) {
		OPENSSL_cleanse(sealed, w.len + STATE_SEAL_OVERHEAD);
		free(sealed);
	}
	OPENSSL_cleanse(w.buf, w.len);
	snap_writer_free(&w);
	*mem_bytes = vm->mem.total;
	return r;
}

/* ---- restore ---- */

/* The sealed state file in vm->restore_buf (*len bytes) replaced by what it holds. */
static int open_sealed_state(struct vm *vm, size_t *len, char *err, size_t errlen)
{
	const struct vmm_config *cfg = vm->cfg;
	uint8_t *clear;
	size_t clear_len = 0;
	char why[160] = "";
	int r;

	if (!cfg->has_memory_key)
		return sv_errf(-EINVAL, err, errlen,
			       "snapshot: state file '%s' is sealed and no --restore-memory-key was given",
			       cfg->restore_state);
	clear = *len > STATE_SEAL_OVERHEAD ? malloc(*len - STATE_SEAL_OVERHEAD) : NULL;
	if (!clear)
		return sv_errf(*len > STATE_SEAL_OVERHEAD ? -ENOMEM : -EINVAL, err, errlen,
			       "snapshot: state file '%s': %s", cfg->restore_state,
			       *len > STATE_SEAL_OVERHEAD ? "out of memory" : "a sealed file too short to hold anything");
	r = state_unseal(cfg->memory_key, vm->restore_buf, *len, clear, &clear_len, why, sizeof(why));
	if (r < 0) {
		free(clear);
		return sv_errf(r == -EIO ? -EIO : -EINVAL, err, errlen, "snapshot: state file '%s': %s",
			       cfg->restore_state, why);
	}
	free(vm->restore_buf);
	vm->restore_buf = clear;
	*len = clear_len;
	return 0;
}

static int read_state_file(struct vm *vm, char *err, size_t errlen)
{
	const struct vmm_config *cfg = vm->cfg;
	int fd = fd_spec_open(cfg->restore_state_fd >= 0 ? NULL : cfg->restore_state, cfg->restore_state_fd,
			      O_RDONLY | O_CLOEXEC, 0);
	struct stat st;
	size_t got = 0;
	int r = 0;

	if (fd < 0)
		return sv_errf(fd, err, errlen, "snapshot: state file '%s': %s", cfg->restore_state, strerror(-fd));
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || st.st_size <= 0 || (uint64_t)st.st_size > SNAP_MAX_FILE) {
		r = sv_errf(-EINVAL, err, errlen, "snapshot: state file '%s' is not a regular file of 1..%u bytes",
			    cfg->restore_state, SNAP_MAX_FILE);
		goto out;
	}
	vm->restore_buf = malloc((size_t)st.st_size);
	if (!vm->restore_buf) {
		r = sv_errf(-ENOMEM, err, errlen, "snapshot: out of memory");
		goto out;
	}
	while (got < (size_t)st.st_size) {
		ssize_t n = read(fd, vm->restore_buf + got, (size_t)st.st_size - got);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			r = sv_errf(n < 0 ? -errno : -EIO, err, errlen, "snapshot: reading '%s': %s", cfg->restore_state,
				    n < 0 ? strerror(errno) : "file shrank while read");
			goto out;
		}
		got += (size_t)n;
	}
	if (state_seal_is_sealed(vm->restore_buf, got)) {
		r = open_sealed_state(vm, &got, err, errlen);
		if (r < 0)
			goto out;
	} else if (cfg->has_memory_key) {
		/* A pause taken before state files were sealed: its memory file is sealed and checked all the same. */
		sv_warn("snapshot: state file '%s' is not sealed (a pause from an older VMM)", cfg->restore_state);
	}
	vm->restore_recs = calloc(SNAP_MAX_RECORDS, sizeof(*vm->restore_recs));
	if (!vm->restore_recs) {
		r = sv_errf(-ENOMEM, err, errlen, "snapshot: out of memory");
		goto out;
	}
	{
		char why[256] = "";

		r = snap_parse(vm->restore_buf, got, vm->restore_recs, SNAP_MAX_RECORDS, &vm->restore_nrecs, why,
			       sizeof(why));
		if (r < 0)
			sv_errf(r, err, errlen, "snapshot: state file '%s' refused: %s", cfg->restore_state, why);
	}
out:
	close(fd);
	return r;
}

/* The snapshot must be of a machine like this one: same vCPUs, RAM layout and devices. */
static int check_machine(const struct vm *vm, const struct snap_machine *m, char *err, size_t errlen)
{
	if (m->cpus != vm->cfg->cpus)
		return sv_errf(-EINVAL, err, errlen, "snapshot: taken with %u vCPUs, this VM has %u (--cpus)", m->cpus,
			       vm->cfg->cpus);
	if (m->memory_bytes != vm->mem.total || m->nregions != vm->mem.nregions)
		return sv_errf(-EINVAL, err, errlen, "snapshot: taken with %llu MiB of RAM, this VM has %llu (--memory)",
			       (unsigned long long)(m->memory_bytes >> 20), (unsigned long long)(vm->mem.total >> 20));
	for (unsigned i = 0; i < m->nregions; i++)
		if (m->region_gpa[i] != vm->mem.regions[i].gpa || m->region_size[i] != vm->mem.regions[i].size)
			return sv_errf(-EINVAL, err, errlen, "snapshot: guest RAM region %u differs from this VM's", i);
	if (m->nvirtio != vm->nvirtio)
		return sv_errf(-EINVAL, err, errlen,
			       "snapshot: taken with %u virtio devices, this VM has %u (vsock, net and drives must match)",
			       m->nvirtio, vm->nvirtio);
	for (unsigned i = 0; i < m->nvirtio; i++)
		if (m->device_id[i] != vm->virtio[i]->dev.ops->device_id)
			return sv_errf(-EINVAL, err, errlen,
				       "snapshot: virtio slot %u held device type %u, this VM has virtio-%s there", i,
				       m->device_id[i], vm->virtio[i]->dev.ops->name);
	if (!(m->flags & SNAP_MACHINE_HAS_XSAVE) != !vm->xsave_size)
		return sv_errf(-EINVAL, err, errlen, "snapshot: taken on a host %s XSAVE, this one is %s",
			       m->flags & SNAP_MACHINE_HAS_XSAVE ? "with" : "without", vm->xsave_size ? "with" : "without");
	return 0;
}

int vm_restore(struct vm *vm, int *exit_code, char *err, size_t errlen)
{
	const struct snap_record *rec;
	struct snap_machine m;
	int r;

	*exit_code = VMM_EXIT_CONFIG;
	r = read_state_file(vm, err, errlen);
	if (r < 0)
		return r;
	sv_debug("%.3f ms: snapshot state file read and checked (%u records)",
		 (double)(vm_now_ns() - vm->start_ns) / 1e6, vm->restore_nrecs);
	rec = snap_find(vm->restore_recs, vm->restore_nrecs, SNAP_MACHINE, 0);
	if (!rec)
		return sv_errf(-EINVAL, err, errlen, "snapshot: no machine record");
	memcpy(&m, rec->data, sizeof(m));
	r = check_machine(vm, &m, err, errlen);
	if (r < 0)
		return r;
	for (unsigned i = 0; i < vm->nvirtio; i++) {
		struct snap_virtio v;

		rec = snap_find(vm->restore_recs, vm->restore_nrecs, SNAP_DEV_VIRTIO, i);
		if (!rec)
			return sv_errf(-EINVAL, err, errlen, "snapshot: no state for virtio slot %u", i);
		memcpy(&v, rec->data, sizeof(v));
		r = virtio_mmio_restore(vm->virtio[i], &v, err, errlen);
		if (r < 0)
			return r;
	}
	rec = snap_find(vm->restore_recs, vm->restore_nrecs, SNAP_DEV_SERIAL, 0);
	if (rec) {
		struct snap_serial s;

		memcpy(&s, rec->data, sizeof(s));
		serial_restore(&vm->serial, &s);
	}
	*exit_code = VMM_EXIT_ERROR;
	r = x86_vm_state_restore(vm->vm_fd, vm->restore_recs, vm->restore_nrecs, err, errlen);
	if (r < 0)
		return r;
	vm->restored = true;
	/* The guest's init ran before the snapshot: no boot timer, no boot timeout. */
	atomic_store(&vm->init_reached, true);
	sv_debug("snapshot taken %.1f s ago restored up to the vCPUs",
		 (double)((int64_t)(time(NULL) - (time_t)(m.snapshot_unix_ns / 1000000000ull))));
	return 0;
}

void vm_restore_release(struct vm *vm)
{
	free(vm->restore_recs);
	free(vm->restore_buf);
	vm->restore_recs = NULL;
	vm->restore_buf = NULL;
	vm->restore_nrecs = 0;
}
