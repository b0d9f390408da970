/* SPDX-License-Identifier: MIT */
/*
 * probe-io-uring.c - exits 0 if this kernel lets us create an io_uring,
 * 77 (skip) if not; the shell-script tests call it first.
 */
#include <liburing.h>
#include <stdio.h>
#include <string.h>

int main(void)
{
	struct io_uring ring;
	int r = io_uring_queue_init(4, &ring, 0);

	if (r < 0) {
		fprintf(stderr, "io_uring unavailable: %s\n", strerror(-r));
		return 77;
	}
	io_uring_queue_exit(&ring);
	return 0;
}
