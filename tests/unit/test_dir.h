#ifndef SANDVM_TESTS_UNIT_TEST_DIR_H
#define SANDVM_TESTS_UNIT_TEST_DIR_H

/*
 * A test's temporary folder taken down: the processes running from it (fake
 * VMMs of sandboxes a failed case left behind) killed, then the folder removed.
 */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

/* 0, or -1 when the folder could not be removed. */
static inline int test_dir_remove(const char *dir)
{
	char cmd[4200];
	pid_t pk;

	/* pkill straight from here: under a shell it would match (and kill) the shell, whose
	 * command line holds the pattern too, and the rm would never run. */
	snprintf(cmd, sizeof(cmd), "%s/", dir);
	pk = fork();
	if (pk == 0) {
		int null = open("/dev/null", O_WRONLY);

		dup2(null, STDOUT_FILENO);
		dup2(null, STDERR_FILENO);
		execlp("pkill", "pkill", "-f", cmd, (char *)NULL);
		_exit(127);
	}
	if (pk > 0)
		waitpid(pk, NULL, 0);
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	return system(cmd) != 0 ? -1 : 0;
}

#endif
