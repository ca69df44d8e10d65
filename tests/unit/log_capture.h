#ifndef SANDVM_TESTS_UNIT_LOG_CAPTURE_H
#define SANDVM_TESTS_UNIT_LOG_CAPTURE_H

/*
 * lib/log.c writes each line to stderr; a test that checks what was logged
 * points file descriptor 2 at a temporary file for a while and reads it back.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct log_capture {
	FILE *file;
	int saved_fd;
};

static inline void log_capture_start(struct log_capture *c)
{
	fflush(stderr);
	c->file = tmpfile();
	assert_non_null(c->file);
	c->saved_fd = dup(STDERR_FILENO);
	assert_true(c->saved_fd >= 0);
	assert_true(dup2(fileno(c->file), STDERR_FILENO) >= 0);
}

/* Ends the capture; returns what was logged (caller frees). */
static inline char *log_capture_end(struct log_capture *c)
{
	long size;
	char *text;

	fflush(stderr);
	assert_true(dup2(c->saved_fd, STDERR_FILENO) >= 0);
	close(c->saved_fd);
	size = lseek(fileno(c->file), 0, SEEK_END);
	assert_true(size >= 0);
	text = calloc(1, (size_t)size + 1);
	assert_non_null(text);
	assert_int_equal(pread(fileno(c->file), text, (size_t)size, 0), size);
	fclose(c->file);
	return text;
}

static inline unsigned log_count_lines(const char *text, const char *needle)
{
	unsigned n = 0;

	for (const char *line = text; *line;) {
		const char *end = strchr(line, '\n');
		size_t len = end ? (size_t)(end - line) : strlen(line);

		if (!needle || memmem(line, len, needle, strlen(needle)))
			n++;
		line += len + (end ? 1 : 0);
	}
	return n;
}

#endif
