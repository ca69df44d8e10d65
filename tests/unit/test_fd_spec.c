/*
 * The VMM's "fd:N or a path" helper (vmm/fd_spec.h), the config's fd: forms,
 * and the control socket's descriptors: SCM_RIGHTS taken from a message, and
 * ops naming them by index (every descriptor closed or taken, none leaked).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "unit.h"

#include "config.h"
#include "control.h"
#include "fd_spec.h"

static bool fd_open(int fd)
{
	return fcntl(fd, F_GETFD) >= 0;
}

static void parse_refuses_hostile_strings(void **state)
{
	static const char *const bad[] = { "fd:", "fd:-1", "fd:2", "fd:0", "fd:99999999999", "fd:3x", "fd: 3",
					   "fd:+3", "fd:2147483648", "FD:3", "fd", "" };
	char err[256];
	int fd = -7;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		err[0] = '\0';
		assert_int_equal(fd_spec_parse("kernel", bad[i], &fd, err, sizeof(err)), -EINVAL);
		assert_non_null(strstr(err, "kernel"));
		assert_int_equal(fd, -7);
	}
	assert_int_equal(fd_spec_parse("kernel", "fd:3", &fd, err, sizeof(err)), 0);
	assert_int_equal(fd, 3);
	assert_int_equal(fd_spec_parse("kernel", "fd:2147483647", &fd, err, sizeof(err)), 0);
	assert_int_equal(fd, 2147483647);
	assert_true(fd_spec_is("fd:"));
	assert_false(fd_spec_is("/tmp/fd:3"));
	assert_false(fd_spec_is(NULL));
}

static void take_checks_kind_and_access(void **state)
{
	char path[] = "/tmp/sandvm-fdspec-XXXXXX", err[256];
	int rw = mkstemp(path), ro = open(path, O_RDONLY), dir = open("/tmp", O_PATH | O_DIRECTORY), sv[2];

	(void)state;
	assert_true(rw >= 0 && ro >= 0 && dir >= 0);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	/* The right kind and access: taken, close-on-exec. */
	assert_int_equal(fcntl(ro, F_SETFD, 0), 0);
	assert_int_equal(fd_spec_take("kernel", ro, FD_SPEC_REG, FD_SPEC_READ, err, sizeof(err)), 0);
	assert_true(fcntl(ro, F_GETFD) & FD_CLOEXEC);
	assert_int_equal(fd_spec_take("drive", rw, FD_SPEC_REG | FD_SPEC_BLK, FD_SPEC_RDWR, err, sizeof(err)), 0);
	assert_int_equal(fd_spec_take("console", dir, FD_SPEC_DIR, FD_SPEC_ANY, err, sizeof(err)), 0);
	/* Wrong kind, wrong access, not open: refused with the flag named. */
	assert_int_equal(fd_spec_take("kernel", dir, FD_SPEC_REG, FD_SPEC_READ, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "kernel: descriptor"));
	assert_non_null(strstr(err, "regular file"));
	assert_int_equal(fd_spec_take("drive", ro, FD_SPEC_REG, FD_SPEC_RDWR, err, sizeof(err)), -EBADF);
	assert_non_null(strstr(err, "drive: descriptor"));
	assert_int_equal(fd_spec_take("console", dir, FD_SPEC_DIR | FD_SPEC_REG, FD_SPEC_WRITE, err, sizeof(err)),
			 -EBADF);
	assert_int_equal(fd_spec_take("kernel", 1000, FD_SPEC_REG, FD_SPEC_READ, err, sizeof(err)), -EBADF);
	assert_non_null(strstr(err, "kernel"));
	/* A socket must be a listening unix stream socket for control and vsock. */
	assert_int_equal(fd_spec_take("control", sv[0], FD_SPEC_SOCK, FD_SPEC_ANY, err, sizeof(err)), 0);
	assert_int_equal(fd_spec_check_listener("control", sv[0], err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "listening"));
	{
		int l = socket(AF_UNIX, SOCK_STREAM, 0);

		assert_int_equal(bind(l, &(struct sockaddr){ .sa_family = AF_UNIX }, sizeof(sa_family_t)), 0);
		assert_int_equal(listen(l, 1), 0);
		assert_int_equal(fd_spec_check_listener("control", l, err, sizeof(err)), 0);
		close(l);
	}
	/* fd_spec_open: a duplicate of a taken descriptor, or the path opened. */
	{
		int d = fd_spec_open(NULL, ro, 0, 0), p = fd_spec_open(path, -1, O_RDONLY, 0);

		assert_true(d > 2 && d != ro && p > 2);
		assert_true(fcntl(d, F_GETFD) & FD_CLOEXEC);
		close(d);
		close(p);
		assert_int_equal(fd_spec_open("/nonexistent/x", -1, O_RDONLY, 0), -ENOENT);
	}
	unlink(path);
	close(rw);
	close(ro);
	close(dir);
	close(sv[0]);
	close(sv[1]);
}

