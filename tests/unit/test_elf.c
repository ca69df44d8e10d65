/* ELF vmlinux / PVH note parsing with well-formed, truncated and hostile files. */
#include <elf.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "arch/x86/elf.h"

#define FILE_SIZE 8192
#define LOAD_OFF 0x1000
#define LOAD_SIZE 0x800
#define NOTE_OFF 0x400
#define PADDR 0x1000000
#define ENTRY (PADDR + 0x100)

struct note {
	uint32_t namesz, descsz, type;
	char name[4];
	uint64_t desc;
};

static uint8_t *make_elf(size_t *len)
{
	uint8_t *f = calloc(1, FILE_SIZE);
	Elf64_Ehdr *eh = (Elf64_Ehdr *)f;
	Elf64_Phdr *ph = (Elf64_Phdr *)(f + sizeof(*eh));
	struct note *n = (struct note *)(f + NOTE_OFF);

	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_type = ET_EXEC;
	eh->e_machine = EM_X86_64;
	eh->e_phoff = sizeof(*eh);
	eh->e_phentsize = sizeof(Elf64_Phdr);
	eh->e_phnum = 2;
	ph[0] = (Elf64_Phdr){ .p_type = PT_LOAD, .p_offset = LOAD_OFF, .p_paddr = PADDR,
			      .p_filesz = LOAD_SIZE, .p_memsz = LOAD_SIZE * 4 };
	ph[1] = (Elf64_Phdr){ .p_type = PT_NOTE, .p_offset = NOTE_OFF,
			      .p_filesz = sizeof(*n) };
	*n = (struct note){ .namesz = 4, .descsz = 8, .type = 18, .name = "Xen",
			    .desc = ENTRY };
	memset(f + LOAD_OFF, 0xcc, LOAD_SIZE);
	*len = FILE_SIZE;
	return f;
}

static Elf64_Phdr *phdr(uint8_t *f, int i)
{
	return (Elf64_Phdr *)(f + sizeof(Elf64_Ehdr)) + i;
}

static void valid_elf_parses(void **state)
{
	struct x86_elf_image img;
	size_t len;
	uint8_t *f = make_elf(&len);

	(void)state;
	assert_true(x86_elf_is_elf(f, len));
	assert_int_equal(x86_elf_parse(f, len, &img, NULL), 0);
	assert_int_equal(img.pvh_entry, ENTRY);
	assert_int_equal(img.nseg, 1);
	assert_int_equal(img.seg[0].paddr, PADDR);
	assert_int_equal(img.seg[0].filesz, LOAD_SIZE);
	assert_int_equal(img.seg[0].memsz, LOAD_SIZE * 4);
	assert_ptr_equal(img.seg[0].data, f + LOAD_OFF);
	assert_int_equal(img.lowest, PADDR);
	assert_int_equal(img.highest, PADDR + LOAD_SIZE * 4);
	free(f);
}

static void four_byte_note_accepted(void **state)
{
	struct x86_elf_image img;
	size_t len;
	uint8_t *f = make_elf(&len);
	struct note *n = (struct note *)(f + NOTE_OFF);

	(void)state;
	n->descsz = 4;
	phdr(f, 1)->p_filesz = 20;
	assert_int_equal(x86_elf_parse(f, len, &img, NULL), 0);
	assert_int_equal(img.pvh_entry, ENTRY);
	free(f);
}

static void missing_note_is_enoent(void **state)
{
	struct x86_elf_image img;
	const char *why;
	size_t len;
	uint8_t *f = make_elf(&len);

	(void)state;
	((struct note *)(f + NOTE_OFF))->type = 1;
	assert_int_equal(x86_elf_parse(f, len, &img, &why), -ENOENT);
	assert_non_null(strstr(why, "PVH"));
	free(f);
}

