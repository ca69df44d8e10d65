#include "arch/x86/cpu_state.h"

#include <errno.h>
#include <linux/kvm.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>

#include "log.h"
#include "parse.h"

#define MSR_IA32_TSC_DEADLINE 0x6e0u

int x86_msr_list_get(int kvm_fd, struct x86_msr_list *list)
{
	struct kvm_msr_list *l = calloc(1, sizeof(*l) + SNAP_MAX_MSRS * sizeof(l->indices[0]));
	int r = 0;

	if (!l)
		return -ENOMEM;
	l->nmsrs = SNAP_MAX_MSRS;
	if (ioctl(kvm_fd, KVM_GET_MSR_INDEX_LIST, l) < 0) {
		r = errno == E2BIG ? -E2BIG : -errno;
	} else {
		list->n = l->nmsrs;
		memcpy(list->index, l->indices, l->nmsrs * sizeof(l->indices[0]));
	}
	free(l);
	return r;
}

/* ---- save ---- */

static int get_put(int fd, unsigned long req, const char *what, uint32_t type, unsigned id, void *buf,
		   uint32_t len, struct snap_writer *w, char *err, size_t errlen)
{
	if (ioctl(fd, req, buf) < 0)
		return sv_errf(-errno, err, errlen, "vCPU %u: %s: %s", id, what, strerror(errno));
	if (snap_put(w, type, id, buf, len) < 0)
		return sv_errf(w->err, err, errlen, "vCPU %u: %s: %s", id, what, strerror(-w->err));
	return 0;
}

/*
 * KVM_GET_MSRS stops at the first MSR it cannot read: read from there on,
 * skipping each refused one, so one odd MSR costs only itself.
 */
static int save_msrs(int fd, unsigned id, const struct x86_msr_list *list, struct snap_writer *w, char *err,
		     size_t errlen)
{
	struct kvm_msrs *m = calloc(1, sizeof(*m) + SNAP_MAX_MSRS * sizeof(m->entries[0]));
	struct kvm_msr_entry *out = calloc(SNAP_MAX_MSRS, sizeof(*out));
	uint32_t nout = 0, pos = 0;
	int r = 0;

	if (!m || !out) {
		r = sv_errf(-ENOMEM, err, errlen, "vCPU %u: MSRs: out of memory", id);
		goto out;
	}
	while (pos < list->n) {
		int got;

		m->nmsrs = list->n - pos;
		for (uint32_t i = 0; i < m->nmsrs; i++)
			m->entries[i] = (struct kvm_msr_entry){ .index = list->index[pos + i] };
		got = ioctl(fd, KVM_GET_MSRS, m);
		if (got < 0) {
			r = sv_errf(-errno, err, errlen, "vCPU %u: KVM_GET_MSRS: %s", id, strerror(errno));
			goto out;
		}
		for (int i = 0; i < got; i++)
			out[nout++] = m->entries[i];
		pos += (uint32_t)got + 1; /* the one at pos + got was refused */
	}
	/* TSC_DEADLINE goes last: KVM arms the timer against the TSC set before it. */
	for (uint32_t i = 0; i + 1 < nout; i++) {
		if (out[i].index == MSR_IA32_TSC_DEADLINE) {
			struct kvm_msr_entry e = out[i];

			memmove(&out[i], &out[i + 1], (nout - i - 1) * sizeof(*out));
			out[nout - 1] = e;
			break;
		}
	}
	if (nout == 0) {
		r = sv_errf(-EIO, err, errlen, "vCPU %u: KVM read none of its MSRs", id);
		goto out;
	}
	if (snap_put(w, SNAP_VCPU_MSRS, id, out, nout * (uint32_t)sizeof(*out)) < 0)
		r = sv_errf(w->err, err, errlen, "vCPU %u: MSRs: %s", id, strerror(-w->err));
out:
	free(m);
	free(out);
	return r;
}

static int save_cpuid(int fd, unsigned id, struct snap_writer *w, char *err, size_t errlen)
{
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + SNAP_MAX_CPUID * sizeof(c->entries[0]));
	int r = 0;

	if (!c)
		return sv_errf(-ENOMEM, err, errlen, "vCPU %u: CPUID: out of memory", id);
	c->nent = SNAP_MAX_CPUID;
	if (ioctl(fd, KVM_GET_CPUID2, c) < 0)
		r = sv_errf(-errno, err, errlen, "vCPU %u: KVM_GET_CPUID2: %s", id, strerror(errno));
	else if (snap_put(w, SNAP_VCPU_CPUID, id, c->entries, c->nent * (uint32_t)sizeof(c->entries[0])) < 0)
		r = sv_errf(w->err, err, errlen, "vCPU %u: CPUID: %s", id, strerror(-w->err));
	free(c);
	return r;
}

