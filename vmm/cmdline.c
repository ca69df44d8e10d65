#include "cmdline.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

int cmdline_init(struct cmdline *cl, size_t cap)
{
	if (cap == 0)
		return -EINVAL;
	cl->buf = calloc(1, cap);
	if (!cl->buf)
		return -ENOMEM;
	cl->cap = cap;
	cl->len = 0;
	return 0;
}

void cmdline_destroy(struct cmdline *cl)
{
	free(cl->buf);
	cl->buf = NULL;
	cl->cap = cl->len = 0;
}

int cmdline_append(struct cmdline *cl, const char *words)
{
	size_t n, sep;

	while (*words == ' ')
		words++;
	n = strlen(words);
	while (n > 0 && words[n - 1] == ' ')
		n--;
	if (n == 0)
		return 0;
	for (size_t i = 0; i < n; i++)
		if ((unsigned char)words[i] < 0x20 || words[i] == 0x7f)
			return -EINVAL;
	sep = cl->len ? 1 : 0;
	if (cl->len + sep + n + 1 > cl->cap)
		return -E2BIG;
	if (sep)
		cl->buf[cl->len++] = ' ';
	memcpy(cl->buf + cl->len, words, n);
	cl->len += n;
	cl->buf[cl->len] = '\0';
	return 0;
}
