#ifndef SANDVM_VMM_VIRTIO_BLK_H
#define SANDVM_VMM_VIRTIO_BLK_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/uio.h>

#include "backends/blk_backend.h"
#include "virtio/queue.h"

/*
 * virtio-blk over a block backend (a raw file or an encrypted snapshot
 * image): read, write, flush and get-id requests, with every sector range
 * checked against the disk size. Read-only drives refuse writes with an I/O
 * error status. A spare drive starts empty (capacity 0, every transfer an
 * I/O error) and gets a backend at run time.
 */

#define VIRTIO_BLK_SECTOR 512u
#define VIRTIO_BLK_ID_BYTES 20u

enum {
	VIRTIO_BLK_T_IN = 0,
	VIRTIO_BLK_T_OUT = 1,
	VIRTIO_BLK_T_FLUSH = 4,
	VIRTIO_BLK_T_GET_ID = 8,
	VIRTIO_BLK_S_OK = 0,
	VIRTIO_BLK_S_IOERR = 1,
	VIRTIO_BLK_S_UNSUPP = 2,
};

struct virtio_blk {
	struct blk_backend *backend; /* NULL: empty */
	bool read_only;              /* the device's offer, fixed for its life */
	char serial[VIRTIO_BLK_ID_BYTES + 1];
};

/* A request as found in one descriptor chain; pointers into guest RAM. */
struct virtio_blk_req {
	uint32_t type;
	uint64_t sector;
	struct iovec data[VIRTQ_MAX_SEGS];
	int ndata;
	uint64_t data_len;
	uint8_t *status;
};

/*
 * Splits a chain into header, data and status byte. Pure; -EINVAL when the
 * chain cannot be a block request (no room for header or status). Range and
 * size checks against the disk happen when it is executed.
 */
int virtio_blk_parse(const struct virtq_chain *chain, struct virtio_blk_req *req);

/* Runs a parsed request; returns the status byte and sets *written (bytes to the guest). */
uint8_t virtio_blk_execute(struct virtio_blk *blk, const struct virtio_blk_req *req,
			   uint32_t *written);

int virtio_blk_open(struct virtio_blk *blk, const char *path, bool read_only, const char *serial);
/* The same over a descriptor the drive takes (closed on failure too). */
int virtio_blk_open_fd(struct virtio_blk *blk, int fd, bool read_only, const char *serial);
/* A read-write drive with no backend yet. */
void virtio_blk_open_spare(struct virtio_blk *blk, const char *serial);

/*
 * Replaces the backing file of a running drive (same read-only mode) and
 * tells the driver its configuration changed, so it rereads the capacity.
 * Call with the device's lock not held.
 */
struct virtio_dev;
int virtio_blk_swap(struct virtio_dev *dev, const char *path);
/*
 * The same with a backend built by the caller, which the drive then owns;
 * NULL empties the drive. A read-only drive refuses a writable backend
 * (-EROFS) and next is then still the caller's.
 */
int virtio_blk_replace(struct virtio_dev *dev, struct blk_backend *next);
void virtio_blk_close(struct virtio_blk *blk);

struct virtio_dev_ops;
/* Read-only drives use their own table: the RO feature bit is part of the offer. */
extern const struct virtio_dev_ops virtio_blk_ops;
extern const struct virtio_dev_ops virtio_blk_ro_ops;

#endif