static int save_xsave(int fd, unsigned id, size_t xsave_size, struct snap_writer *w, char *err, size_t errlen)
{
	size_t size = xsave_size < sizeof(struct kvm_xsave) ? sizeof(struct kvm_xsave) : xsave_size;
	void *area;
	int r;

	if (size > SNAP_MAX_XSAVE)
		return sv_errf(-E2BIG, err, errlen, "vCPU %u: XSAVE area of %zu bytes is above %u", id, size,
			       SNAP_MAX_XSAVE);
	area = calloc(1, size);
	if (!area)
		return sv_errf(-ENOMEM, err, errlen, "vCPU %u: XSAVE: out of memory", id);
	r = get_put(fd, size > sizeof(struct kvm_xsave) ? KVM_GET_XSAVE2 : KVM_GET_XSAVE, "KVM_GET_XSAVE",
		    SNAP_VCPU_XSAVE, id, area, (uint32_t)size, w, err, errlen);
	free(area);
	return r;
}

int x86_vcpu_state_save(int fd, unsigned id, size_t xsave_size, int with_xcrs, const struct x86_msr_list *list,
			struct snap_writer *w, char *err, size_t errlen)
{
	struct kvm_mp_state mp;
	struct kvm_regs regs;
	struct kvm_sregs sregs;
	struct kvm_fpu fpu;
	struct kvm_xcrs xcrs;
	struct kvm_debugregs dregs;
	struct kvm_lapic_state lapic;
	struct kvm_vcpu_events events;
	uint64_t khz;
	int r, k;

	/* MP_STATE first: reading it makes KVM settle pending APIC events into the state read after it. */
	r = get_put(fd, KVM_GET_MP_STATE, "KVM_GET_MP_STATE", SNAP_VCPU_MP_STATE, id, &mp, sizeof(mp), w, err,
		    errlen);
	if (r == 0)
		r = get_put(fd, KVM_GET_REGS, "KVM_GET_REGS", SNAP_VCPU_REGS, id, &regs, sizeof(regs), w, err, errlen);
	if (r == 0)
		r = get_put(fd, KVM_GET_SREGS, "KVM_GET_SREGS", SNAP_VCPU_SREGS, id, &sregs, sizeof(sregs), w, err,
			    errlen);
	if (r == 0)
		r = xsave_size ? save_xsave(fd, id, xsave_size, w, err, errlen)
			       : get_put(fd, KVM_GET_FPU, "KVM_GET_FPU", SNAP_VCPU_FPU, id, &fpu, sizeof(fpu), w, err,
					 errlen);
	if (r == 0 && with_xcrs)
		r = get_put(fd, KVM_GET_XCRS, "KVM_GET_XCRS", SNAP_VCPU_XCRS, id, &xcrs, sizeof(xcrs), w, err, errlen);
	if (r == 0)
		r = get_put(fd, KVM_GET_DEBUGREGS, "KVM_GET_DEBUGREGS", SNAP_VCPU_DEBUGREGS, id, &dregs, sizeof(dregs),
			    w, err, errlen);
	if (r == 0)
		r = get_put(fd, KVM_GET_LAPIC, "KVM_GET_LAPIC", SNAP_VCPU_LAPIC, id, &lapic, sizeof(lapic), w, err,
			    errlen);
	if (r == 0) {
		k = ioctl(fd, KVM_GET_TSC_KHZ, 0);
		if (k <= 0)
			return sv_errf(k < 0 ? -errno : -EIO, err, errlen, "vCPU %u: KVM_GET_TSC_KHZ: %s", id,
				       k < 0 ? strerror(errno) : "zero");
		khz = (uint64_t)k;
		if (snap_put(w, SNAP_VCPU_TSC_KHZ, id, &khz, sizeof(khz)) < 0)
			return sv_errf(w->err, err, errlen, "vCPU %u: TSC: %s", id, strerror(-w->err));
	}
	if (r == 0)
		r = save_cpuid(fd, id, w, err, errlen);
	if (r == 0)
		r = save_msrs(fd, id, list, w, err, errlen);
	/* Events last: what the reads above did not change. */
	if (r == 0)
		r = get_put(fd, KVM_GET_VCPU_EVENTS, "KVM_GET_VCPU_EVENTS", SNAP_VCPU_EVENTS, id, &events,
			    sizeof(events), w, err, errlen);
	return r;
}

