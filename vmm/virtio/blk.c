#include "virtio/blk.h"

#include <errno.h>
#include <endian.h>
#include <stdio.h>
#include <string.h>

#include "virtio/device.h"
#include "virtio/iov.h"
#include "backends/raw_file.h"

#define BLK_F_SEG_MAX (1ull << 2)
#define BLK_F_RO (1ull << 5)
#define BLK_F_FLUSH (1ull << 9)
#define BLK_HEADER_BYTES 16u
/* The header and the status byte take a segment each. */
#define BLK_SEG_MAX (VIRTQ_MAX_SEGS - 2)

int virtio_blk_parse(const struct virtq_chain *chain, struct virtio_blk_req *req)
{
	const struct iovec *rd = chain->iov;
	const struct iovec *wr = chain->iov + chain->nread;
	struct {
		uint32_t type;
		uint32_t ioprio;
		uint64_t sector;
	} hdr;
	const struct iovec *last;

	memset(req, 0, sizeof(*req));
	if (chain->read_len < BLK_HEADER_BYTES || chain->nwrite == 0 || chain->write_len < 1)
		return -EINVAL;
	if (iov_gather(rd, chain->nread, 0, &hdr, sizeof(hdr)) < 0)
		return -EINVAL;
	req->type = le32toh(hdr.type);
	req->sector = le64toh(hdr.sector);
	last = &wr[chain->nwrite - 1];
	req->status = (uint8_t *)last->iov_base + last->iov_len - 1;
	if (req->type == VIRTIO_BLK_T_OUT) {
		req->data_len = chain->read_len - BLK_HEADER_BYTES;
		return iov_slice(rd, chain->nread, BLK_HEADER_BYTES, req->data_len, req->data,
				 &req->ndata);
	}
	/* Everything writable but the status byte is data for reads and get-id. */
	req->data_len = chain->write_len - 1;
	return iov_slice(wr, chain->nwrite, 0, req->data_len, req->data, &req->ndata);
}

static uint64_t disk_size(const struct virtio_blk *blk)
{
	return blk->backend ? blk->backend->size : 0;
}

static bool in_range(const struct virtio_blk *blk, const struct virtio_blk_req *req)
{
	uint64_t sectors = disk_size(blk) / VIRTIO_BLK_SECTOR;
	uint64_t count = req->data_len / VIRTIO_BLK_SECTOR;

	return req->data_len % VIRTIO_BLK_SECTOR == 0 && req->sector <= sectors &&
	       count <= sectors - req->sector;
}

static uint8_t get_id(const struct virtio_blk *blk, const struct virtio_blk_req *req,
		      uint32_t *written)
{
	uint8_t id[VIRTIO_BLK_ID_BYTES] = { 0 };
	size_t len = req->data_len < sizeof(id) ? (size_t)req->data_len : sizeof(id);

	memcpy(id, blk->serial, strnlen(blk->serial, sizeof(id)));
	*written = (uint32_t)len;
	iov_scatter(req->data, (unsigned)req->ndata, 0, id, len);
	return VIRTIO_BLK_S_OK;
}

uint8_t virtio_blk_execute(struct virtio_blk *blk, const struct virtio_blk_req *req,
			   uint32_t *written)
{
	uint64_t offset = req->sector * VIRTIO_BLK_SECTOR;

	*written = 0;
	switch (req->type) {
	case VIRTIO_BLK_T_IN:
		if (!blk->backend || !in_range(blk, req) ||
		    blk->backend->ops->read(blk->backend, offset, req->data, req->ndata) < 0)
			return VIRTIO_BLK_S_IOERR;
		*written = (uint32_t)req->data_len;
		return VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_OUT:
		if (!blk->backend || blk->read_only || blk->backend->read_only || !in_range(blk, req) ||
		    blk->backend->ops->write(blk->backend, offset, req->data, req->ndata) < 0)
			return VIRTIO_BLK_S_IOERR;
		return VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_FLUSH:
		if (!blk->backend)
			return VIRTIO_BLK_S_OK;
		return blk->backend->ops->flush(blk->backend) < 0 ? VIRTIO_BLK_S_IOERR : VIRTIO_BLK_S_OK;
	case VIRTIO_BLK_T_GET_ID:
		return get_id(blk, req, written);
	default:
		return VIRTIO_BLK_S_UNSUPP;
	}
}

