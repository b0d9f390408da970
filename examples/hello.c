/* examples/hello.c - the smallest complete libasyncload program (the README's
 * C example, compiled and run by `meson test`): it starts a loader process,
 * loads the files named on its command line through one worker and prints
 * each one's size and line count.
 *   cc -o hello examples/hello.c $(pkg-config --cflags --libs asyncload)
 *   ./hello /etc/hostname /etc/passwd */
#include <asyncload.h>
#include <stdio.h>
#include <string.h>

/* stands for whatever the program does with the bytes */
static size_t count_lines(const char *p, size_t n)
{
	size_t lines = 0;
	const char *end = p + n;

	while ((p = memchr(p, '\n', (size_t)(end - p))) != NULL) {
		lines++;
		p++;
	}
	return lines;
}

int main(int argc, char **argv)
{
	struct asyncload_options o;
	asyncload_loader *l;
	asyncload_worker *w;
	int r, failed = 0;

	asyncload_options_init(&o);           /* queue_depth 64, max_file_size 64 MiB, ... */
	if (argc < 2 || (unsigned)argc - 1 > o.queue_depth) {
		fprintf(stderr, "usage: %s FILE... (at most %u)\n", argv[0], o.queue_depth);
		return 2;
	}
	r = asyncload_loader_new(&l, &o);     /* every int return: 0 or -errno */
	if (r < 0) {
		fprintf(stderr, "asyncload_loader_new: %s\n", asyncload_strerror(r));
		return 1;
	}
	r = asyncload_loader_spawn(l, NULL);  /* fork the loader process */
	if (r == 0)
		r = asyncload_worker_get(l, 0, &w);
	if (r < 0) {
		fprintf(stderr, "asyncload: %s\n", asyncload_strerror(r));
		asyncload_loader_free(l);
		return 1;
	}
	/* one request per file; the tag (here the argument's index) comes back
	 * with the entry, whatever order the loads complete in */
	for (int i = 1; i < argc && r == 0; i++)
		r = asyncload_worker_submit(w, argv[i], 0, ASYNCLOAD_WHOLE_FILE, (uint64_t)i);
	for (int i = 1; i < argc && r == 0; i++) {
		asyncload_entry *e;

		r = asyncload_worker_wait_get(w, &e, 10000);  /* sleeps; -ETIMEDOUT after 10 s */
		if (r < 0)
			break;
		const char *path = argv[asyncload_entry_tag(e)];
		int err = asyncload_entry_error(e);           /* 0, or -errno of this load */
		if (err) {
			printf("%s: %s\n", path, asyncload_strerror(err));
			failed = 1;
		} else {
			size_t n = (size_t)asyncload_entry_size(e);  /* exact, no padding */
			printf("%s: %zu bytes, %zu lines\n", path, n,
			       count_lines(asyncload_entry_data(e), n));  /* zero-copy */
		}
		asyncload_entry_release(e);   /* the entry's memory may be reused now */
	}
	if (r < 0)
		fprintf(stderr, "asyncload: %s\n", asyncload_strerror(r));
	asyncload_worker_free(w);
	asyncload_loader_free(l);             /* the spawner also stops and reaps the loader */
	return r < 0 || failed;
}
