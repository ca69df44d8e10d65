#ifndef SANDVM_GUEST_AGENT_PROBE_PROBE_SPOOF_H
#define SANDVM_GUEST_AGENT_PROBE_PROBE_SPOOF_H

#include "probe_report.h"
#include "probe_spec.h"

/*
 * Runs every spoof-ip and spoof-mac probe of plan, one after another; sets
 * results[i] for those specs[i] only. Call it after every other probe:
 * spoof-mac changes an interface's MAC address for a moment (and always
 * puts it back before it returns).
 */
void probe_spoof_run(const struct probe_plan *plan, struct probe_result *results);

#endif
