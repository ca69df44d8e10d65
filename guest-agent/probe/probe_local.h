#ifndef SANDVM_GUEST_AGENT_PROBE_PROBE_LOCAL_H
#define SANDVM_GUEST_AGENT_PROBE_PROBE_LOCAL_H

#include "probe_report.h"
#include "probe_spec.h"

/*
 * Runs every env and file probe of plan, against envp (NULL-terminated
 * "NAME=VALUE" strings) and the file system; sets results[i] for those
 * specs[i] only. Nothing here waits on the network.
 */
void probe_local_run(const struct probe_plan *plan, char *const *envp, struct probe_result *results);

#endif
