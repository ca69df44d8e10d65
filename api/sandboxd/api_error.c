/* The errno-to-status map of the API (api_error.h, docs/api.md). */
#include "api_error.h"

#include <errno.h>

int api_error_status(int err)
{
	switch (err < 0 ? -err : err) {
	case EINVAL: return 400;
	case EACCES:
	case EPERM: return 403;
	case ENOENT: return 404;
	case EOPNOTSUPP: return 405;
	case EBUSY:
	case EEXIST:
	case ESRCH:
	case EALREADY:
	case ENOTEMPTY:
	case EISDIR:
	case ENOTDIR: return 409;
	case E2BIG:
	case EFBIG:
	case EMSGSIZE: return 413;
	case EDQUOT: return 429;
	case EPROTO:
	case EBADMSG: return 502;
	case EAGAIN:
	case EHOSTDOWN: return 503;
	case ETIMEDOUT: return 504;
	default: return 500;
	}
}
