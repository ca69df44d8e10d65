#ifndef SANDVM_GUEST_AGENT_PROBE_PROBE_NET_H
#define SANDVM_GUEST_AGENT_PROBE_PROBE_NET_H

#include "probe_report.h"
#include "probe_spec.h"

/*
 * Runs every tcp, icmp and vsock probe of plan at once: each started on a
 * non-blocking socket, then one poll() loop until each has its answer or
 * plan->timeout_ms has passed since the last one started, so any number of
 * them takes about one timeout. Sets results[i] for those specs[i] only.
 */
void probe_net_run(const struct probe_plan *plan, struct probe_result *results);

#endif
