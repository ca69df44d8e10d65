#include "vm.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/signalfd.h>
#include <sys/timerfd.h>
#include <time.h>
#include <unistd.h>

#include "arch/x86/cpu_state.h"
#include "arch/x86/e820.h"
#include "arch/x86/layout.h"
#include "backends/image_disk.h"
#include "backends/raw_file.h"
#include "backends/tap.h"
#include "control.h"
#include "fd_spec.h"
#include "kvm.h"
#include "log.h"
#include "parse.h"
#include "seccomp.h"
#include "simage/format.h"
#include "snapshot/mem_seal.h"
#include "vcpu.h"
#include "virtio/rng.h"

uint64_t vm_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static int hook_set_irq(void *ctx, uint32_t gsi, int level)
{
	struct vm *vm = ctx;

	return kvm_sys_irq_line(vm->vm_fd, gsi, level);
}

static void hook_event(void *ctx, enum machine_event ev)
{
	struct vm *vm = ctx;
	bool expected = false;

	switch (ev) {
	case MACHINE_EVENT_RESET:
		vm_request_stop(vm, VM_STOP_GUEST_RESET, "guest reset through the i8042");
		break;
	case MACHINE_EVENT_PANIC:
		atomic_store(&vm->panicked, true);
		break;
	case MACHINE_EVENT_INIT_REACHED:
		if (atomic_compare_exchange_strong(&vm->init_reached, &expected, true)) {
			uint64_t ns = vm_now_ns() - vm->start_ns;

			atomic_store(&vm->init_ns, ns);
			sv_info("boot timer: guest init reached %.3f ms after VMM start",
				(double)ns / 1e6);
		}
		break;
	}
}