int x86_vm_state_save(int vm_fd, struct snap_writer *w, char *err, size_t errlen)
{
	struct kvm_pit_state2 pit;
	struct kvm_clock_data clock;
	struct kvm_irqchip chip;

	if (ioctl(vm_fd, KVM_GET_PIT2, &pit) < 0)
		return sv_errf(-errno, err, errlen, "KVM_GET_PIT2: %s", strerror(errno));
	snap_put(w, SNAP_VM_PIT2, 0, &pit, sizeof(pit));
	memset(&clock, 0, sizeof(clock));
	if (ioctl(vm_fd, KVM_GET_CLOCK, &clock) < 0)
		return sv_errf(-errno, err, errlen, "KVM_GET_CLOCK: %s", strerror(errno));
	snap_put(w, SNAP_VM_CLOCK, 0, &clock, sizeof(clock));
	for (uint32_t id = 0; id < 3; id++) {
		memset(&chip, 0, sizeof(chip));
		chip.chip_id = id;
		if (ioctl(vm_fd, KVM_GET_IRQCHIP, &chip) < 0)
			return sv_errf(-errno, err, errlen, "KVM_GET_IRQCHIP %u: %s", id, strerror(errno));
		snap_put(w, SNAP_VM_IRQCHIP, id, &chip, sizeof(chip));
	}
	return w->err ? sv_errf(w->err, err, errlen, "VM state: %s", strerror(-w->err)) : 0;
}

/* ---- restore ---- */

static const struct snap_record *need(const struct snap_record *recs, unsigned n, uint32_t type, unsigned id,
				      const char *what, char *err, size_t errlen)
{
	const struct snap_record *r = snap_find(recs, n, type, id);

	if (!r)
		sv_errf(-EINVAL, err, errlen, "snapshot: vCPU %u has no %s record", id, what);
	return r;
}

/* Sets what a fixed-size record holds; a copy, since KVM may write back into the buffer. */
static int set_fixed(int fd, unsigned long req, const char *what, const struct snap_record *rec, size_t size,
		     unsigned id, char *err, size_t errlen)
{
	uint8_t buf[sizeof(struct kvm_lapic_state) > sizeof(struct kvm_sregs) ? sizeof(struct kvm_lapic_state)
									 : sizeof(struct kvm_sregs)];

	if (rec->len != size || size > sizeof(buf))
		return sv_errf(-EINVAL, err, errlen, "snapshot: vCPU %u: %s record of %u bytes", id, what, rec->len);
	memcpy(buf, rec->data, size);
	if (ioctl(fd, req, buf) < 0)
		return sv_errf(-errno, err, errlen, "vCPU %u: %s: %s", id, what, strerror(errno));
	return 0;
}

static int restore_cpuid(int fd, unsigned id, const struct snap_record *rec, char *err, size_t errlen)
{
	uint32_t n = rec->len / (uint32_t)sizeof(struct kvm_cpuid_entry2);
	struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));
	int r = 0;

	if (!c)
		return sv_errf(-ENOMEM, err, errlen, "vCPU %u: CPUID: out of memory", id);
	c->nent = n;
	memcpy(c->entries, rec->data, rec->len);
	if (ioctl(fd, KVM_SET_CPUID2, c) < 0)
		r = sv_errf(-errno, err, errlen, "vCPU %u: KVM_SET_CPUID2: %s", id, strerror(errno));
	free(c);
	return r;
}

static int restore_msrs(int fd, unsigned id, const struct snap_record *rec, unsigned *skipped, char *err,
			size_t errlen)
{
	uint32_t n = rec->len / (uint32_t)sizeof(struct kvm_msr_entry), pos = 0;
	struct kvm_msrs *m = calloc(1, sizeof(*m) + n * sizeof(m->entries[0]));
	int r = 0;

	if (!m)
		return sv_errf(-ENOMEM, err, errlen, "vCPU %u: MSRs: out of memory", id);
	while (pos < n) {
		int set;

		m->nmsrs = n - pos;
		memcpy(m->entries, rec->data + (size_t)pos * sizeof(m->entries[0]), m->nmsrs * sizeof(m->entries[0]));
		set = ioctl(fd, KVM_SET_MSRS, m);
		if (set < 0) {
			r = sv_errf(-errno, err, errlen, "vCPU %u: KVM_SET_MSRS: %s", id, strerror(errno));
			break;
		}
		if ((uint32_t)set < m->nmsrs) {
			sv_debug("vCPU %u: KVM refused MSR 0x%x from the snapshot; skipped", id,
				 m->entries[set].index);
			(*skipped)++;
		}
		pos += (uint32_t)set + 1;
	}
	free(m);
	return r;
}