static void rejects_hostile_headers(void **state)
{
	struct x86_elf_image img;
	size_t len;
	uint8_t *f;

	(void)state;
#define CASE(expr, expect)                                                   \
	do {                                                                 \
		f = make_elf(&len);                                          \
		expr;                                                        \
		assert_int_equal(x86_elf_parse(f, len, &img, NULL), expect); \
		free(f);                                                     \
	} while (0)
	CASE(((Elf64_Ehdr *)f)->e_machine = EM_386, -ENOEXEC);
	CASE(((Elf64_Ehdr *)f)->e_ident[EI_CLASS] = ELFCLASS32, -ENOEXEC);
	CASE(((Elf64_Ehdr *)f)->e_type = ET_DYN, -ENOEXEC);
	CASE(((Elf64_Ehdr *)f)->e_phoff = FILE_SIZE - 10, -EINVAL);
	CASE(((Elf64_Ehdr *)f)->e_phoff = UINT64_MAX - 8, -EINVAL);
	CASE(((Elf64_Ehdr *)f)->e_phnum = 0xffff, -EINVAL);
	CASE(((Elf64_Ehdr *)f)->e_phentsize = 12, -EINVAL);
	CASE(phdr(f, 0)->p_offset = FILE_SIZE, -EINVAL);
	CASE(phdr(f, 0)->p_filesz = UINT64_MAX, -EINVAL);
	CASE(phdr(f, 0)->p_filesz = LOAD_SIZE * 8, -EINVAL);  /* filesz > memsz */
	CASE(phdr(f, 0)->p_paddr = 0x1000, -EINVAL);          /* over the boot structures */
	CASE(phdr(f, 0)->p_paddr = UINT64_MAX - 0x10, -EINVAL);
	CASE(phdr(f, 0)->p_paddr = 0xbfffff00, -EINVAL);      /* into the MMIO hole */
	CASE(phdr(f, 0)->p_type = PT_NULL, -EINVAL);          /* nothing to load */
	CASE(((struct note *)(f + NOTE_OFF))->namesz = 0xfffffff0, -EINVAL);
	CASE(((struct note *)(f + NOTE_OFF))->descsz = 0xfffffff0, -EINVAL);
	CASE(((struct note *)(f + NOTE_OFF))->descsz = 2, -EINVAL);
	CASE(((struct note *)(f + NOTE_OFF))->desc = 1ull << 40, -EINVAL);
	CASE(((struct note *)(f + NOTE_OFF))->desc = 0x100, -EINVAL); /* entry outside */
#undef CASE
}

static void too_many_segments(void **state)
{
	struct x86_elf_image img;
	size_t len;
	uint8_t *f = make_elf(&len);
	Elf64_Ehdr *eh = (Elf64_Ehdr *)f;

	(void)state;
	eh->e_phoff = 0x1800;
	eh->e_phnum = 17;
	for (int i = 0; i < 17; i++)
		*((Elf64_Phdr *)(f + 0x1800) + i) = (Elf64_Phdr){
			.p_type = PT_LOAD, .p_offset = LOAD_OFF, .p_paddr = PADDR + i * 0x10000,
			.p_filesz = 16, .p_memsz = 16 };
	assert_int_equal(x86_elf_parse(f, len, &img, NULL), -EINVAL);
	free(f);
}

static void every_truncation_rejected(void **state)
{
	struct x86_elf_image img;
	size_t len;
	uint8_t *f = make_elf(&len);

	(void)state;
	/* The load segment ends at LOAD_OFF + LOAD_SIZE: any shorter file is invalid. */
	for (size_t n = 0; n < LOAD_OFF + LOAD_SIZE; n++) {
		uint8_t *copy = malloc(n ? n : 1);

		memcpy(copy, f, n);
		assert_int_not_equal(x86_elf_parse(copy, n, &img, NULL), 0);
		free(copy);
	}
	free(f);
}

static void random_mutations_stay_in_bounds(void **state)
{
	uint64_t seed = 7;
	struct x86_elf_image img;
	size_t len;
	uint8_t *f = make_elf(&len);

	(void)state;
	for (int round = 0; round < 20000; round++) {
		uint8_t *copy = malloc(len);

		memcpy(copy, f, len);
		for (int k = 0; k < 3; k++) {
			size_t at = unit_rand(&seed) % 2 ? unit_rand(&seed) % 0xb0
							: NOTE_OFF + unit_rand(&seed) % 24;
			copy[at] = (uint8_t)unit_rand(&seed);
		}
		if (x86_elf_parse(copy, len, &img, NULL) == 0) {
			for (unsigned i = 0; i < img.nseg; i++) {
				assert_true(img.seg[i].data >= copy);
				assert_true(img.seg[i].data + img.seg[i].filesz <= copy + len);
				assert_true(img.seg[i].filesz <= img.seg[i].memsz);
			}
			assert_true(img.pvh_entry >= img.lowest && img.pvh_entry < img.highest);
		}
		free(copy);
	}
	free(f);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(valid_elf_parses),
		cmocka_unit_test(four_byte_note_accepted),
		cmocka_unit_test(missing_note_is_enoent),
		cmocka_unit_test(rejects_hostile_headers),
		cmocka_unit_test(too_many_segments),
		cmocka_unit_test(every_truncation_rejected),
		cmocka_unit_test(random_mutations_stay_in_bounds),
	};

	return cmocka_run_group_tests_name("elf", tests, NULL, NULL);
}