void vm_request_stop(struct vm *vm, enum vm_stop_reason reason, const char *detail)
{
	int expected = VM_RUNNING;
	uint64_t one = 1;

	if (!atomic_compare_exchange_strong(&vm->stop_reason, &expected, (int)reason))
		return;
	if (detail)
		snprintf(vm->stop_detail, sizeof(vm->stop_detail), "%s", detail);
	for (unsigned i = 0; i < vm->nvcpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	/* Parked vCPUs wake to see the stop. */
	if (vm->pause_ready) {
		pthread_mutex_lock(&vm->pause_lock);
		pthread_cond_broadcast(&vm->pause_cond);
		pthread_mutex_unlock(&vm->pause_lock);
	}
	if (write(vm->stop_h.fd, &one, sizeof(one)) < 0) {
		/* The counter cannot overflow with one write per VM; nothing to do. */
	}
}

static int setup_memory(struct vm *vm, char *err, size_t errlen)
{
	struct guest_mem_region layout[GUEST_MEM_MAX_REGIONS];
	unsigned n = x86_ram_layout(vm->cfg->memory_mib << 20, layout);
	const struct vmm_config *cfg = vm->cfg;
	int r;

	if (cfg->restore_memory && cfg->has_memory_key) {
		int fd = fd_spec_open(cfg->restore_memory_fd >= 0 ? NULL : cfg->restore_memory, cfg->restore_memory_fd,
				      O_RDONLY | O_CLOEXEC, 0);
		char why[256] = "";

		if (fd < 0)
			return sv_errf(fd, err, errlen, "snapshot: memory file '%s': %s", cfg->restore_memory,
				       strerror(-fd));
		/* Decrypted into anonymous RAM: a resume shares nothing, and nothing of it is a file page. */
		r = guest_mem_init(&vm->mem, layout, n, cfg->hugepages);
		if (r == 0) {
			r = mem_seal_read(&vm->mem, fd, cfg->memory_key, why, sizeof(why));
			if (r < 0)
				sv_errf(r, err, errlen, "snapshot: memory file '%s': %s", cfg->restore_memory, why);
		} else {
			sv_errf(r, err, errlen, "cannot reserve %llu MiB of guest RAM: %s",
				(unsigned long long)cfg->memory_mib, strerror(-r));
		}
		close(fd);
		if (r < 0) {
			guest_mem_destroy(&vm->mem);
			return r;
		}
	} else if (cfg->restore_memory) {
		int fd = fd_spec_open(cfg->restore_memory_fd >= 0 ? NULL : cfg->restore_memory, cfg->restore_memory_fd,
				      O_RDONLY | O_CLOEXEC, 0);

		/* Ciphertext mapped as RAM would only crash the guest: say what is missing instead. */
		if (fd >= 0 && mem_seal_is_sealed(fd)) {
			close(fd);
			return sv_errf(-EINVAL, err, errlen,
				       "snapshot: memory file '%s' is sealed and no --restore-memory-key was given",
				       cfg->restore_memory);
		}
		r = fd < 0 ? fd : guest_mem_init_file(&vm->mem, layout, n, fd);
		if (fd >= 0)
			close(fd);
		if (r < 0)
			return sv_errf(r, err, errlen, "snapshot: memory file '%s': %s", cfg->restore_memory,
				       r == -EINVAL ? "not a regular file as large as the guest's RAM (--memory)"
						    : strerror(-r));
	} else {
		r = guest_mem_init(&vm->mem, layout, n, cfg->hugepages);
	}
	if (r < 0)
		return sv_errf(r, err, errlen, "cannot reserve %llu MiB of guest RAM: %s",
			    (unsigned long long)vm->cfg->memory_mib, strerror(-r));
	for (unsigned i = 0; i < vm->mem.nregions; i++) {
		const struct guest_mem_region *g = &vm->mem.regions[i];

		r = kvm_sys_set_memslot(vm->vm_fd, i, g->gpa, g->size, g->host);
		if (r < 0)
			return sv_errf(r, err, errlen, "KVM_SET_USER_MEMORY_REGION: %s", strerror(-r));
	}
	return 0;
}

static int add_virtio(struct vm *vm, struct virtio_mmio *m, const struct virtio_dev_ops *ops,
		      void *model, char *err, size_t errlen)
{
	unsigned slot = vm->nvirtio;
	uint64_t base = X86_VIRTIO_MMIO_BASE + (uint64_t)slot * VIRTIO_MMIO_SIZE;
	int r;

	if (slot >= VM_MAX_VIRTIO)
		return sv_errf(-ENOSPC, err, errlen, "too many virtio devices (at most %u)",
			    VM_MAX_VIRTIO);
	r = virtio_mmio_init(m, ops, model, &vm->mem, vm->vm_fd, base, VM_VIRTIO_FIRST_GSI + slot);
	if (r < 0)
		return sv_errf(r, err, errlen, "virtio-%s: %s", ops->name, strerror(-r));
	vm->virtio[vm->nvirtio++] = m;
	r = bus_register(&vm->mmio, base, VIRTIO_MMIO_SIZE, &virtio_mmio_bus_ops, m, ops->name);
	if (r < 0)
		return sv_errf(r, err, errlen, "virtio-%s: %s", ops->name, strerror(-r));
	return 0;
}

static int setup_devices(struct vm *vm, char *err, size_t errlen)
{
	int r;

	r = serial_init(&vm->serial, X86_IRQ_COM1, vm->console, &vm->hooks);
	if (r < 0)
		return sv_errf(r, err, errlen, "serial: %s", strerror(-r));
	vm->serial_ready = true;
	i8042_init(&vm->i8042, &vm->hooks);
	boot_timer_init(&vm->boot_timer, &vm->hooks);
	r = bus_register(&vm->pio, X86_PORT_COM1, 8, &serial_bus_ops, &vm->serial, "serial");
	if (r == 0)
		r = bus_register(&vm->pio, X86_PORT_I8042_DATA, 1, &i8042_data_ops, &vm->i8042,
				 "i8042-data");
	if (r == 0)
		r = bus_register(&vm->pio, X86_PORT_I8042_CMD, 1, &i8042_cmd_ops, &vm->i8042,
				 "i8042-cmd");
	if (r == 0)
		r = bus_register(&vm->pio, X86_PORT_BOOT_TIMER, 1, &boot_timer_ops,
				 &vm->boot_timer, "boot-timer");
	if (r < 0)
		return sv_errf(r, err, errlen, "registering devices: %s", strerror(-r));
	r = add_virtio(vm, &vm->rng, &virtio_rng_ops, NULL, err, errlen);
	if (r == 0 && vm->cfg->vsock_path) {
		int lfd = vm->cfg->vsock_fd >= 0 ? fd_spec_open(NULL, vm->cfg->vsock_fd, 0, 0) : -1;

		if (lfd < 0 && vm->cfg->vsock_fd >= 0)
			return sv_errf(lfd, err, errlen, "vsock: %s", strerror(-lfd));
		r = lfd >= 0 ? vsock_dev_init_fd(&vm->vsock, vm->cfg->vsock_cid, lfd)
			     : vsock_dev_init(&vm->vsock, vm->cfg->vsock_cid, vm->cfg->vsock_path);
		if (r < 0) {
			if (lfd >= 0)
				close(lfd);
			return sv_errf(r, err, errlen, "vsock: %s", strerror(-r));
		}
		vm->has_vsock = true;
		r = add_virtio(vm, &vm->vsock_mmio, &virtio_vsock_ops, &vm->vsock, err, errlen);
	}
	if (r == 0 && vmm_config_has_net(vm->cfg)) {
		bool vnet_hdr = true;
		int tap_fd;

		if (vm->cfg->net_tap_fd >= 0) {
			tap_fd = fd_spec_open(NULL, vm->cfg->net_tap_fd, 0, 0);
			r = tap_fd < 0 ? tap_fd : tap_check_fd(tap_fd, &vnet_hdr);
			if (r < 0) {
				if (tap_fd >= 0)
					close(tap_fd);
				return sv_errf(r, err, errlen, "net: tapfd=%d: %s", vm->cfg->net_tap_fd,
					       r == -EINVAL ? "not an attached tap without packet information"
							    : strerror(-r));
			}
		} else {
			r = tap_open(vm->cfg->net_tap, &tap_fd);
			if (r < 0)
				return sv_errf(r, err, errlen, "net: tap '%s': %s%s", vm->cfg->net_tap, strerror(-r),
					    r == -EPERM ? " (needs CAP_NET_ADMIN, or a tap made for this user)" : "");
		}
		if (!vnet_hdr)
			sv_debug("net: tapfd=%d has no vnet header: no offloads offered", vm->cfg->net_tap_fd);
		r = net_dev_init(&vm->net, tap_fd, vm->cfg->net_mac, vnet_hdr ? NET_DEV_VNET_HDR : 0);
		if (r < 0) {
			close(tap_fd);
			return sv_errf(r, err, errlen, "net: %s", strerror(-r));
		}
		vm->has_net = true;
		vm->egress.mac = vm->net.mac;
		r = vm->cfg->net_policy_fd >= 0
			    ? net_egress_load_fd(&vm->egress, vm->cfg->net_policy_fd, vm->cfg->net_policy, err, errlen)
			    : net_egress_load_file(&vm->egress, vm->cfg->net_policy, err, errlen);
		if (r < 0)
			return r;
		net_dev_set_egress(&vm->net, net_egress_check_tx, &vm->egress);
		r = add_virtio(vm, &vm->net_mmio, &virtio_net_ops, &vm->net, err, errlen);
	}
	for (unsigned i = 0; r == 0 && i < vm->cfg->ndrives; i++) {
		const struct vmm_drive *d = &vm->cfg->drives[i];

		if (d->spare) {
			virtio_blk_open_spare(&vm->blk[i], d->serial);
		} else if (d->fd >= 0) {
			int fd = fd_spec_open(NULL, d->fd, 0, 0);

			r = fd < 0 ? fd : virtio_blk_open_fd(&vm->blk[i], fd, d->read_only, d->serial);
			if (r < 0)
				return sv_errf(r, err, errlen, "drive '%s': %s", d->path, strerror(-r));
		} else {
			r = virtio_blk_open(&vm->blk[i], d->path, d->read_only, d->serial);
			if (r < 0)
				return sv_errf(r, err, errlen, "drive '%s': %s", d->path, strerror(-r));
		}
		vm->nblk = i + 1;
		r = add_virtio(vm, &vm->blk_mmio[i], d->read_only ? &virtio_blk_ro_ops : &virtio_blk_ops,
			       &vm->blk[i], err, errlen);
	}
	return r;
}

int vm_init(struct vm *vm, const struct vmm_config *cfg, struct console_out *console, uint64_t start_ns,
	    char *err, size_t errlen)
{
	const char *missing = NULL, *kvm;
	int r, max;

	memset(vm, 0, sizeof(*vm));
	vm->cfg = cfg;
	vm->kvm_fd = vm->vm_fd = -1;
	vm->console = console;
	vm->start_ns = start_ns;
	vm->loop.epfd = -1;
	vm->signal_h.fd = vm->stop_h.fd = vm->timeout_h.fd = -1;
	vm->hooks = (struct machine_hooks){ .ctx = vm, .set_irq = hook_set_irq,
					    .event = hook_event };
	bus_init(&vm->pio);
	bus_init(&vm->mmio);
	if (pthread_mutex_init(&vm->pause_lock, NULL) != 0 || pthread_cond_init(&vm->pause_cond, NULL) != 0)
		return sv_errf(-ENOMEM, err, errlen, "cannot create the pause lock");
	vm->pause_ready = true;

	kvm = cfg->kvm ? cfg->kvm : "/dev/kvm";
	r = kvm_sys_open(kvm, cfg->kvm_fd, &vm->kvm_fd);
	if (r == -ENOENT)
		return sv_errf(r, err, errlen,
			    "%s does not exist: this host offers no KVM "
			    "(on such hosts run through tests/nested/run)", kvm);
	if (r == -EACCES)
		return sv_errf(r, err, errlen, "%s: permission denied (need rw access)", kvm);
	if (r < 0)
		return sv_errf(r, err, errlen, "%s: %s", kvm, r == -EPROTO ? "unsupported KVM API version" : strerror(-r));
	vm->host_pvm = kvm_host_is_pvm(NULL);
	if (vm->host_pvm)
		sv_warn("this host's KVM is PVM (kvm_pvm), which boots only guest kernels built for PVM; "
			"a standard kernel fails early in its boot (docs/vmm.md, \"Hosts whose KVM is PVM\")");
	r = kvm_sys_check_caps(vm->kvm_fd, &missing);
	if (r < 0)
		return sv_errf(r, err, errlen, "KVM lacks a required capability: %s", missing);
	max = kvm_sys_max_vcpus(vm->kvm_fd);
	if (cfg->cpus > (unsigned)max)
		return sv_errf(-E2BIG, err, errlen, "cpus: %u exceeds this host's KVM limit of %d",
			    cfg->cpus, max);
	vm->tsc_deadline = kvm_sys_has_cap(vm->kvm_fd, KVM_CAP_TSC_DEADLINE_TIMER);
	r = kvm_sys_run_size(vm->kvm_fd, &vm->run_size);
	if (r < 0)
		return sv_errf(r, err, errlen, "KVM_GET_VCPU_MMAP_SIZE: %s", strerror(-r));
	vm->cpuid = x86_cpuid_supported(vm->kvm_fd, &r);
	if (!vm->cpuid)
		return sv_errf(r, err, errlen, "KVM_GET_SUPPORTED_CPUID: %s", strerror(-r));
	x86_cpuid_normalize(vm->cpuid, &vm->xsave);
	vm->xsave_size = kvm_sys_xsave_size(vm->kvm_fd);
	vm->msrs = calloc(1, sizeof(*vm->msrs));
	if (!vm->msrs)
		return sv_errf(-ENOMEM, err, errlen, "out of memory");
	r = x86_msr_list_get(vm->kvm_fd, vm->msrs);
	if (r < 0)
		return sv_errf(r, err, errlen, "KVM_GET_MSR_INDEX_LIST: %s", strerror(-r));
	if (!kvm_sys_has_cap(vm->kvm_fd, KVM_CAP_XCRS))
		vm->xsave.xcr0 = 0;
	sv_debug("CPUID: XCR0 0x%llx, XSAVE area %u bytes, KVM_SET_XSAVE %zu bytes",
		 (unsigned long long)vm->xsave.xcr0, vm->xsave.size, vm->xsave_size);
	r = kvm_sys_create_vm(vm->kvm_fd, &vm->vm_fd);
	if (r < 0)
		return sv_errf(r, err, errlen, "KVM_CREATE_VM: %s", strerror(-r));
	sv_debug("%.3f ms: KVM VM created", (double)(vm_now_ns() - vm->start_ns) / 1e6);
	r = kvm_sys_setup_x86_platform(vm->vm_fd, X86_KVM_TSS_ADDR, X86_KVM_IDENTITY_MAP_ADDR);
	if (r < 0)
		return sv_errf(r, err, errlen, "setting up interrupt controllers and PIT: %s",
			    strerror(-r));
	sv_debug("%.3f ms: interrupt controllers and PIT created", (double)(vm_now_ns() - vm->start_ns) / 1e6);
	r = setup_memory(vm, err, errlen);
	if (r < 0)
		return r;
	sv_debug("%.3f ms: guest RAM mapped", (double)(vm_now_ns() - vm->start_ns) / 1e6);
	vm->stop_h.fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (vm->stop_h.fd < 0)
		return sv_errf(-errno, err, errlen, "eventfd: %s", strerror(errno));
	r = setup_devices(vm, err, errlen);
	sv_debug("%.3f ms: devices created", (double)(vm_now_ns() - vm->start_ns) / 1e6);
	return r;
}

/* A vCPU waiting for the loop to reset a device must not wait for ever. */
static void stop_virtio(struct vm *vm)
{
	for (unsigned i = 0; i < vm->nvirtio; i++)
		virtio_mmio_stop(vm->virtio[i]);
}

void vm_destroy(struct vm *vm)
{
	stop_virtio(vm);
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		vcpu_kick(&vm->vcpus[i]);
		vcpu_join(&vm->vcpus[i]);
	}
	for (unsigned i = 0; i < vm->nvcpus; i++)
		vcpu_destroy(&vm->vcpus[i]);
	free(vm->vcpus);
	vm->vcpus = NULL;
	vm->nvcpus = 0;
	control_destroy(vm->control);
	vm->control = NULL;
	for (unsigned i = 0; i < vm->nvirtio; i++)
		virtio_mmio_destroy(vm->virtio[i]);
	vm->nvirtio = 0;
	for (unsigned i = 0; i < vm->nblk; i++)
		virtio_blk_close(&vm->blk[i]);
	vm->nblk = 0;
	if (vm->has_vsock)
		vsock_dev_destroy(&vm->vsock);
	vm->has_vsock = false;
	if (vm->has_net) {
		net_dev_destroy(&vm->net);
		net_egress_destroy(&vm->egress);
	}
	vm->has_net = false;
	if (vm->serial_ready)
		serial_destroy(&vm->serial);
	vm->serial_ready = false;
	if (vm->signal_h.fd >= 0)
		close(vm->signal_h.fd);
	if (vm->timeout_h.fd >= 0)
		close(vm->timeout_h.fd);
	if (vm->stop_h.fd >= 0)
		close(vm->stop_h.fd);
	event_loop_destroy(&vm->loop);
	bus_destroy(&vm->pio);
	bus_destroy(&vm->mmio);
	guest_mem_destroy(&vm->mem);
	free(vm->cpuid);
	free(vm->msrs);
	vm->msrs = NULL;
	vm_restore_release(vm);
	if (vm->pause_ready) {
		pthread_cond_destroy(&vm->pause_cond);
		pthread_mutex_destroy(&vm->pause_lock);
	}
	vm->pause_ready = false;
	if (vm->vm_fd >= 0)
		close(vm->vm_fd);
	if (vm->kvm_fd >= 0)
		close(vm->kvm_fd);
	vm->vm_fd = vm->kvm_fd = -1;
}