static int restore_xsave(int fd, unsigned id, size_t xsave_size, const struct snap_record *rec, char *err,
			 size_t errlen)
{
	size_t size = xsave_size < sizeof(struct kvm_xsave) ? sizeof(struct kvm_xsave) : xsave_size;
	void *area;
	int r = 0;

	/* The same KVM on the same CPU writes the same size; another size is another machine. */
	if (rec->len != size)
		return sv_errf(-EINVAL, err, errlen,
			       "snapshot: vCPU %u: XSAVE area of %u bytes, this host's KVM uses %zu (another CPU?)", id,
			       rec->len, size);
	area = malloc(size);
	if (!area)
		return sv_errf(-ENOMEM, err, errlen, "vCPU %u: XSAVE: out of memory", id);
	memcpy(area, rec->data, size);
	if (ioctl(fd, KVM_SET_XSAVE, area) < 0)
		r = sv_errf(-errno, err, errlen, "vCPU %u: KVM_SET_XSAVE: %s", id, strerror(errno));
	free(area);
	return r;
}

static void restore_tsc_khz(int fd, unsigned id, const struct snap_record *rec)
{
	uint64_t want;
	int have;

	memcpy(&want, rec->data, sizeof(want));
	have = ioctl(fd, KVM_GET_TSC_KHZ, 0);
	/* Within 250 kHz is the same clock measured twice (NTP's tolerance); only scale a real change. */
	if (have > 0 && (uint64_t)have + 250 >= want && want + 250 >= (uint64_t)have)
		return;
	if (want > 0 && want <= UINT32_MAX && ioctl(fd, KVM_SET_TSC_KHZ, (unsigned long)want) < 0)
		sv_warn("vCPU %u: the snapshot's TSC ran at %llu kHz, this host's at %d kHz, and KVM cannot scale it "
			"(%s): the guest's clock may drift",
			id, (unsigned long long)want, have, strerror(errno));
}

int x86_vcpu_state_restore(int fd, unsigned id, size_t xsave_size, const struct snap_record *recs, unsigned n,
			   unsigned *msrs_skipped, char *err, size_t errlen)
{
	const struct snap_record *cpuid, *mp, *regs, *sregs, *fpu, *xcrs, *dregs, *lapic, *msrs, *events, *khz;
	int r;

	if (!(cpuid = need(recs, n, SNAP_VCPU_CPUID, id, "CPUID", err, errlen)) ||
	    !(mp = need(recs, n, SNAP_VCPU_MP_STATE, id, "MP_STATE", err, errlen)) ||
	    !(regs = need(recs, n, SNAP_VCPU_REGS, id, "REGS", err, errlen)) ||
	    !(sregs = need(recs, n, SNAP_VCPU_SREGS, id, "SREGS", err, errlen)) ||
	    !(fpu = need(recs, n, xsave_size ? SNAP_VCPU_XSAVE : SNAP_VCPU_FPU, id, xsave_size ? "XSAVE" : "FPU",
			 err, errlen)) ||
	    !(dregs = need(recs, n, SNAP_VCPU_DEBUGREGS, id, "DEBUGREGS", err, errlen)) ||
	    !(lapic = need(recs, n, SNAP_VCPU_LAPIC, id, "LAPIC", err, errlen)) ||
	    !(khz = need(recs, n, SNAP_VCPU_TSC_KHZ, id, "TSC_KHZ", err, errlen)) ||
	    !(msrs = need(recs, n, SNAP_VCPU_MSRS, id, "MSRS", err, errlen)) ||
	    !(events = need(recs, n, SNAP_VCPU_EVENTS, id, "VCPU_EVENTS", err, errlen)))
		return -EINVAL;
	xcrs = snap_find(recs, n, SNAP_VCPU_XCRS, id);

	restore_tsc_khz(fd, id, khz);
	r = restore_cpuid(fd, id, cpuid, err, errlen);
	if (r == 0)
		r = set_fixed(fd, KVM_SET_MP_STATE, "KVM_SET_MP_STATE", mp, sizeof(struct kvm_mp_state), id, err,
			      errlen);
	if (r == 0)
		r = set_fixed(fd, KVM_SET_REGS, "KVM_SET_REGS", regs, sizeof(struct kvm_regs), id, err, errlen);
	if (r == 0)
		r = set_fixed(fd, KVM_SET_SREGS, "KVM_SET_SREGS", sregs, sizeof(struct kvm_sregs), id, err, errlen);
	if (r == 0)
		r = xsave_size ? restore_xsave(fd, id, xsave_size, fpu, err, errlen)
			       : set_fixed(fd, KVM_SET_FPU, "KVM_SET_FPU", fpu, sizeof(struct kvm_fpu), id, err, errlen);
	if (r == 0 && xcrs)
		r = set_fixed(fd, KVM_SET_XCRS, "KVM_SET_XCRS", xcrs, sizeof(struct kvm_xcrs), id, err, errlen);
	if (r == 0)
		r = set_fixed(fd, KVM_SET_DEBUGREGS, "KVM_SET_DEBUGREGS", dregs, sizeof(struct kvm_debugregs), id, err,
			      errlen);
	/* The LAPIC before the MSRs: TSC_DEADLINE needs the timer mode the LAPIC sets. */
	if (r == 0)
		r = set_fixed(fd, KVM_SET_LAPIC, "KVM_SET_LAPIC", lapic, sizeof(struct kvm_lapic_state), id, err,
			      errlen);
	if (r == 0)
		r = restore_msrs(fd, id, msrs, msrs_skipped, err, errlen);
	if (r == 0) {
		struct kvm_vcpu_events ev;

		memcpy(&ev, events->data, sizeof(ev));
		/* Restore what GET left implicit too: a pending NMI and the SIPI vector. */
		ev.flags |= KVM_VCPUEVENT_VALID_NMI_PENDING | KVM_VCPUEVENT_VALID_SIPI_VECTOR;
		if (ioctl(fd, KVM_SET_VCPU_EVENTS, &ev) < 0)
			r = sv_errf(-errno, err, errlen, "vCPU %u: KVM_SET_VCPU_EVENTS: %s", id, strerror(errno));
	}
	if (r == 0)
		x86_vcpu_kvmclock_ctrl(fd);
	return r;
}

