/*
 * _asyncload_cdef.h - the declarations cffi exposes to Python.
 *
 * Read by _build.py as ffibuilder.cdef(). This is not compiled as C: it is
 * parsed by pycparser, so it has no #include and uses cffi's "..." forms.
 * Because the binding is built in API mode, the generated C file includes the
 * real asyncload.h and the compiler checks every line here against it.
 */

#define ASYNCLOAD_VERSION_MAJOR ...
#define ASYNCLOAD_VERSION_MINOR ...
#define ASYNCLOAD_MAX_WORKERS ...
#define ASYNCLOAD_MAX_QUEUE_DEPTH ...
#define ASYNCLOAD_MAX_ENTRIES ...
#define ASYNCLOAD_MAX_FILE_SIZE ...
#define ASYNCLOAD_PATH_MAX ...
#define ASYNCLOAD_HANDLE_MAX ...
#define ASYNCLOAD_MAX_IDLE_ITERS ...
#define ASYNCLOAD_MAX_THREADS ...
#define ASYNCLOAD_MAX_CACHE_BYTES ...
#define ASYNCLOAD_WHOLE_FILE ...

/* pid_t is not one of cffi's built-in types; let the compiler size it. */
typedef int... pid_t;

typedef struct asyncload_loader asyncload_loader;
typedef struct asyncload_worker asyncload_worker;
typedef struct asyncload_entry  asyncload_entry;

/* Declared field by field (no trailing "...;") so that cffi verifies the
 * whole layout: a field added to the header without updating this file
 * fails the build instead of silently shifting offsets. */
struct asyncload_options {
	uint32_t queue_depth;
	uint64_t max_file_size;
	uint32_t n_workers;
	uint32_t dispatch_n;
	uint32_t idle_iters;
	bool     direct;
	const char *root;
	uint32_t n_threads;
	uint32_t engine;
	uint64_t cache_bytes;
};

struct asyncload_stats {
	uint64_t hits;
	uint64_t misses;
	uint64_t bytes_from_storage;
	uint64_t bytes_from_cache;
	uint64_t cache_bytes_used;
	uint64_t cache_bytes;
};

void asyncload_options_init(struct asyncload_options *opts);

enum asyncload_option_type {
	ASYNCLOAD_OPTION_UINT = 0,
	ASYNCLOAD_OPTION_BOOL = 1,
	ASYNCLOAD_OPTION_STRING = 2,
};

struct asyncload_option_info {
	const char *name;
	int type;
	uint64_t def, min, max;
	const char *doc;
	const char *choices;
};

int  asyncload_option_info(unsigned index, struct asyncload_option_info *info);

int  asyncload_loader_new(asyncload_loader **ret, const struct asyncload_options *opts);
int  asyncload_loader_attach(asyncload_loader **ret, const char *handle);
int  asyncload_loader_handle(const asyncload_loader *l, char *buf, size_t len);
int  asyncload_loader_run(asyncload_loader *l);
int  asyncload_loader_spawn(asyncload_loader *l, pid_t *pid);
const char *asyncload_loader_engine(const asyncload_loader *l);
const char *asyncload_loader_engine_reason(const asyncload_loader *l);
int  asyncload_loader_shutdown(asyncload_loader *l);
int  asyncload_loader_status(asyncload_loader *l);
asyncload_loader *asyncload_loader_free(asyncload_loader *l);
int  asyncload_loader_get_options(const asyncload_loader *l, struct asyncload_options *opts);
int  asyncload_loader_stats(const asyncload_loader *l, struct asyncload_stats *st);

int  asyncload_worker_get(asyncload_loader *l, uint32_t id, asyncload_worker **ret);
asyncload_worker *asyncload_worker_free(asyncload_worker *w);
int  asyncload_worker_request(asyncload_worker *w, const char *path);
int  asyncload_worker_request_range(asyncload_worker *w, const char *path,
                                    uint64_t offset, uint64_t length);
int  asyncload_worker_submit(asyncload_worker *w, const char *path,
                             uint64_t offset, uint64_t length, uint64_t tag);
int  asyncload_worker_wait_batch(asyncload_worker *w, asyncload_entry **out,
                                 unsigned max, int timeout_ms);
int  asyncload_worker_try_get(asyncload_worker *w, asyncload_entry **ret);
int  asyncload_worker_wait_get(asyncload_worker *w, asyncload_entry **ret, int timeout_ms);
uint32_t asyncload_worker_in_flight(const asyncload_worker *w);

const char *asyncload_entry_path(const asyncload_entry *e);
const void *asyncload_entry_data(const asyncload_entry *e);
uint64_t    asyncload_entry_size(const asyncload_entry *e);
uint64_t    asyncload_entry_offset(const asyncload_entry *e);
uint64_t    asyncload_entry_tag(const asyncload_entry *e);
int         asyncload_entry_error(const asyncload_entry *e);
void        asyncload_entry_release(asyncload_entry *e);

const char *asyncload_strerror(int err);

/* The binding's own helper, defined in _build.py's preamble (not part of
 * the C library): size, offset, tag, -error and "answered inline" (from the
 * page cache or the loader's cache, no engine round trip) of n entries in
 * one call (AL_PY_FIELDS numbers each), so a batch of completions crosses
 * into C once instead of four times a file. */
#define AL_PY_FIELDS ...
void al_py_entry_fields(asyncload_entry **es, unsigned n, uint64_t *out);