static int blk_chain(struct virtio_dev *dev, struct virtq_chain *chain, uint32_t *written,
		     const char **why)
{
	struct virtio_blk_req req;

	if (virtio_blk_parse(chain, &req) < 0) {
		*why = "malformed block request";
		return -EINVAL;
	}
	*req.status = virtio_blk_execute(dev->model, &req, written);
	*written += 1; /* the status byte */
	return 0;
}

static void blk_notify(struct virtio_dev *dev, unsigned qi)
{
	virtio_dev_serve_queue(dev, qi, blk_chain);
}

static void blk_config_read(struct virtio_dev *dev, uint32_t offset, uint8_t *data, uint32_t len)
{
	struct virtio_blk *blk = dev->model;
	struct {
		uint64_t capacity;
		uint32_t size_max;
		uint32_t seg_max;
	} cfg = {
		.capacity = htole64(disk_size(blk) / VIRTIO_BLK_SECTOR),
		.size_max = 0,
		.seg_max = htole32(BLK_SEG_MAX),
	};

	memcpy(data, (uint8_t *)&cfg + offset, len);
}

static void blk_reset(struct virtio_dev *dev)
{
	(void)dev;
}

const struct virtio_dev_ops virtio_blk_ops = {
	.name = "blk",
	.device_id = VIRTIO_ID_BLOCK,
	.num_queues = 1,
	.queue_max = 256,
	.features = BLK_F_SEG_MAX | BLK_F_FLUSH,
	.config_size = 16,
	.config_read = blk_config_read,
	.queue_notify = blk_notify,
	.reset = blk_reset,
};

const struct virtio_dev_ops virtio_blk_ro_ops = {
	.name = "blk",
	.device_id = VIRTIO_ID_BLOCK,
	.num_queues = 1,
	.queue_max = 256,
	.features = BLK_F_SEG_MAX | BLK_F_FLUSH | BLK_F_RO,
	.config_size = 16,
	.config_read = blk_config_read,
	.queue_notify = blk_notify,
	.reset = blk_reset,
};

int virtio_blk_open(struct virtio_blk *blk, const char *path, bool read_only, const char *serial)
{
	virtio_blk_open_spare(blk, serial);
	blk->read_only = read_only;
	return raw_file_create(&blk->backend, path, read_only);
}

int virtio_blk_open_fd(struct virtio_blk *blk, int fd, bool read_only, const char *serial)
{
	virtio_blk_open_spare(blk, serial);
	blk->read_only = read_only;
	return raw_file_create_fd(&blk->backend, fd, read_only);
}

void virtio_blk_open_spare(struct virtio_blk *blk, const char *serial)
{
	memset(blk, 0, sizeof(*blk));
	if (serial)
		snprintf(blk->serial, sizeof(blk->serial), "%s", serial);
}

void virtio_blk_close(struct virtio_blk *blk)
{
	blk_backend_destroy(blk->backend);
	blk->backend = NULL;
}

int virtio_blk_replace(struct virtio_dev *dev, struct blk_backend *next)
{
	struct virtio_blk *blk = dev->model;
	struct blk_backend *old;

	if (next && blk->read_only && !next->read_only)
		return -EROFS;
	pthread_mutex_lock(&dev->lock);
	old = blk->backend;
	blk->backend = next;
	dev->config_generation++;
	if (dev->status & VIRTIO_STATUS_DRIVER_OK)
		dev->raise(dev, VIRTIO_ISR_CONFIG);
	pthread_mutex_unlock(&dev->lock);
	blk_backend_destroy(old);
	return 0;
}

int virtio_blk_swap(struct virtio_dev *dev, const char *path)
{
	struct virtio_blk *blk = dev->model;
	struct blk_backend *next;
	int r;

	r = raw_file_create(&next, path, blk->read_only);
	if (r < 0)
		return r;
	return virtio_blk_replace(dev, next);
}
