#ifndef SANDVM_API_SANDBOXD_QUERY_H
#define SANDVM_API_SANDBOXD_QUERY_H

#include <stdbool.h>
#include <stddef.h>

#define HTTP_PARAM_MAX 512

/* The percent-decoded value of query parameter name; false when absent. */
bool http_query_param(const char *query, const char *name, char *out, size_t cap);
/* Every value of a repeated parameter, at most max. */
size_t http_query_params(const char *query, const char *name, char out[][HTTP_PARAM_MAX], size_t max);

#endif
