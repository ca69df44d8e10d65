#ifndef SANDVM_API_SANDBOXD_API_ERROR_H
#define SANDVM_API_SANDBOXD_API_ERROR_H

/*
 * The one place a failure's HTTP status is chosen. Domain code (sandbox.c,
 * net.c, snapshots.c, exec.c, files.c, images.c) fails with a negative
 * errno and a message; the edge turns the errno into a status with this
 * map, documented in docs/api.md ("Errors"):
 *
 *   EINVAL                        400  the request is wrong
 *   EACCES, EPERM                 403  not allowed here
 *   ENOENT                        404  no such thing
 *   EOPNOTSUPP                    405  no such call on it
 *   EBUSY, EEXIST, ESRCH,
 *   EALREADY, ENOTEMPTY, EISDIR,
 *   ENOTDIR                       409  not in a state that allows it
 *   E2BIG, EFBIG, EMSGSIZE        413  more than a bound allows
 *   EDQUOT                        429  a host limit is reached
 *   EPROTO, EBADMSG               502  the VMM or guest answered wrongly
 *   EAGAIN, EHOSTDOWN             503  not available (a failed start, an image)
 *   ETIMEDOUT                     504  the VMM or guest did not answer in time
 *   anything else                 500
 */

/* err: a negative errno (its sign is ignored). */
int api_error_status(int err);

#endif