static int parse(struct vmm_config *cfg, char *err, size_t errlen, const char **args, int n)
{
	char *argv[24];
	enum vmm_config_action action;

	argv[0] = (char *)"vmm";
	for (int i = 0; i < n; i++)
		argv[i + 1] = (char *)args[i];
	vmm_config_init(cfg);
	return vmm_config_parse_args(cfg, n + 1, argv, &action, err, errlen);
}

static void config_fd_forms(void **state)
{
	const char *good[] = { "--kernel", "fd:3", "--initrd", "fd:4", "--drive", "fd:5,ro,serial=root",
			       "--console", "fd:6", "--control", "fd:7", "--vsock", "fd:8,cid=9",
			       "--net", "tapfd=9,mac=02:00:00:00:00:01", "--net-policy", "fd:10", "--kvm", "fd:11" };
	struct vmm_config cfg;
	char err[256];
	int fds[16];

	(void)state;
	assert_int_equal(parse(&cfg, err, sizeof(err), good, (int)(sizeof(good) / sizeof(good[0]))), 0);
	assert_int_equal(cfg.kernel_fd, 3);
	assert_int_equal(cfg.initrd_fd, 4);
	assert_int_equal(cfg.drives[0].fd, 5);
	assert_true(cfg.drives[0].read_only);
	assert_int_equal(cfg.console, VMM_CONSOLE_FILE);
	assert_int_equal(cfg.console_fd, 6);
	assert_int_equal(cfg.control_fd, 7);
	assert_int_equal(cfg.vsock_fd, 8);
	assert_int_equal(cfg.vsock_cid, 9);
	assert_int_equal(cfg.net_tap_fd, 9);
	assert_null(cfg.net_tap);
	assert_int_equal(cfg.net_policy_fd, 10);
	assert_int_equal(cfg.kvm_fd, 11);
	assert_int_equal(vmm_config_fds(&cfg, fds, 16), 9);
	assert_int_equal(vmm_config_validate(&cfg, err, sizeof(err)), 0);
	/* fd 9 twice (tapfd and the vsock cid are fine, but here a clash is made on purpose). */
	cfg.net_policy_fd = 9;
	assert_int_equal(vmm_config_take_fds(&cfg, err, sizeof(err)), -EINVAL);
	assert_non_null(strstr(err, "descriptor 9"));
	vmm_config_destroy(&cfg);

	{
		const char *bad[][2] = { { "--kernel", "fd:2" }, { "--drive", "fd:,ro" }, { "--console", "fd:x" },
					 { "--control", "fd:-3" }, { "--vsock", "fd:99999999999" },
					 { "--net-policy", "fd:3 " }, { "--net", "tapfd=2" }, { "--kvm", "fd:" } };

		for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			err[0] = '\0';
			assert_int_equal(parse(&cfg, err, sizeof(err), bad[i], 2), -EINVAL);
			assert_non_null(strstr(err, bad[i][0] + 2));
			vmm_config_destroy(&cfg);
		}
	}
	/* The JSON config takes the same strings. */
	vmm_config_init(&cfg);
	{
		const char *j = "{\"kernel\":\"fd:3\",\"console\":\"fd:4\",\"vsock\":{\"socket\":\"fd:5\"},\"kvm\":\"fd:6\","
				"\"drives\":[{\"path\":\"fd:7\",\"read_only\":true}]}";

		assert_int_equal(vmm_config_parse_json(&cfg, j, strlen(j), err, sizeof(err)), 0);
		assert_int_equal(cfg.kernel_fd, 3);
		assert_int_equal(cfg.console_fd, 4);
		assert_int_equal(cfg.vsock_fd, 5);
		assert_int_equal(cfg.kvm_fd, 6);
		assert_int_equal(cfg.drives[0].fd, 7);
		vmm_config_destroy(&cfg);
		vmm_config_init(&cfg);
		j = "{\"kernel\":\"fd:1\"}";
		assert_int_equal(vmm_config_parse_json(&cfg, j, strlen(j), err, sizeof(err)), -EINVAL);
		vmm_config_destroy(&cfg);
	}
}

