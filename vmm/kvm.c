#include "kvm.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>

int kvm_sys_open(const char *path, int given, int *kvm_fd)
{
	int fd = given >= 0 ? fcntl(given, F_DUPFD_CLOEXEC, 3) : open(path, O_RDWR | O_CLOEXEC);
	int v;

	if (fd < 0)
		return -errno;
	v = ioctl(fd, KVM_GET_API_VERSION, 0);
	if (v != KVM_API_VERSION) {
		close(fd);
		return -EPROTO;
	}
	*kvm_fd = fd;
	return 0;
}

int kvm_sys_check_caps(int kvm_fd, const char **missing)
{
	static const struct {
		int cap;
		const char *name;
	} needed[] = {
		{ KVM_CAP_USER_MEMORY, "KVM_CAP_USER_MEMORY" },
		{ KVM_CAP_IRQCHIP, "KVM_CAP_IRQCHIP" },
		{ KVM_CAP_HLT, "KVM_CAP_HLT" },
		{ KVM_CAP_SET_TSS_ADDR, "KVM_CAP_SET_TSS_ADDR" },
		{ KVM_CAP_SET_IDENTITY_MAP_ADDR, "KVM_CAP_SET_IDENTITY_MAP_ADDR" },
		{ KVM_CAP_EXT_CPUID, "KVM_CAP_EXT_CPUID" },
		{ KVM_CAP_PIT2, "KVM_CAP_PIT2" },
		{ KVM_CAP_IMMEDIATE_EXIT, "KVM_CAP_IMMEDIATE_EXIT" },
		{ KVM_CAP_IOEVENTFD, "KVM_CAP_IOEVENTFD" },
		{ KVM_CAP_IRQFD, "KVM_CAP_IRQFD" },
	};

	for (size_t i = 0; i < sizeof(needed) / sizeof(needed[0]); i++) {
		if (ioctl(kvm_fd, KVM_CHECK_EXTENSION, needed[i].cap) <= 0) {
			*missing = needed[i].name;
			return -ENOTSUP;
		}
	}
	return 0;
}

int kvm_sys_has_cap(int kvm_fd, int cap)
{
	return ioctl(kvm_fd, KVM_CHECK_EXTENSION, cap) > 0;
}

size_t kvm_sys_xsave_size(int kvm_fd)
{
	int n;

	if (!kvm_sys_has_cap(kvm_fd, KVM_CAP_XSAVE))
		return 0;
	n = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_XSAVE2);
	return n > (int)sizeof(struct kvm_xsave) ? (size_t)n : sizeof(struct kvm_xsave);
}

int kvm_sys_max_vcpus(int kvm_fd)
{
	int n = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_MAX_VCPUS);

	if (n <= 0)
		n = ioctl(kvm_fd, KVM_CHECK_EXTENSION, KVM_CAP_NR_VCPUS);
	/* The API documents 4 as the floor when neither is reported. */
	return n > 0 ? n : 4;
}

int kvm_sys_run_size(int kvm_fd, size_t *size)
{
	int n = ioctl(kvm_fd, KVM_GET_VCPU_MMAP_SIZE, 0);

	if (n < 0)
		return -errno;
	if ((size_t)n < sizeof(struct kvm_run))
		return -EPROTO;
	*size = (size_t)n;
	return 0;
}

int kvm_sys_create_vm(int kvm_fd, int *vm_fd)
{
	int fd;

	do {
		fd = ioctl(kvm_fd, KVM_CREATE_VM, 0);
	} while (fd < 0 && errno == EINTR);
	if (fd < 0)
		return -errno;
	*vm_fd = fd;
	return 0;
}

int kvm_sys_set_memslot(int vm_fd, uint32_t slot, uint64_t gpa, uint64_t size, void *host)
{
	struct kvm_userspace_memory_region r = {
		.slot = slot,
		.flags = 0,
		.guest_phys_addr = gpa,
		.memory_size = size,
		.userspace_addr = (uint64_t)(uintptr_t)host,
	};

	return ioctl(vm_fd, KVM_SET_USER_MEMORY_REGION, &r) < 0 ? -errno : 0;
}

int kvm_sys_setup_x86_platform(int vm_fd, uint64_t tss_addr, uint64_t identity_map_addr)
{
	struct kvm_pit_config pit = { .flags = KVM_PIT_SPEAKER_DUMMY };
	uint64_t idmap = identity_map_addr;

	if (ioctl(vm_fd, KVM_SET_IDENTITY_MAP_ADDR, &idmap) < 0)
		return -errno;
	if (ioctl(vm_fd, KVM_SET_TSS_ADDR, (unsigned long)tss_addr) < 0)
		return -errno;
	if (ioctl(vm_fd, KVM_CREATE_IRQCHIP, 0) < 0)
		return -errno;
	if (ioctl(vm_fd, KVM_CREATE_PIT2, &pit) < 0)
		return -errno;
	return 0;
}

int kvm_sys_irq_line(int vm_fd, uint32_t gsi, int level)
{
	struct kvm_irq_level l = { .irq = gsi, .level = (uint32_t)level };

	return ioctl(vm_fd, KVM_IRQ_LINE, &l) < 0 ? -errno : 0;
}

static bool module_loaded(const char *sys_module, const char *name)
{
	char path[512];
	struct stat st;

	snprintf(path, sizeof(path), "%s/%s", sys_module, name);
	return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

bool kvm_host_is_pvm(const char *sys_module)
{
	if (!sys_module)
		sys_module = "/sys/module";
	return module_loaded(sys_module, "kvm_pvm") && !module_loaded(sys_module, "kvm_intel") &&
	       !module_loaded(sys_module, "kvm_amd");
}
