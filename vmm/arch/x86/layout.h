#ifndef SANDVM_VMM_ARCH_X86_LAYOUT_H
#define SANDVM_VMM_ARCH_X86_LAYOUT_H

/*
 * Guest physical memory map. Low memory holds the structures the VMM writes
 * for the kernel; everything is placed where no boot protocol puts anything.
 *
 *   0x00500  GDT
 *   0x06000  PVH start info, module list, memory map
 *   0x07000  zero page (struct boot_params)
 *   0x09000  page tables: PML4, PDPT, 4 page directories (identity map 4 GiB)
 *   0x20000  kernel command line
 *   0x9fc00  reserved (EBDA, as on a PC)
 *   0xf0000  MP table (the BIOS area Linux scans; 64 KiB holds 254 CPUs)
 *   0x100000 kernel (bzImage: at its preferred address; ELF: at its p_paddr)
 *   ...      initrd, at the top of low RAM
 *   3 GiB .. 4 GiB  MMIO hole: virtio-mmio devices, I/O APIC, local APIC
 */

#define X86_GDT_ADDR 0x500ull
#define X86_PVH_INFO_ADDR 0x6000ull
#define X86_PVH_INFO_SIZE 0x1000ull
#define X86_ZERO_PAGE_ADDR 0x7000ull
#define X86_BOOT_STACK_ADDR 0x8ff0ull
#define X86_PML4_ADDR 0x9000ull
#define X86_PDPT_ADDR 0xa000ull
#define X86_PD_ADDR 0xb000ull /* four pages: 0xb000..0xefff */
#define X86_CMDLINE_ADDR 0x20000ull
#define X86_CMDLINE_MAX 0x10000ull
#define X86_EBDA_START 0x9fc00ull
#define X86_MPTABLE_ADDR 0xf0000ull
#define X86_MPTABLE_MAX 0x10000ull
#define X86_BIOS_HOLE_START 0xa0000ull
#define X86_HIMEM_START 0x100000ull

#define X86_MMIO_HOLE_START 0xc0000000ull
#define X86_MMIO_HOLE_END 0x100000000ull
#define X86_VIRTIO_MMIO_BASE 0xd0000000ull
#define X86_IOAPIC_ADDR 0xfec00000ull
#define X86_LAPIC_ADDR 0xfee00000ull
/* KVM needs three pages for the real-mode TSS and one for the EPT identity map. */
#define X86_KVM_IDENTITY_MAP_ADDR 0xfffbc000ull
#define X86_KVM_TSS_ADDR 0xfffbd000ull

/* Legacy I/O ports we emulate in user space. */
#define X86_PORT_I8042_DATA 0x60
#define X86_PORT_I8042_CMD 0x64
#define X86_PORT_COM1 0x3f8
#define X86_IRQ_COM1 4
/* Written by the guest's init (value 123) so boot time is measured from inside. */
#define X86_PORT_BOOT_TIMER 0x440
#define X86_BOOT_TIMER_MAGIC 123

#endif
