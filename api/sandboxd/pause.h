#ifndef SANDVM_API_SANDBOXD_PAUSE_H
#define SANDVM_API_SANDBOXD_PAUSE_H

/*
 * A paused sandbox's snapshot on disk (docs/api.md, "Pause and resume"):
 * RUN_DIR/pause/state and RUN_DIR/pause/memory, root's, 0600, written by the
 * sandbox's own VMM through descriptors opened here (a jailed VMM opens no
 * host path) and read back, also as descriptors, by the VMM that resumes it
 * (sandbox_vm_config.restore). The files are not sealed: the memory file
 * holds the guest's RAM in clear, readable by root on the host only.
 */

#include <stdbool.h>
#include <stddef.h>

#define PAUSE_DIR "pause"

/* RUN_DIR/pause into out. */
void pause_dir(const char *run_dir, char *out, size_t cap);
/* Both files are there and regular (no symlink followed). */
bool pause_files_present(const char *run_dir);
/* Removes the files and the folder; none there is fine. */
void pause_files_remove(const char *run_dir);
/*
 * For a worker thread (it blocks while the VMM writes guest RAM): makes the
 * folder, creates both files, sends the VMM at control_path the snapshot
 * request with them, and syncs them to disk. The VM is left paused. On
 * failure the VM is asked to resume (a snapshot that failed midway may have
 * paused it) and the files go. 0 with *memory_bytes, or -errno with why.
 */
int pause_snapshot(const char *run_dir, const char *control_path, unsigned memory_mib, long long *memory_bytes,
		   char *why, size_t cap);

#endif