void x86_vcpu_kvmclock_ctrl(int fd)
{
	/* EINVAL when the guest never enabled kvmclock: nothing to tell it. */
	if (ioctl(fd, KVM_KVMCLOCK_CTRL, 0) < 0 && errno != EINVAL)
		sv_debug("KVM_KVMCLOCK_CTRL: %s", strerror(errno));
}

int x86_vm_state_restore(int vm_fd, const struct snap_record *recs, unsigned n, char *err, size_t errlen)
{
	const struct snap_record *pit = snap_find(recs, n, SNAP_VM_PIT2, 0);
	const struct snap_record *clock = snap_find(recs, n, SNAP_VM_CLOCK, 0);
	struct kvm_pit_state2 p;
	struct kvm_clock_data c;
	struct kvm_irqchip chip;

	if (!pit || !clock)
		return sv_errf(-EINVAL, err, errlen, "snapshot: no %s record", !pit ? "PIT2" : "CLOCK");
	memcpy(&p, pit->data, sizeof(p));
	if (ioctl(vm_fd, KVM_SET_PIT2, &p) < 0)
		return sv_errf(-errno, err, errlen, "KVM_SET_PIT2: %s", strerror(errno));
	memcpy(&c, clock->data, sizeof(c));
	/*
	 * The guest's clock goes on from where it stood when the snapshot was
	 * taken (no flags: KVM_CLOCK_REALTIME would jump it by the time the
	 * snapshot sat on disk); the agent sets the wall clock after a restore.
	 */
	c.flags = 0;
	memset(c.pad, 0, sizeof(c.pad));
	if (ioctl(vm_fd, KVM_SET_CLOCK, &c) < 0)
		return sv_errf(-errno, err, errlen, "KVM_SET_CLOCK: %s", strerror(errno));
	for (uint32_t id = 0; id < 3; id++) {
		const struct snap_record *r = snap_find(recs, n, SNAP_VM_IRQCHIP, id);

		if (!r)
			return sv_errf(-EINVAL, err, errlen, "snapshot: no IRQCHIP %u record", id);
		memcpy(&chip, r->data, sizeof(chip));
		if (chip.chip_id != id)
			return sv_errf(-EINVAL, err, errlen, "snapshot: IRQCHIP record %u is for chip %u", id, chip.chip_id);
		if (ioctl(vm_fd, KVM_SET_IRQCHIP, &chip) < 0)
			return sv_errf(-errno, err, errlen, "KVM_SET_IRQCHIP %u: %s", id, strerror(errno));
	}
	return 0;
}
