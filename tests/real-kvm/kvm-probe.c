/*
 * kvm-probe: what this host's KVM offers the VMM, for tests/real-kvm/check.
 *
 *   kvm-probe caps     the API version and each capability the VMM uses (or reads)
 *   kvm-probe cpuid    KVM_GET_SUPPORTED_CPUID, one entry per line in the format of
 *                      tests/unit/data/cpuid-*.txt (function index flags eax ebx ecx edx)
 *   kvm-probe cpuid-amx  the same after asking for AMX (ARCH_REQ_XCOMP_GUEST_PERM), as QEMU does
 *
 * Built static so it runs on any x86-64 Linux host. Exit 1 when /dev/kvm cannot be used.
 */
#include <errno.h>
#include <fcntl.h>
#include <linux/kvm.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/syscall.h>
#include <unistd.h>

#define ARCH_GET_XCOMP_GUEST_PERM 0x1024
#define ARCH_REQ_XCOMP_GUEST_PERM 0x1025
#define XFEATURE_XTILEDATA 18

static const struct {
	int cap;
	const char *name;
	const char *why;
} caps[] = {
	{ KVM_CAP_USER_MEMORY, "USER_MEMORY", "required" },
	{ KVM_CAP_IRQCHIP, "IRQCHIP", "required" },
	{ KVM_CAP_HLT, "HLT", "required" },
	{ KVM_CAP_SET_TSS_ADDR, "SET_TSS_ADDR", "required" },
	{ KVM_CAP_SET_IDENTITY_MAP_ADDR, "SET_IDENTITY_MAP_ADDR", "required" },
	{ KVM_CAP_EXT_CPUID, "EXT_CPUID", "required" },
	{ KVM_CAP_PIT2, "PIT2", "required" },
	{ KVM_CAP_IMMEDIATE_EXIT, "IMMEDIATE_EXIT", "required" },
	{ KVM_CAP_IOEVENTFD, "IOEVENTFD", "required" },
	{ KVM_CAP_IRQFD, "IRQFD", "required" },
	{ KVM_CAP_TSC_DEADLINE_TIMER, "TSC_DEADLINE_TIMER", "used when present" },
	{ KVM_CAP_XSAVE, "XSAVE", "used when present (KVM_SET_XSAVE)" },
	{ KVM_CAP_XSAVE2, "XSAVE2", "buffer size for KVM_SET_XSAVE" },
	{ KVM_CAP_XCRS, "XCRS", "used when present (KVM_SET_XCRS)" },
	{ KVM_CAP_MAX_VCPUS, "MAX_VCPUS", "value" },
	{ KVM_CAP_NR_VCPUS, "NR_VCPUS", "value" },
	{ KVM_CAP_NESTED_STATE, "NESTED_STATE", "informative: nested support in this KVM" },
	{ KVM_CAP_X86_USER_SPACE_MSR, "X86_USER_SPACE_MSR", "informative" },
	{ KVM_CAP_EXIT_ON_EMULATION_FAILURE, "EXIT_ON_EMULATION_FAILURE", "informative" },
};

static int open_kvm(void)
{
	int fd = open("/dev/kvm", O_RDWR | O_CLOEXEC);

	if (fd < 0) {
		fprintf(stderr, "kvm-probe: /dev/kvm: %s\n", strerror(errno));
		return -1;
	}
	return fd;
}

static int print_caps(int fd)
{
	printf("KVM_GET_API_VERSION %d\n", ioctl(fd, KVM_GET_API_VERSION, 0));
	for (size_t i = 0; i < sizeof(caps) / sizeof(caps[0]); i++)
		printf("KVM_CAP_%-26s %4d  (%s)\n", caps[i].name,
		       ioctl(fd, KVM_CHECK_EXTENSION, caps[i].cap), caps[i].why);
	return 0;
}

static int print_cpuid(int fd, int amx)
{
	unsigned long perm = 0;

	if (amx) {
		long r = syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_GUEST_PERM, XFEATURE_XTILEDATA);

		printf("# ARCH_REQ_XCOMP_GUEST_PERM(XTILEDATA): %s\n", r == 0 ? "granted" : strerror(errno));
	}
	if (syscall(SYS_arch_prctl, ARCH_GET_XCOMP_GUEST_PERM, &perm) == 0)
		printf("# guest XSAVE permission of this process: 0x%lx\n", perm);
	for (unsigned n = 64; n <= 4096; n *= 2) {
		struct kvm_cpuid2 *c = calloc(1, sizeof(*c) + n * sizeof(c->entries[0]));

		if (!c)
			return 1;
		c->nent = n;
		if (ioctl(fd, KVM_GET_SUPPORTED_CPUID, c) == 0) {
			printf("# KVM_GET_SUPPORTED_CPUID, %u entries: function index flags eax ebx ecx edx\n",
			       c->nent);
			for (unsigned i = 0; i < c->nent; i++) {
				struct kvm_cpuid_entry2 *e = &c->entries[i];

				printf("%#010x %#x %u %#010x %#010x %#010x %#010x\n", e->function, e->index,
				       e->flags, e->eax, e->ebx, e->ecx, e->edx);
			}
			free(c);
			return 0;
		}
		free(c);
		if (errno != E2BIG) {
			fprintf(stderr, "kvm-probe: KVM_GET_SUPPORTED_CPUID: %s\n", strerror(errno));
			return 1;
		}
	}
	return 1;
}

int main(int argc, char **argv)
{
	int fd, r;

	if (argc != 2 || (strcmp(argv[1], "caps") && strcmp(argv[1], "cpuid") &&
			  strcmp(argv[1], "cpuid-amx"))) {
		fprintf(stderr, "usage: kvm-probe caps|cpuid|cpuid-amx\n");
		return 2;
	}
	fd = open_kvm();
	if (fd < 0)
		return 1;
	if (!strcmp(argv[1], "caps"))
		r = print_caps(fd);
	else
		r = print_cpuid(fd, !strcmp(argv[1], "cpuid-amx"));
	close(fd);
	return r;
}
