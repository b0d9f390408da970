/* SPDX-License-Identifier: MIT */
/*
 * cache.h - the loader's cache of loaded bytes: which (path, offset, length)
 * lies where in the region's cache area, and handing out that area. One per
 * loader process, shared by its threads. Not installed.
 */
#ifndef ASYNCLOAD_CACHE_H
#define ASYNCLOAD_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "internal.h"

struct al_cache;

/* *ret is NULL (and 0 returned) when the region has no cache area. */
int  al_cache_new(struct al_cache **ret, struct al_header *h);
void al_cache_free(struct al_cache *c);

/* Offset in the region of the cached bytes of this request, and their size;
 * counts a hit or a miss. */
bool al_cache_lookup(struct al_cache *c, const char *path, uint64_t offset, uint64_t length,
                     uint64_t *data_off, uint64_t *size);

/* Room for `len` bytes at an `align`ed offset of the region, or 0 if the
 * cache has no room left. */
uint64_t al_cache_reserve(struct al_cache *c, uint64_t len, uint64_t align);

/* Gives a reservation back (a failed load): reused if it is the last one,
 * else it stays counted as used. reusable is false while a read may still
 * write into it. */
void al_cache_unreserve(struct al_cache *c, uint64_t off, uint64_t len, bool reusable);

/* The reservation at res_off now holds the load: `size` bytes at data_off.
 * A request for the same key that was read at the same time keeps the first
 * copy; this one's reservation is given back. */
void al_cache_insert(struct al_cache *c, const char *path, uint64_t offset, uint64_t length,
                     uint64_t res_off, uint64_t res_len, uint64_t data_off, uint64_t size);

#endif /* ASYNCLOAD_CACHE_H */
