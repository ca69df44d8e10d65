/* bzImage header parsing and zero-page construction, with hostile images. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "unit.h"
#include "arch/x86/bzimage.h"

#define IMG_SIZE (64 * 1024)
#define SETUP_SECTS 4

/* A minimal well-formed 64-bit-capable bzImage header over a zeroed buffer. */
static uint8_t *make_image(size_t *len)
{
	uint8_t *img = calloc(1, IMG_SIZE);
	struct setup_header h;

	memset(&h, 0, sizeof(h));
	h.setup_sects = SETUP_SECTS;
	h.boot_flag = 0xaa55;
	h.header = 0x53726448;
	h.version = 0x020f;
	h.loadflags = LOADED_HIGH;
	h.xloadflags = XLF_KERNEL_64;
	h.syssize = (IMG_SIZE - (SETUP_SECTS + 1) * 512) / 16;
	h.pref_address = 0x1000000;
	h.init_size = 0x800000;
	h.cmdline_size = 2047;
	h.initrd_addr_max = 0x7fffffff;
	h.kernel_alignment = 0x200000;
	h.relocatable_kernel = 1;
	memcpy(img + 0x1f1, &h, sizeof(h));
	*len = IMG_SIZE;
	return img;
}

static struct setup_header *hdr(uint8_t *img)
{
	return (struct setup_header *)(img + 0x1f1);
}

static void valid_image_parses(void **state)
{
	struct x86_bzimage bz;
	const char *why = NULL;
	size_t len;
	uint8_t *img = make_image(&len);

	(void)state;
	assert_int_equal(x86_bzimage_parse(img, len, &bz, &why), 0);
	assert_int_equal(bz.load_addr, 0x1000000);
	assert_int_equal(x86_bzimage_entry(&bz), 0x1000200);
	assert_int_equal(bz.cmdline_cap, 2048);
	assert_int_equal(bz.payload_size, IMG_SIZE - 5 * 512);
	assert_ptr_equal(bz.payload, img + 5 * 512);
	assert_int_equal(bz.initrd_addr_max, 0x7fffffff);
	free(img);
}

static void zero_setup_sects_means_four(void **state)
{
	struct x86_bzimage bz;
	size_t len;
	uint8_t *img = make_image(&len);

	(void)state;
	hdr(img)->setup_sects = 0;
	assert_int_equal(x86_bzimage_parse(img, len, &bz, NULL), 0);
	assert_ptr_equal(bz.payload, img + 5 * 512);
	free(img);
}

static void rejects_bad_headers(void **state)
{
	struct x86_bzimage bz;
	const char *why;
	size_t len;
	uint8_t *img;

	(void)state;
	img = make_image(&len);
	hdr(img)->header = 0x12345678;
	assert_int_equal(x86_bzimage_parse(img, len, &bz, &why), -ENOEXEC);
	free(img);

	img = make_image(&len);
	hdr(img)->boot_flag = 0;
	assert_int_equal(x86_bzimage_parse(img, len, &bz, &why), -ENOEXEC);
	free(img);

	img = make_image(&len);
	hdr(img)->version = 0x0206;
	assert_int_equal(x86_bzimage_parse(img, len, &bz, &why), -EINVAL);
	assert_non_null(strstr(why, "2.12"));
	free(img);

	img = make_image(&len);
	hdr(img)->xloadflags = 0;
	assert_int_equal(x86_bzimage_parse(img, len, &bz, &why), -EINVAL);
	free(img);

	img = make_image(&len);
	hdr(img)->pref_address = 0x1000;
	assert_int_equal(x86_bzimage_parse(img, len, &bz, &why), -EINVAL);
	free(img);

	img = make_image(&len);
	hdr(img)->init_size = 0x100; /* smaller than the payload */
	assert_int_equal(x86_bzimage_parse(img, len, &bz, &why), -EINVAL);
	free(img);

	img = make_image(&len);
	hdr(img)->kernel_alignment = 0x300000;
	assert_int_equal(x86_bzimage_parse(img, len, &bz, &why), -EINVAL);
	free(img);

	img = make_image(&len);
	hdr(img)->pref_address = UINT64_MAX - 0x1000;
	assert_int_equal(x86_bzimage_parse(img, len, &bz, &why), -EINVAL);
	free(img);
}