int vm_exit_code(enum vm_stop_reason reason)
{
	switch (reason) {
	case VM_STOP_GUEST_RESET:
	case VM_STOP_GUEST_SHUTDOWN:
	case VM_STOP_REQUESTED:
		return VMM_EXIT_OK;
	case VM_STOP_GUEST_PANIC:
		return VMM_EXIT_PANIC;
	case VM_STOP_GUEST_CRASH:
		return VMM_EXIT_CRASH;
	case VM_STOP_BOOT_TIMEOUT:
		return VMM_EXIT_BOOT_TIMEOUT;
	default:
		return VMM_EXIT_ERROR;
	}
}

const char *vm_stop_reason_name(enum vm_stop_reason reason)
{
	static const char *const names[] = {
		[VM_RUNNING] = "running",
		[VM_STOP_GUEST_RESET] = "guest-reset",
		[VM_STOP_GUEST_SHUTDOWN] = "guest-shutdown",
		[VM_STOP_REQUESTED] = "stop-requested",
		[VM_STOP_GUEST_PANIC] = "guest-panic",
		[VM_STOP_GUEST_CRASH] = "guest-crash",
		[VM_STOP_BOOT_TIMEOUT] = "boot-timeout",
		[VM_STOP_ERROR] = "vmm-error",
	};

	return (unsigned)reason < sizeof(names) / sizeof(names[0]) ? names[reason] : "unknown";
}

