/*
 * sandboxd's calls to a VMM's control socket (api/sandboxd/vmm_control.c)
 * against fake VMMs on a thread: arguments refused before anything is
 * opened, one deadline for the whole call, a VMM that trickles bytes or
 * hangs up.
 */
#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "unit.h"
#include "vmm_control.h"

enum fake_kind { FAKE_ANSWER, FAKE_TRICKLE, FAKE_HANG_UP, FAKE_LONG };

struct fake_vmm {
	char dir[48], path[64];
	int listen_fd;
	enum fake_kind kind;
	char got[256];
	pthread_t thread;
};

static void *fake_main(void *arg)
{
	struct fake_vmm *f = arg;
	int fd = accept(f->listen_fd, NULL, NULL);
	ssize_t n;

	if (fd < 0)
		return NULL;
	n = read(fd, f->got, sizeof(f->got) - 1);
	if (n > 0)
		f->got[n] = '\0';
	switch (f->kind) {
	case FAKE_ANSWER:
		if (write(fd, "{\"ok\":true}\n", 12) != 12)
			break;
		break;
	case FAKE_TRICKLE:
		/* A byte every 50 ms, never a newline: only a deadline for the whole call ends it. */
		for (int i = 0; i < 40; i++) {
			if (write(fd, "x", 1) != 1)
				break;
			usleep(50 * 1000);
		}
		break;
	case FAKE_HANG_UP:
		break;
	case FAKE_LONG: {
		char big[1000];

		memset(big, 'y', sizeof(big));
		if (write(fd, big, sizeof(big)) != (ssize_t)sizeof(big))
			break;
		break;
	}
	}
	close(fd);
	return NULL;
}

static void fake_start(struct fake_vmm *f, enum fake_kind kind)
{
	struct sockaddr_un a = { .sun_family = AF_UNIX };

	memset(f, 0, sizeof(*f));
	f->kind = kind;
	snprintf(f->dir, sizeof(f->dir), "/tmp/sandvm-ctl-XXXXXX");
	assert_non_null(mkdtemp(f->dir));
	snprintf(f->path, sizeof(f->path), "%s/control", f->dir);
	f->listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(f->listen_fd >= 0);
	snprintf(a.sun_path, sizeof(a.sun_path), "%s", f->path);
	assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(f->listen_fd, 4), 0);
	assert_int_equal(pthread_create(&f->thread, NULL, fake_main, f), 0);
}

static void fake_stop(struct fake_vmm *f)
{
	pthread_join(f->thread, NULL);
	close(f->listen_fd);
	unlink(f->path);
	rmdir(f->dir);
}

static int open_fds(void)
{
	DIR *d = opendir("/proc/self/fd");
	int n = 0;

	assert_non_null(d);
	while (readdir(d))
		n++;
	closedir(d);
	return n;
}

static double now_s(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void bad_arguments_open_nothing(void **state)
{
	char reply[64], path[200];
	int before = open_fds();

	(void)state;
	memset(path, 'p', sizeof(path) - 1);
	path[0] = '/';
	path[sizeof(path) - 1] = '\0';
	assert_int_equal(vmm_control_call("/tmp/x", "{}\n", reply, 0), -EINVAL);
	assert_int_equal(vmm_control_call(NULL, "{}\n", reply, sizeof(reply)), -EINVAL);
	assert_int_equal(vmm_control_call("/tmp/x", NULL, reply, sizeof(reply)), -EINVAL);
	assert_int_equal(vmm_control_call_timeout("/tmp/x", "{}\n", reply, sizeof(reply), 0), -EINVAL);
	assert_int_equal(vmm_control_call(path, "{}\n", reply, sizeof(reply)), -ENAMETOOLONG);
	assert_int_equal(vmm_control_call("/nonexistent/sandvm/control", "{}\n", reply, sizeof(reply)), -ENOENT);
	assert_int_equal(open_fds(), before);
}

static void answer(void **state)
{
	struct fake_vmm f;
	char reply[64];

	(void)state;
	fake_start(&f, FAKE_ANSWER);
	assert_int_equal(vmm_control_call(f.path, "{\"op\":\"status\"}\n", reply, sizeof(reply)), 0);
	fake_stop(&f);
	assert_string_equal(reply, "{\"ok\":true}\n");
	assert_string_equal(f.got, "{\"op\":\"status\"}\n");
}

static void trickle_meets_the_deadline(void **state)
{
	struct fake_vmm f;
	char reply[64];
	double t0 = now_s(), took;
	int before = open_fds();

	(void)state;
	fake_start(&f, FAKE_TRICKLE);
	assert_int_equal(vmm_control_call_timeout(f.path, "{}\n", reply, sizeof(reply), 300), -ETIMEDOUT);
	took = now_s() - t0;
	fake_stop(&f);
	if (took < 0.25 || took > 1.0)
		fail_msg("the call took %.3f s for a 300 ms deadline", took);
	assert_int_equal(open_fds(), before);
}

static void hang_up_and_long_reply(void **state)
{
	struct fake_vmm f;
	char reply[64];

	(void)state;
	fake_start(&f, FAKE_HANG_UP);
	assert_int_equal(vmm_control_call(f.path, "{}\n", reply, sizeof(reply)), -EIO);
	fake_stop(&f);
	assert_string_equal(reply, "");
	/* A reply longer than the buffer is cut, never written past it. */
	fake_start(&f, FAKE_LONG);
	assert_int_equal(vmm_control_call(f.path, "{}\n", reply, sizeof(reply)), 0);
	fake_stop(&f);
	assert_int_equal(strlen(reply), sizeof(reply) - 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(bad_arguments_open_nothing),
		cmocka_unit_test(answer),
		cmocka_unit_test(trickle_meets_the_deadline),
		cmocka_unit_test(hang_up_and_long_reply),
	};

	/* The fake VMM writes on after the caller gave up, as sandboxd's peers may. */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
