/* SPDX-License-Identifier: MIT */
/*
 * cache.c - the loader's cache of loaded bytes (cache.h). The bytes lie in
 * the region's cache area, so every attached process maps them and a hit is
 * answered by pointing the entry at them: no I/O, no copy. The index lives
 * in the loader process only (workers never look anything up), behind one
 * mutex of that process: nothing is locked across processes.
 *
 * The area is handed out front to back and never evicts: under a uniformly
 * random order each epoch the first cache_bytes read stay, which is the best
 * hit rate a cache of that size can have there (an LRU thrashes to ~0 once
 * the data set exceeds it). Nothing is ever removed, so cached bytes never
 * change under a view that a worker holds.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "cache.h"

struct slot {
	uint64_t hash;
	struct key *key; /* NULL: empty */
};

struct key {
	uint64_t offset, length, data_off, size;
	char path[];
};

struct al_cache {
	pthread_mutex_t lock;
	struct al_header *h;
	uint64_t start, end;  /* the area, as region offsets */
	uint64_t next;        /* first byte not handed out */
	struct slot *slots;
	uint64_t cap, used;   /* power of two; kept at most half full */
};

static uint64_t hash_key(const char *path, uint64_t offset, uint64_t length)
{
	uint64_t x = 0xcbf29ce484222325ull; /* FNV-1a, then the range mixed in */
	for (const unsigned char *p = (const unsigned char *)path; *p; p++)
		x = (x ^ *p) * 0x100000001b3ull;
	x ^= offset * 0x9E3779B97F4A7C15ull;
	x ^= (length + 1) * 0xBF58476D1CE4E5B9ull;
	x ^= x >> 31;
	return x ? x : 1;
}

int al_cache_new(struct al_cache **ret, struct al_header *h)
{
	*ret = NULL;
	if (!h->cache_bytes)
		return 0;
	struct al_cache *c = calloc(1, sizeof(*c));
	if (!c)
		return -ENOMEM;
	c->cap = 1024;
	c->slots = calloc(c->cap, sizeof(*c->slots));
	if (!c->slots) {
		free(c);
		return -ENOMEM;
	}
	pthread_mutex_init(&c->lock, NULL);
	c->h = h;
	c->start = c->next = h->cache_off;
	c->end = h->cache_off + h->cache_bytes;
	*ret = c;
	return 0;
}

void al_cache_free(struct al_cache *c)
{
	if (!c)
		return;
	for (uint64_t i = 0; i < c->cap; i++)
		free(c->slots[i].key);
	free(c->slots);
	pthread_mutex_destroy(&c->lock);
	free(c);
}

static struct slot *find(struct al_cache *c, uint64_t hash, const char *path, uint64_t offset, uint64_t length)
{
	for (uint64_t i = hash & (c->cap - 1);; i = (i + 1) & (c->cap - 1)) {
		struct slot *s = &c->slots[i];
		if (!s->key)
			return s;
		if (s->hash == hash && s->key->offset == offset && s->key->length == length &&
		    strcmp(s->key->path, path) == 0)
			return s;
	}
}

static bool grow(struct al_cache *c)
{
	uint64_t cap = c->cap * 2;
	struct slot *slots = calloc(cap, sizeof(*slots));
	if (!slots)
		return false;
	for (uint64_t i = 0; i < c->cap; i++) {
		struct slot *s = &c->slots[i];
		if (!s->key)
			continue;
		uint64_t j = s->hash & (cap - 1);
		while (slots[j].key)
			j = (j + 1) & (cap - 1);
		slots[j] = *s;
	}
	free(c->slots);
	c->slots = slots;
	c->cap = cap;
	return true;
}

bool al_cache_lookup(struct al_cache *c, const char *path, uint64_t offset, uint64_t length,
                     uint64_t *data_off, uint64_t *size)
{
	uint64_t hash = hash_key(path, offset, length);
	pthread_mutex_lock(&c->lock);
	struct slot *s = find(c, hash, path, offset, length);
	bool hit = s->key != NULL;
	if (hit) {
		*data_off = s->key->data_off;
		*size = s->key->size;
	}
	pthread_mutex_unlock(&c->lock);
	if (hit) {
		atomic_fetch_add_explicit(&c->h->st_hits, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&c->h->st_bytes_cache, *size, memory_order_relaxed);
	} else {
		atomic_fetch_add_explicit(&c->h->st_misses, 1, memory_order_relaxed);
	}
	return hit;
}

uint64_t al_cache_reserve(struct al_cache *c, uint64_t len, uint64_t align)
{
	uint64_t off = 0;
	pthread_mutex_lock(&c->lock);
	uint64_t at = (c->next + align - 1) & ~(align - 1);
	if (at <= c->end && len <= c->end - at) {
		off = at;
		c->next = at + len;
		atomic_store_explicit(&c->h->st_cache_used, c->next - c->start, memory_order_relaxed);
	}
	pthread_mutex_unlock(&c->lock);
	return off;
}

static void unreserve_locked(struct al_cache *c, uint64_t off, uint64_t len, bool reusable)
{
	if (reusable && off + len == c->next) {
		c->next = off;
		atomic_store_explicit(&c->h->st_cache_used, c->next - c->start, memory_order_relaxed);
	}
}

void al_cache_unreserve(struct al_cache *c, uint64_t off, uint64_t len, bool reusable)
{
	pthread_mutex_lock(&c->lock);
	unreserve_locked(c, off, len, reusable);
	pthread_mutex_unlock(&c->lock);
}

void al_cache_insert(struct al_cache *c, const char *path, uint64_t offset, uint64_t length,
                     uint64_t res_off, uint64_t res_len, uint64_t data_off, uint64_t size)
{
	uint64_t hash = hash_key(path, offset, length);
	size_t plen = strlen(path);
	struct key *k = malloc(sizeof(*k) + plen + 1);
	pthread_mutex_lock(&c->lock);
	if ((c->used + 1) * 2 > c->cap && !grow(c)) {
		free(k);
		k = NULL;
	}
	struct slot *s = find(c, hash, path, offset, length);
	if (!k || s->key) {
		/* kept already, or no memory for the key: the bytes are not found */
		unreserve_locked(c, res_off, res_len, true);
		pthread_mutex_unlock(&c->lock);
		free(k);
		return;
	}
	*k = (struct key){.offset = offset, .length = length, .data_off = data_off, .size = size};
	memcpy(k->path, path, plen + 1);
	s->hash = hash;
	s->key = k;
	c->used++;
	pthread_mutex_unlock(&c->lock);
}