/* Sends n descriptors (copies of fd) with one byte and receives them as the control socket does. */
static int pass(int n, int fd, int *fds, unsigned *nfds)
{
	union {
		struct cmsghdr align;
		char buf[CMSG_SPACE(sizeof(int) * 8)];
	} out, in;
	char byte = 'x';
	struct iovec iov = { .iov_base = &byte, .iov_len = 1 };
	struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1 };
	struct cmsghdr *c;
	int sv[2], r;

	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	memset(&out, 0, sizeof(out));
	msg.msg_control = out.buf;
	msg.msg_controllen = CMSG_SPACE(sizeof(int) * (size_t)n);
	c = CMSG_FIRSTHDR(&msg);
	c->cmsg_level = SOL_SOCKET;
	c->cmsg_type = SCM_RIGHTS;
	c->cmsg_len = CMSG_LEN(sizeof(int) * (size_t)n);
	for (int i = 0; i < n; i++)
		memcpy(CMSG_DATA(c) + (size_t)i * sizeof(int), &fd, sizeof(int));
	assert_int_equal(sendmsg(sv[0], &msg, 0), 1);
	msg = (struct msghdr){ .msg_iov = &iov, .msg_iovlen = 1, .msg_control = in.buf,
			       .msg_controllen = CMSG_SPACE(sizeof(int) * CONTROL_MAX_FDS) };
	assert_int_equal(recvmsg(sv[1], &msg, MSG_CMSG_CLOEXEC), 1);
	r = control_take_rights(&msg, fds, nfds);
	close(sv[0]);
	close(sv[1]);
	return r;
}

static void rights_bounded(void **state)
{
	int fds[CONTROL_MAX_FDS], probe = open("/dev/null", O_RDONLY), first;
	unsigned nfds = 0;

	(void)state;
	first = dup(probe);
	close(first); /* the lowest free descriptor, where received ones land */
	assert_int_equal(pass(2, probe, fds, &nfds), 0);
	assert_int_equal(nfds, 2);
	assert_true(fcntl(fds[0], F_GETFD) & FD_CLOEXEC);
	/* Two more fit; one more after that is refused and all go. */
	assert_int_equal(pass(2, probe, fds, &nfds), 0);
	assert_int_equal(nfds, 4);
	assert_int_equal(pass(1, probe, fds, &nfds), -EMSGSIZE);
	assert_int_equal(nfds, 0);
	assert_false(fd_open(first));
	/* Five at once: cut short by the receive buffer (MSG_CTRUNC), refused, none kept. */
	assert_int_equal(pass(5, probe, fds, &nfds), -EMSGSIZE);
	assert_int_equal(nfds, 0);
	assert_false(fd_open(first));
	assert_false(fd_open(first + 1));
	close(probe);
}

static int swaps, swap_fd_seen = -1;

static void status_cb(void *ctx, struct cJSON *reply)
{
	(void)ctx;
	(void)reply;
}

static int stop_cb(void *ctx)
{
	(void)ctx;
	return 0;
}

static int swap_cb(void *ctx, unsigned index, const char *path, int fd, char *err, size_t errlen)
{
	(void)ctx;
	(void)index;
	(void)err;
	(void)errlen;
	swaps++;
	swap_fd_seen = fd;
	assert_true((path != NULL) != (fd >= 0));
	if (fd >= 0)
		close(fd);
	return 0;
}

static int attach_cb(void *ctx, unsigned index, const char *path, int fd, const struct simage_keys *keys,
		     const char *overlay_dir, int overlay_fd, char *err, size_t errlen)
{
	(void)ctx;
	(void)index;
	(void)keys;
	(void)err;
	(void)errlen;
	assert_true((path != NULL) != (fd >= 0));
	assert_true(!keys || (overlay_dir != NULL) != (overlay_fd >= 0));
	if (fd >= 0)
		close(fd);
	if (overlay_fd >= 0)
		close(overlay_fd);
	return 0;
}

static int detach_cb(void *ctx, unsigned index, char *err, size_t errlen)
{
	(void)ctx;
	(void)index;
	(void)err;
	(void)errlen;
	return 0;
}

static int find_cb(void *ctx, const char *serial)
{
	(void)ctx;
	return strcmp(serial, "s") ? -ENODEV : 0;
}

static const struct control_ops fd_ops = { .status = status_cb, .stop = stop_cb, .drive_swap = swap_cb,
					   .drive_find = find_cb, .drive_attach = attach_cb,
					   .drive_detach = detach_cb };