/* ---- the event loop side ---- */

static void on_signal(struct event_handler *h, uint32_t events)
{
	struct vm *vm = h->opaque;
	struct signalfd_siginfo si;
	char detail[64];

	(void)events;
	if (read(h->fd, &si, sizeof(si)) != sizeof(si))
		return;
	snprintf(detail, sizeof(detail), "stopped by signal %s", sigabbrev_np((int)si.ssi_signo));
	vm_request_stop(vm, VM_STOP_REQUESTED, detail);
}

static void on_stop(struct event_handler *h, uint32_t events)
{
	uint64_t v;

	(void)events;
	if (read(h->fd, &v, sizeof(v)) < 0) {
		/* Nothing to drain; the stop reason is already recorded. */
	}
}

static void on_boot_timeout(struct event_handler *h, uint32_t events)
{
	struct vm *vm = h->opaque;
	uint64_t v;
	char detail[96];

	(void)events;
	if (read(h->fd, &v, sizeof(v)) < 0)
		return;
	if (atomic_load(&vm->init_reached))
		return;
	snprintf(detail, sizeof(detail), "guest init did not signal within %u s",
		 vm->cfg->boot_timeout_s);
	vm_request_stop(vm, VM_STOP_BOOT_TIMEOUT, detail);
}

static void control_status(void *ctx, cJSON *reply)
{
	struct vm *vm = ctx;
	enum vm_stop_reason reason = (enum vm_stop_reason)atomic_load(&vm->stop_reason);
	cJSON *drives;

	cJSON_AddStringToObject(reply, "state", reason != VM_RUNNING ? "stopping" : vm_paused(vm) ? "paused" : "running");
	cJSON_AddBoolToObject(reply, "restored", vm->restored);
	if (vm->restored)
		cJSON_AddNumberToObject(reply, "restore_ms", (double)vm->restore_ns / 1e6);
	cJSON_AddNumberToObject(reply, "cpus", vm->cfg->cpus);
	cJSON_AddNumberToObject(reply, "memory_mib", (double)vm->cfg->memory_mib);
	cJSON_AddNumberToObject(reply, "uptime_ms", (double)(vm_now_ns() - vm->start_ns) / 1e6);
	cJSON_AddBoolToObject(reply, "init_reached", atomic_load(&vm->init_reached));
	if (atomic_load(&vm->init_reached))
		cJSON_AddNumberToObject(reply, "boot_ms", (double)atomic_load(&vm->init_ns) / 1e6);
	drives = cJSON_AddArrayToObject(reply, "drives");
	for (unsigned i = 0; drives && i < vm->nblk; i++) {
		struct virtio_dev *dev = &vm->blk_mmio[i].dev;
		cJSON *d = cJSON_CreateObject();
		const struct blk_backend *b;

		if (!d)
			break;
		pthread_mutex_lock(&dev->lock);
		b = vm->blk[i].backend;
		cJSON_AddStringToObject(d, "serial", vm->blk[i].serial);
		cJSON_AddNumberToObject(d, "size", b ? (double)b->size : 0);
		cJSON_AddStringToObject(d, "backend", !b ? "empty" : image_disk_is(b) ? "image" : "raw");
		if (image_disk_is(b))
			cJSON_AddNumberToObject(d, "auth_failures", (double)image_disk_auth_failures(b));
		pthread_mutex_unlock(&dev->lock);
		cJSON_AddItemToArray(drives, d);
	}
}

