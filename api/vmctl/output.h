#ifndef SANDVM_API_VMCTL_OUTPUT_H
#define SANDVM_API_VMCTL_OUTPUT_H

/*
 * What people read on stdout: the `ls` table, `inspect`'s key: value lines,
 * and --json's pretty JSON. Strings from the server pass through a filter of
 * control characters so a tag cannot drive the terminal.
 */
typedef struct cJSON cJSON;

/* 0 or -ENOMEM */
int vmctl_print_json(const cJSON *j);
/* sandboxes: the array of sandbox objects of GET /v1/sandboxes */
int vmctl_print_table(const cJSON *sandboxes);
/* One "key: value" line per field of obj, in the server's order. */
int vmctl_print_fields(const cJSON *obj);
/*
 * The network state of GET /v1/sandboxes/ID/network: mode, addresses,
 * frame counts and the non-zero verdict counters, aligned.
 */
int vmctl_print_network(const cJSON *net);

#endif
