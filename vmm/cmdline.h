#ifndef SANDVM_VMM_CMDLINE_H
#define SANDVM_VMM_CMDLINE_H

#include <stddef.h>

/*
 * The guest kernel command line, built in a fixed buffer whose capacity is
 * what the kernel accepts, so an over-long line is refused instead of cut.
 */
struct cmdline {
	char *buf;
	size_t cap; /* bytes including the terminating NUL */
	size_t len;
};

int cmdline_init(struct cmdline *cl, size_t cap);
void cmdline_destroy(struct cmdline *cl);

/* Appends words separated by one space. -E2BIG if it would not fit (nothing
 * is appended then), -EINVAL for a control character, which the kernel's
 * parser would misread. */
int cmdline_append(struct cmdline *cl, const char *words);

#endif