static int control_stop(void *ctx)
{
	vm_request_stop(ctx, VM_STOP_REQUESTED, "stopped through the control socket");
	return 0;
}

static int control_drive_swap(void *ctx, unsigned index, const char *path, int fd, char *err,
			      size_t errlen)
{
	struct vm *vm = ctx;
	struct blk_backend *b;
	const char *what = path ? path : "a descriptor";
	int r;

	if (index >= vm->nblk) {
		if (fd >= 0)
			close(fd);
		return sv_errf(-ENODEV, err, errlen, "no drive %u (the VM has %u)", index, vm->nblk);
	}
	r = path ? raw_file_create(&b, path, vm->blk[index].read_only)
		 : raw_file_create_fd(&b, fd, vm->blk[index].read_only);
	if (r == 0) {
		r = virtio_blk_replace(&vm->blk_mmio[index].dev, b);
		if (r < 0)
			blk_backend_destroy(b);
	}
	if (r < 0)
		return sv_errf(r, err, errlen, "drive %u: '%s': %s", index, what,
			       r == -EBADF && !path ? "not open for what the drive needs" : strerror(-r));
	sv_info("drive %u now backed by %s", index, what);
	return 0;
}

static int control_drive_find(void *ctx, const char *serial)
{
	struct vm *vm = ctx;

	for (unsigned i = 0; i < vm->nblk; i++)
		if (!strcmp(vm->blk[i].serial, serial))
			return (int)i;
	return -ENODEV;
}