/* Sends req with n fresh descriptors; checks the reply has needle and no descriptor is left open. */
static void request(const char *req, unsigned n, const char *needle)
{
	int fds[CONTROL_MAX_FDS], copies[CONTROL_MAX_FDS];
	char *reply;

	for (unsigned i = 0; i < n; i++)
		copies[i] = fds[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
	reply = control_handle_request(req, strlen(req), fds, n, &fd_ops, NULL);
	assert_non_null(reply);
	if (!strstr(reply, needle))
		fail_msg("reply '%s' to '%s' lacks '%s'", reply, req, needle);
	for (unsigned i = 0; i < n; i++) {
		assert_int_equal(fds[i], -1);
		assert_false(fd_open(copies[i]));
	}
	free(reply);
}

static void ops_take_descriptors_by_index(void **state)
{
	const char *keys = "\"data_key\":\"" "0000000000000000000000000000000000000000000000000000000000000000"
			   "\",\"meta_key\":\"" "0000000000000000000000000000000000000000000000000000000000000000" "\"";
	char req[512];

	(void)state;
	request("{\"op\":\"drive-swap\",\"drive\":0,\"fd\":0}", 1, "\"ok\":true");
	assert_int_equal(swaps, 1);
	assert_true(swap_fd_seen > 2);
	request("{\"op\":\"drive-swap\",\"drive\":0,\"fd\":1}", 3, "\"ok\":true"); /* the others closed */
	request("{\"op\":\"drive-swap\",\"drive\":0,\"path\":\"/x\"}", 0, "\"ok\":true");
	request("{\"op\":\"drive-swap\",\"drive\":0,\"path\":\"/x\"}", 2, "\"ok\":true");
	request("{\"op\":\"drive-swap\",\"drive\":0,\"fd\":1}", 1, "out of range");
	request("{\"op\":\"drive-swap\",\"drive\":0,\"fd\":4}", 1, "\\\"fd\\\" must be the index");
	request("{\"op\":\"drive-swap\",\"drive\":0,\"fd\":-1}", 1, "\\\"fd\\\" must be the index");
	request("{\"op\":\"drive-swap\",\"drive\":0,\"fd\":0.5}", 1, "\\\"fd\\\" must be the index");
	request("{\"op\":\"drive-swap\",\"drive\":0,\"fd\":\"0\"}", 1, "\\\"fd\\\" must be the index");
	request("{\"op\":\"drive-swap\",\"drive\":0,\"fd\":0,\"path\":\"/x\"}", 1, "one of them");
	request("{\"op\":\"drive-swap\",\"drive\":0}", 1, "one of them");
	assert_int_equal(swaps, 4);
	request("{\"op\":\"drive-attach\",\"serial\":\"s\",\"fd\":0}", 1, "\"ok\":true");
	request("{\"op\":\"drive-attach\",\"serial\":\"s\",\"fd\":0,\"overlay_fd\":1}", 2, "\"ok\":true"); /* the overlay unused, closed */
	snprintf(req, sizeof(req), "{\"op\":\"drive-attach\",\"serial\":\"s\",\"fd\":0,\"overlay_fd\":1,%s}", keys);
	request(req, 2, "\"ok\":true");
	snprintf(req, sizeof(req), "{\"op\":\"drive-attach\",\"serial\":\"s\",\"fd\":1,\"overlay_fd\":1,%s}", keys);
	request(req, 2, "another field took");
	snprintf(req, sizeof(req), "{\"op\":\"drive-attach\",\"serial\":\"s\",\"fd\":0,\"overlay_fd\":1,"
				   "\"overlay_dir\":\"/tmp\",%s}", keys);
	request(req, 2, "not both");
	snprintf(req, sizeof(req), "{\"op\":\"drive-attach\",\"serial\":\"s\",\"path\":\"/i\",\"overlay_fd\":0,%s}",
		 keys);
	request(req, 1, "\"ok\":true");
	snprintf(req, sizeof(req), "{\"op\":\"drive-attach\",\"serial\":\"s\",\"fd\":0,%s}", keys);
	request(req, 1, "\"ok\":true"); /* overlay in /tmp, as before */
	request("{\"op\":\"drive-attach\",\"serial\":\"nope\",\"fd\":0}", 1, "no drive with serial");
	request("{\"op\":\"status\"}", 4, "\"ok\":true");
	request("not json", 2, "\"ok\":false");
	request("{\"op\":\"net-policy\",\"fd\":0}", 1, "unknown op");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(parse_refuses_hostile_strings),
		cmocka_unit_test(take_checks_kind_and_access),
		cmocka_unit_test(config_fd_forms),
		cmocka_unit_test(rights_bounded),
		cmocka_unit_test(ops_take_descriptors_by_index),
	};

	return cmocka_run_group_tests_name("fd_spec", tests, NULL, NULL);
}
