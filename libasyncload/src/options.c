/* SPDX-License-Identifier: MIT */
/*
 * options.c - the loader's options: defaults, range checks and the public
 * description of each, all generated from the one table in options.def.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <sched.h>
#include <stddef.h>
#include <string.h>

#include "internal.h"

struct al_option {
	struct asyncload_option_info info;
	size_t offset, width; /* of the field in struct asyncload_options */
};

#define AL_FIELD_WIDTH(name) sizeof(((struct asyncload_options *)0)->name)
#define AL_OPTION(name_, type_, def_, min_, max_, doc_, choices_)                                     \
	{.info = {.name = #name_, .type = type_, .def = (uint64_t)(def_), .min = (uint64_t)(min_), \
	          .max = (uint64_t)(max_), .doc = doc_, .choices = choices_},                                          \
	 .offset = offsetof(struct asyncload_options, name_), .width = AL_FIELD_WIDTH(name_)},
static const struct al_option al_options[] = {
#include "options.def"
};
#undef AL_OPTION

#define AL_N_OPTIONS (sizeof(al_options) / sizeof(al_options[0]))

static uint64_t get_uint(const struct asyncload_options *o, const struct al_option *d)
{
	const char *p = (const char *)o + d->offset;
	switch (d->width) {
	case 1: return *(const uint8_t *)p;
	case 4: return *(const uint32_t *)p;
	default: return *(const uint64_t *)p;
	}
}

static void set_uint(struct asyncload_options *o, const struct al_option *d, uint64_t v)
{
	char *p = (char *)o + d->offset;
	switch (d->width) {
	case 1: *(uint8_t *)p = (uint8_t)v; break;
	case 4: *(uint32_t *)p = (uint32_t)v; break;
	default: *(uint64_t *)p = v; break;
	}
}

ASYNCLOAD_EXPORT void asyncload_options_init(struct asyncload_options *opts)
{
	if (!opts)
		return;
	memset(opts, 0, sizeof(*opts));
	for (size_t i = 0; i < AL_N_OPTIONS; i++)
		if (al_options[i].info.type != ASYNCLOAD_OPTION_STRING)
			set_uint(opts, &al_options[i], al_options[i].info.def);
}

ASYNCLOAD_EXPORT int asyncload_option_info(unsigned index, struct asyncload_option_info *info)
{
	if (!info)
		return -EINVAL;
	if (index >= AL_N_OPTIONS)
		return -ENOENT;
	*info = al_options[index].info;
	return 0;
}

int al_options_check(const struct asyncload_options *o)
{
	if (!o)
		return -EINVAL;
	for (size_t i = 0; i < AL_N_OPTIONS; i++) {
		const struct al_option *d = &al_options[i];
		if (d->info.type == ASYNCLOAD_OPTION_STRING) {
			const char *s = *(const char *const *)((const char *)o + d->offset);
			if (s && (s[0] == '\0' || strnlen(s, ASYNCLOAD_PATH_MAX) >= ASYNCLOAD_PATH_MAX))
				return -EINVAL;
			continue;
		}
		uint64_t v = get_uint(o, d);
		if (v < d->info.min || v > d->info.max)
			return -EINVAL;
	}
	if ((uint64_t)o->n_workers * o->queue_depth > ASYNCLOAD_MAX_ENTRIES)
		return -EINVAL;
	return 0;
}

/* Threads: as asked, else one per CPU this process may run on (at most 4),
 * never more than there are workers (a worker is served by one thread). */
uint32_t al_options_threads(const struct asyncload_options *o)
{
	uint32_t n = o->n_threads;
	if (n == 0) {
		cpu_set_t set;
		n = sched_getaffinity(0, sizeof(set), &set) == 0 ? (uint32_t)CPU_COUNT(&set) : 1;
		if (n > 4)
			n = 4;
	}
	if (n > o->n_workers)
		n = o->n_workers;
	if (n > ASYNCLOAD_MAX_THREADS)
		n = ASYNCLOAD_MAX_THREADS;
	return n ? n : 1;
}