static int control_drive_attach(void *ctx, unsigned index, const char *path, int fd, const struct simage_keys *keys,
				const char *overlay_dir, int overlay_fd, char *err, size_t errlen)
{
	struct vm *vm = ctx;
	struct blk_backend *b;
	char label[48];
	int r;

	if (!path)
		path = "a descriptor";
	if (index >= vm->nblk) {
		if (fd >= 0)
			close(fd);
		if (overlay_fd >= 0)
			close(overlay_fd);
		return sv_errf(-ENODEV, err, errlen, "no drive %u (the VM has %u)", index, vm->nblk);
	}
	snprintf(label, sizeof(label), "drive %u (%s)", index, vm->blk[index].serial);
	if (keys && fd >= 0 && overlay_fd >= 0) {
		r = image_disk_create_fd(&b, fd, keys, overlay_fd, label);
	} else if (keys) {
		/* One of the pair by path: make the other a descriptor too, then one constructor. */
		int ifd = fd >= 0 ? fd : open(path, O_RDONLY | O_CLOEXEC);
		int ofd = overlay_fd >= 0 ? overlay_fd : open(overlay_dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

		r = ifd < 0 || ofd < 0 ? -errno : image_disk_create_fd(&b, ifd, keys, ofd, label);
		if (r < 0 && (ifd < 0 || ofd < 0)) {
			if (ifd >= 0)
				close(ifd);
			if (ofd >= 0)
				close(ofd);
		}
	} else {
		r = fd >= 0 ? raw_file_create_fd(&b, fd, vm->blk[index].read_only)
			    : raw_file_create(&b, path, vm->blk[index].read_only);
	}
	if (r <= SIMAGE_E_TRUNCATED)
		return sv_errf(-EINVAL, err, errlen, "drive %u: '%s': %s", index, path,
			    r == SIMAGE_E_AUTH ? "the image failed authentication (tampered, or another key)"
					       : simage_strerror(r));
	if (r < 0)
		return sv_errf(r, err, errlen, "drive %u: '%s': %s", index, path, strerror(-r));
	r = virtio_blk_replace(&vm->blk_mmio[index].dev, b);
	if (r < 0) {
		blk_backend_destroy(b);
		return sv_errf(r, err, errlen, "drive %u: %s", index, strerror(-r));
	}
	sv_info("drive %u now backed by %s%s", index, path, keys ? " (encrypted image, overlay)" : "");
	return 0;
}

static int control_drive_detach(void *ctx, unsigned index, char *err, size_t errlen)
{
	struct vm *vm = ctx;

	if (index >= vm->nblk)
		return sv_errf(-ENODEV, err, errlen, "no drive %u (the VM has %u)", index, vm->nblk);
	virtio_blk_replace(&vm->blk_mmio[index].dev, NULL);
	sv_info("drive %u is empty", index);
	return 0;
}

static int control_net_status(void *ctx, cJSON *reply, char *err, size_t errlen)
{
	struct vm *vm = ctx;
	cJSON *n;

	if (!vm->has_net)
		return sv_errf(-ENODEV, err, errlen, "the VM has no network device");
	n = cJSON_AddObjectToObject(reply, "net");
	pthread_mutex_lock(&vm->net_mmio.dev.lock);
	net_egress_status(&vm->egress, n);
	cJSON_AddNumberToObject(n, "tx_frames", (double)vm->net.stats.tx_frames);
	cJSON_AddNumberToObject(n, "tx_bytes", (double)vm->net.stats.tx_bytes);
	cJSON_AddNumberToObject(n, "tx_dropped", (double)vm->net.stats.tx_dropped);
	cJSON_AddNumberToObject(n, "rx_frames", (double)vm->net.stats.rx_frames);
	cJSON_AddNumberToObject(n, "rx_bytes", (double)vm->net.stats.rx_bytes);
	cJSON_AddNumberToObject(n, "rx_dropped", (double)vm->net.stats.rx_dropped);
	cJSON_AddNumberToObject(n, "tx_gso", (double)vm->net.stats.tx_gso);
	cJSON_AddNumberToObject(n, "tx_csum", (double)vm->net.stats.tx_csum);
	cJSON_AddNumberToObject(n, "rx_gso", (double)vm->net.stats.rx_gso);
	cJSON_AddNumberToObject(n, "rx_csum", (double)vm->net.stats.rx_csum);
	cJSON_AddBoolToObject(n, "vnet_hdr", vm->net.vnet_hdr);
	cJSON_AddNumberToObject(n, "tap_offloads", (double)vm->net.tap_offloads);
	virtio_dev_queue_status(&vm->net_mmio.dev, 0, cJSON_AddObjectToObject(n, "rxq"));
	virtio_dev_queue_status(&vm->net_mmio.dev, 1, cJSON_AddObjectToObject(n, "txq"));
	cJSON_AddBoolToObject(n, "tap_polled", vm->net.tap_polled);
	cJSON_AddBoolToObject(n, "rx_frame_waiting", vm->net.rx_pending);
	pthread_mutex_unlock(&vm->net_mmio.dev.lock);
	return 0;
}

static int control_vsock_status(void *ctx, cJSON *reply, char *err, size_t errlen)
{
	struct vm *vm = ctx;

	if (!vm->has_vsock)
		return sv_errf(-ENODEV, err, errlen, "the VM has no vsock device");
	pthread_mutex_lock(&vm->vsock_mmio.dev.lock);
	vsock_dev_status(&vm->vsock, cJSON_AddObjectToObject(reply, "vsock"));
	pthread_mutex_unlock(&vm->vsock_mmio.dev.lock);
	return 0;
}

/* A new egress policy from a file; it governs the next frame the guest sends. */
static int control_net_policy(void *ctx, const char *path, int fd, char *err, size_t errlen)
{
	struct vm *vm = ctx;
	int r = -ENODEV;

	if (!vm->has_net)
		sv_errf(r, err, errlen, "the VM has no network device");
	if (vm->has_net) {
		pthread_mutex_lock(&vm->net_mmio.dev.lock);
		r = path ? net_egress_load_file(&vm->egress, path, err, errlen)
			 : net_egress_load_fd(&vm->egress, fd, "(descriptor)", err, errlen);
		pthread_mutex_unlock(&vm->net_mmio.dev.lock);
	}
	if (fd >= 0)
		close(fd);
	if (r == 0)
		sv_info("net: egress policy replaced from %s", path ? path : "a descriptor");
	return r;
}

static int control_pause(void *ctx, bool pause, cJSON *reply, char *err, size_t errlen)
{
	struct vm *vm = ctx;
	int r = 0;

	if (pause && !vm_paused(vm)) {
		r = vm_pause(vm);
		if (r < 0)
			return sv_errf(r, err, errlen, "pause: %s",
				       r == -EBUSY ? "a vCPU did not stop within a second; try again" : "the VM is stopping");
		sv_info("VM paused");
	} else if (!pause && vm_paused(vm)) {
		vm_resume(vm);
		sv_info("VM resumed");
	}
	cJSON_AddStringToObject(reply, "state", vm_paused(vm) ? "paused" : "running");
	return r;
}

static int control_snapshot(void *ctx, const char *dir, int state_fd, int mem_fd, const uint8_t *memory_key,
			    cJSON *reply, char *err, size_t errlen)
{
	struct vm *vm = ctx;
	uint64_t t0 = vm_now_ns(), bytes = 0;
	int r = 0;

	if (dir) {
		char path[4096];

		snprintf(path, sizeof(path), "%s/state", dir);
		state_fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
		snprintf(path, sizeof(path), "%s/memory", dir);
		mem_fd = state_fd < 0 ? -1 : open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
		if (mem_fd < 0)
			r = sv_errf(-errno, err, errlen, "snapshot: '%s': %s", path, strerror(errno));
	} else if (fd_spec_check(state_fd, FD_SPEC_REG, FD_SPEC_WRITE) < 0 ||
		   fd_spec_check(mem_fd, FD_SPEC_REG, FD_SPEC_WRITE) < 0) {
		r = sv_errf(-EBADF, err, errlen, "snapshot: state_fd and memory_fd must be regular files open for writing");
	}
	if (r == 0)
		r = vm_snapshot(vm, state_fd, mem_fd, memory_key, &bytes, err, errlen);
	if (state_fd >= 0)
		close(state_fd);
	if (mem_fd >= 0)
		close(mem_fd);
	cJSON_AddStringToObject(reply, "state", vm_paused(vm) ? "paused" : "running");
	if (r < 0)
		return r;
	cJSON_AddNumberToObject(reply, "memory_bytes", (double)bytes);
	cJSON_AddNumberToObject(reply, "snapshot_ms", (double)(vm_now_ns() - t0) / 1e6);
	cJSON_AddBoolToObject(reply, "memory_sealed", memory_key != NULL);
	sv_info("snapshot written in %.1f ms (%llu MiB of guest RAM%s); the VM stays paused",
		(double)(vm_now_ns() - t0) / 1e6, (unsigned long long)(bytes >> 20), memory_key ? ", sealed" : "");
	return 0;
}

static const struct control_ops vm_control_ops = {
	.status = control_status,
	.stop = control_stop,
	.drive_swap = control_drive_swap,
	.drive_find = control_drive_find,
	.drive_attach = control_drive_attach,
	.drive_detach = control_drive_detach,
	.net_status = control_net_status,
	.net_policy = control_net_policy,
	.vsock_status = control_vsock_status,
	.pause = control_pause,
	.snapshot = control_snapshot,
};

static int setup_loop(struct vm *vm)
{
	sigset_t set;
	int r;

	r = event_loop_init(&vm->loop);
	if (r < 0)
		return r;
	sigemptyset(&set);
	sigaddset(&set, SIGINT);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGHUP);
	vm->signal_h = (struct event_handler){ .fd = signalfd(-1, &set, SFD_CLOEXEC | SFD_NONBLOCK),
					       .cb = on_signal, .opaque = vm };
	if (vm->signal_h.fd < 0)
		return -errno;
	r = event_loop_add(&vm->loop, &vm->signal_h, EPOLLIN);
	if (r < 0)
		return r;
	vm->stop_h.cb = on_stop;
	vm->stop_h.opaque = vm;
	r = event_loop_add(&vm->loop, &vm->stop_h, EPOLLIN);
	if (r < 0)
		return r;
	if (vm->cfg->boot_timeout_s && !vm->restored) {
		struct itimerspec its = { .it_value = { .tv_sec = vm->cfg->boot_timeout_s } };

		vm->timeout_h = (struct event_handler){
			.fd = timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | TFD_NONBLOCK),
			.cb = on_boot_timeout, .opaque = vm };
		if (vm->timeout_h.fd < 0)
			return -errno;
		if (timerfd_settime(vm->timeout_h.fd, 0, &its, NULL) < 0)
			return -errno;
		r = event_loop_add(&vm->loop, &vm->timeout_h, EPOLLIN);
		if (r < 0)
			return r;
	}
	for (unsigned i = 0; i < vm->nvirtio; i++) {
		r = virtio_mmio_attach(vm->virtio[i], &vm->loop);
		if (r < 0)
			return r;
	}
	if (vm->has_vsock) {
		r = vsock_dev_start(&vm->vsock, &vm->vsock_mmio.dev, &vm->loop);
		if (r < 0) {
			sv_err("vsock socket %s: %s", vm->cfg->vsock_path, strerror(-r));
			return r;
		}
	}
	if (vm->has_net) {
		r = net_dev_start(&vm->net, &vm->net_mmio.dev, &vm->loop);
		if (r < 0) {
			sv_err("net: %s", strerror(-r));
			return r;
		}
	}
	if (vm->cfg->control_path) {
		int lfd = vm->cfg->control_fd >= 0 ? fd_spec_open(NULL, vm->cfg->control_fd, 0, 0) : -1;

		r = lfd < 0 && vm->cfg->control_fd >= 0
			    ? lfd
			    : control_create(&vm->control, &vm->loop, lfd >= 0 ? NULL : vm->cfg->control_path, lfd,
					     &vm_control_ops, vm);
		if (r < 0) {
			sv_err("control socket %s: %s", vm->cfg->control_path, strerror(-r));
			return r;
		}
	}
	return 0;
}

