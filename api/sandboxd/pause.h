#ifndef SANDVM_API_SANDBOXD_PAUSE_H
#define SANDVM_API_SANDBOXD_PAUSE_H

/*
 * A paused sandbox's snapshot on disk (docs/api.md, "Pause and resume"):
 * RUN_DIR/pause/state and RUN_DIR/pause/memory, root's, 0600, written by the
 * sandbox's own VMM through descriptors opened here (a jailed VMM opens no
 * host path) and read back, also as descriptors, by the VMM that resumes it
 * (sandbox_vm_config.restore). The memory file is sealed (docs/vmm.md,
 * "Sealed memory file") with a random per-pause key that exists on disk only
 * as RUN_DIR/pause/key, wrapped with the managed key (snapshot_store.h); the
 * VMM gets it in the snapshot request and, on resume, through a pipe. A
 * pause folder without a key (written before memory was sealed) resumes
 * unsealed, as it was written.
 */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PAUSE_DIR "pause"
#define PAUSE_KEY_FILE "key"

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
int pause_snapshot(const char *run_dir, const char *control_path, const char *key_store, const char *sandbox_id,
		   unsigned memory_mib, long long *memory_bytes, char *why, size_t cap);
/*
 * A pause cut short (the daemon restarted while its VMM wrote the snapshot):
 * the VM, which a snapshot leaves paused, is asked to run again (waiting for
 * a snapshot still being written, up to timeout_ms) and the pause's files go.
 * 0, or -errno when the VMM did not take the resume.
 */
int pause_undo(const char *run_dir, const char *control_path, int timeout_ms);
/*
 * The memory key of the pause in run_dir, unwrapped with key_store's managed
 * key: 0 with key (the caller wipes it), -ENOENT when the folder has no key
 * (an unsealed pause), else -errno or a SIMAGE_E_* code with why.
 */
int pause_key_load(const char *run_dir, const char *key_store, const char *sandbox_id, uint8_t key[32], char *why,
		   size_t cap);

#endif
