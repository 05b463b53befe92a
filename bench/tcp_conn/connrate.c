// SPDX-License-Identifier: GPL-2.0 WITH Linux-syscall-note
/*
 * connrate.c: short TCP connections in a loop, to measure what per-connection
 * work (such as the tcp_conn tuner's sockops program) costs. One process: a
 * listener thread accepts and closes at once; the main thread connects,
 * waits for the server's FIN, closes, and repeats for SECS seconds. Prints
 * connections per second and CPU time (user + system, both threads, which
 * includes the kernel's TCP and sockops work done in process context) per
 * connection in microseconds; the latter is steadier when other load
 * competes for the CPUs.
 *
 * Usage: connrate ADDR SECS [NETNS_PATH]
 *   ADDR: IPv4 address to listen and connect on; NETNS_PATH: listen in that
 *   network namespace (e.g. /run/netns/x) while connecting from this one.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <netinet/in.h>
#include <fcntl.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

static int lfd = -1;
static struct sockaddr_in sa = { .sin_family = AF_INET };
static const char *nspath;
static pthread_barrier_t ready;

static int do_listen(void)
{
	socklen_t len = sizeof(sa);
	int one = 1;

	if (nspath) {
		int nsfd = open(nspath, O_RDONLY);

		if (nsfd < 0 || setns(nsfd, CLONE_NEWNET)) {
			perror(nspath);
			return -1;
		}
		close(nsfd);
	}
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	if (lfd < 0)
		return -1;
	setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) ||
	    listen(lfd, 1024) || getsockname(lfd, (struct sockaddr *)&sa, &len)) {
		perror("listen");
		close(lfd);
		lfd = -1;
		return -1;
	}
	return 0;
}

static void *server(void *arg)
{
	(void)arg;
	do_listen();
	pthread_barrier_wait(&ready);
	if (lfd < 0)
		return NULL;
	for (;;) {
		int c = accept(lfd, NULL, NULL);

		if (c < 0)
			continue;
		close(c);
	}
	return NULL;
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

int main(int argc, char **argv)
{
	unsigned long n = 0, failed = 0;
	double secs, start, end;
	pthread_t tid;
	char buf[16];

	if ((argc != 3 && argc != 4) || inet_pton(AF_INET, argv[1], &sa.sin_addr) != 1) {
		fprintf(stderr, "usage: %s ADDR SECS [NETNS_PATH]\n", argv[0]);
		return 2;
	}
	secs = atof(argv[2]);
	if (argc == 4)
		nspath = argv[3];
	pthread_barrier_init(&ready, NULL, 2);
	if (pthread_create(&tid, NULL, server, NULL)) {
		perror("pthread_create");
		return 1;
	}
	pthread_barrier_wait(&ready);
	if (lfd < 0)
		return 1;
	start = now();
	end = start + secs;
	while (now() < end) {
		int fd = socket(AF_INET, SOCK_STREAM, 0);

		if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa))) {
			failed++;
			if (fd >= 0)
				close(fd);
			continue;
		}
		/* wait for the server's close, then close our side */
		while (read(fd, buf, sizeof(buf)) > 0)
			;
		close(fd);
		n++;
	}
	{
		struct rusage ru;
		double cpu;

		getrusage(RUSAGE_SELF, &ru);
		cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
		      ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
		printf("%.0f %.2f\n", n / (now() - start), n ? cpu * 1e6 / n : 0);
	}
	if (failed)
		fprintf(stderr, "%lu connects failed\n", failed);
	return 0;
}