static int start_vcpus(struct vm *vm)
{
	int r;

	vm->vcpus = calloc(vm->cfg->cpus, sizeof(*vm->vcpus));
	if (!vm->vcpus)
		return -ENOMEM;
	for (unsigned i = 0; i < vm->cfg->cpus; i++) {
		r = vcpu_init(&vm->vcpus[i], vm, i);
		if (r < 0) {
			sv_err("creating vCPU %u: %s", i, strerror(-r));
			return r;
		}
		vm->nvcpus = i + 1;
		struct x86_cpuid_opts opts = { .apic_id = i, .ncpus = vm->cfg->cpus,
					       .tsc_deadline = vm->tsc_deadline,
					       .xcr0 = vm->xsave.xcr0, .xsave_size = vm->xsave_size };

		if (vm->restored) {
			char err[256];
			unsigned skipped = 0;

			r = x86_vcpu_state_restore(vm->vcpus[i].fd, i, vm->xsave_size, vm->restore_recs, vm->restore_nrecs,
						   &skipped, err, sizeof(err));
			if (r < 0) {
				sv_err("%s", err);
				return r;
			}
			if (skipped)
				sv_debug("vCPU %u: %u MSRs of the snapshot refused by KVM", i, skipped);
			continue;
		}
		r = x86_vcpu_setup(vm->vcpus[i].fd, &opts, vm->cpuid, &vm->boot);
		if (r < 0) {
			sv_err("setting up vCPU %u: %s", i, strerror(-r));
			return r;
		}
	}
	vm_restore_release(vm);
	sv_debug("%.3f ms: vCPUs set up", (double)(vm_now_ns() - vm->start_ns) / 1e6);
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		r = vcpu_start(&vm->vcpus[i]);
		if (r < 0) {
			sv_err("starting vCPU %u: %s", i, strerror(-r));
			return r;
		}
	}
	return 0;
}

