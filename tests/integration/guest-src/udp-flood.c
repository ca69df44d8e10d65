/*
 * Guest-side load for the VMM's queue budget test (static; copied into a
 * Debian sandbox with sandvm-run --put).
 *   udp-flood ADDR PORT SECONDS   send 64-byte UDP datagrams to ADDR:PORT as
 *                                 fast as the guest can for SECONDS, then
 *                                 print how many were sent and refused
 * A refused send (ENOBUFS, EPERM, ...) is counted and the flood goes on.
 */
#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	struct sockaddr_in to = { .sin_family = AF_INET };
	unsigned long sent = 0, refused = 0;
	char payload[64];
	double end;
	int fd;

	if (argc != 4 || inet_pton(AF_INET, argv[1], &to.sin_addr) != 1) {
		fprintf(stderr, "usage: udp-flood IPV4 PORT SECONDS\n");
		return 2;
	}
	to.sin_port = htons((unsigned short)atoi(argv[2]));
	end = now() + atof(argv[3]);
	fd = socket(AF_INET, SOCK_DGRAM, 0);
	if (fd < 0) {
		perror("socket");
		return 1;
	}
	memset(payload, 'f', sizeof(payload));
	while (now() < end) {
		for (int i = 0; i < 64; i++) {
			if (sendto(fd, payload, sizeof(payload), 0, (struct sockaddr *)&to, sizeof(to)) < 0)
				refused++;
			else
				sent++;
		}
	}
	printf("sent %lu refused %lu\n", sent, refused);
	return 0;
}