static void rejects_every_truncation(void **state)
{
	struct x86_bzimage bz;
	const char *why;
	size_t len;
	uint8_t *img = make_image(&len);

	(void)state;
	/* Any prefix shorter than what syssize promises must be refused. */
	for (size_t n = 0; n < len; n += (n < 4096 ? 1 : 509))
		assert_int_not_equal(x86_bzimage_parse(img, n, &bz, &why), 0);
	assert_int_equal(x86_bzimage_parse(img, len, &bz, &why), 0);
	hdr(img)->setup_sects = 255; /* setup claims more than the file holds */
	assert_int_equal(x86_bzimage_parse(img, 100000 < len ? 100000 : len, &bz, &why), -EINVAL);
	free(img);
}

static void random_bytes_never_crash(void **state)
{
	uint64_t seed = 42;
	struct x86_bzimage bz;
	size_t len;
	uint8_t *img = make_image(&len);

	(void)state;
	/* Flip random header bytes; whatever the verdict, the parse must stay in bounds. */
	for (int round = 0; round < 20000; round++) {
		uint8_t *copy = malloc(len);
		size_t cut = 0x1f1 + unit_rand(&seed) % (len - 0x1f1);

		memcpy(copy, img, len);
		for (int k = 0; k < 4; k++)
			copy[0x1f1 + unit_rand(&seed) % 0x80] = (uint8_t)unit_rand(&seed);
		if (x86_bzimage_parse(copy, cut, &bz, NULL) == 0) {
			assert_true(bz.payload >= copy && bz.payload + bz.payload_size <= copy + cut);
			assert_true(bz.load_addr >= 0x100000);
		}
		free(copy);
	}
	free(img);
}

static void zero_page_carries_inputs(void **state)
{
	struct x86_e820_entry e820[3] = {
		{ 0, 0x9fc00, 1 }, { 0x9fc00, 0x400, 2 }, { 0x100000, 0x7f00000, 1 },
	};
	struct x86_boot_inputs in = { .cmdline_gpa = 0x20000, .initrd_gpa = 0x7000000,
				      .initrd_size = 12345, .e820 = e820, .e820_count = 3 };
	struct boot_params *bp = malloc(sizeof(*bp));
	struct x86_bzimage bz;
	size_t len;
	uint8_t *img = make_image(&len);

	(void)state;
	assert_int_equal(x86_bzimage_parse(img, len, &bz, NULL), 0);
	assert_int_equal(x86_zero_page_build(bp, &bz, &in), 0);
	assert_int_equal(bp->hdr.header, 0x53726448);
	assert_int_equal(bp->hdr.type_of_loader, 0xff);
	assert_int_equal(bp->hdr.cmd_line_ptr, 0x20000);
	assert_int_equal(bp->hdr.ramdisk_image, 0x7000000);
	assert_int_equal(bp->hdr.ramdisk_size, 12345);
	assert_int_equal(bp->ext_ramdisk_image, 0);
	assert_int_equal(bp->e820_entries, 3);
	assert_int_equal(bp->e820_table[2].addr, 0x100000);
	assert_int_equal(bp->e820_table[2].size, 0x7f00000);
	assert_int_equal(bp->e820_table[1].type, 2);
	assert_true(bp->hdr.loadflags & CAN_USE_HEAP);

	in.e820_count = E820_MAX_ENTRIES_ZEROPAGE + 1;
	assert_int_equal(x86_zero_page_build(bp, &bz, &in), -EINVAL);
	free(bp);
	free(img);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(valid_image_parses),
		cmocka_unit_test(zero_setup_sects_means_four),
		cmocka_unit_test(rejects_bad_headers),
		cmocka_unit_test(rejects_every_truncation),
		cmocka_unit_test(random_bytes_never_crash),
		cmocka_unit_test(zero_page_carries_inputs),
	};

	return cmocka_run_group_tests_name("bzimage", tests, NULL, NULL);
}