enum vm_stop_reason vm_run(struct vm *vm)
{
	enum vm_stop_reason reason;
	int r;

	r = setup_loop(vm);
	if (r == 0)
		r = start_vcpus(vm);
	if (r == 0 && vm->restored) {
		/* Buffers the guest made available before the snapshot get served without a new notification. */
		for (unsigned i = 0; i < vm->nvirtio; i++)
			virtio_mmio_kick_all(vm->virtio[i]);
		vm->restore_ns = vm_now_ns() - vm->start_ns;
		sv_info("restored from snapshot in %.1f ms", (double)vm->restore_ns / 1e6);
	}
	if (r < 0)
		vm_request_stop(vm, VM_STOP_ERROR, "could not start the VM");
	/* Set-up is over: from here on this thread serves the guest's devices and the control socket. */
	if (r == 0) {
		r = vmm_seccomp_load(VMM_SECCOMP_MAIN, vm->cfg->seccomp,
				     &(struct vmm_seccomp_ctx){ .kick_signal = VCPU_KICK_SIGNAL });
		if (r < 0) {
			sv_err("loading the main thread's seccomp filter: %s", strerror(-r));
			vm_request_stop(vm, VM_STOP_ERROR, "could not load the seccomp filter");
		}
	}
	while (atomic_load(&vm->stop_reason) == VM_RUNNING) {
		r = event_loop_run_once(&vm->loop, -1);
		if (r < 0) {
			vm_request_stop(vm, VM_STOP_ERROR, "event loop failed");
			break;
		}
	}
	stop_virtio(vm);
	for (unsigned i = 0; i < vm->nvcpus; i++)
		vcpu_kick(&vm->vcpus[i]);
	for (unsigned i = 0; i < vm->nvcpus; i++) {
		vcpu_join(&vm->vcpus[i]);
		sv_debug("vCPU %u: %lu exits to user space (%lu port I/O, %lu MMIO)", i,
			 vm->vcpus[i].exits, vm->vcpus[i].pio_exits, vm->vcpus[i].mmio_exits);
	}
	if (vm->serial_ready)
		serial_flush(&vm->serial);

	reason = (enum vm_stop_reason)atomic_load(&vm->stop_reason);
	/* With panic=-1 a panicking kernel resets; the banner on the console tells. */
	if (atomic_load(&vm->panicked) &&
	    (reason == VM_STOP_GUEST_RESET || reason == VM_STOP_GUEST_SHUTDOWN ||
	     reason == VM_STOP_GUEST_CRASH)) {
		reason = VM_STOP_GUEST_PANIC;
		snprintf(vm->stop_detail, sizeof(vm->stop_detail), "guest kernel panicked");
	}
	return reason;
}
