/* Small helpers with no better home: ids, clocks, strings. */
#ifndef OMS_UTIL_H
#define OMS_UTIL_H

/* Number of elements of an array (not a pointer). */
#define OMS_NELEM(a) (sizeof(a) / sizeof((a)[0]))

#include <stddef.h>
#include <stdint.h>
#include <time.h>

/* Fills buf with n bytes from getrandom(2): OMS_OK or OMS_ERR. */
int oms_random_bytes(unsigned char *buf, size_t n);
/* Writes 2*nbytes lowercase hex chars plus NUL into out (size >= 2*nbytes+1), from
 * getrandom(2). Returns OMS_OK or OMS_ERR. */
int oms_random_hex(char *out, size_t nbytes);
/* A new 24-hex-char id (the original's MongoDB ObjectID look): out >= 25 bytes. */
int oms_new_id(char out[25]);
/* Wall clock in ms since the epoch, and a monotonic clock in ms. */
int64_t oms_now_ms(void);
int64_t oms_mono_ms(void);
/* RFC 3339 UTC with milliseconds, e.g. 2026-11-25T04:34:41.123Z; out >= 32 bytes. */
void oms_format_rfc3339(int64_t unix_ms, char out[32]);
/* strdup that aborts on OOM (we do not limp on without memory). NULL in, NULL out. */
char *oms_strdup(const char *s);
void *oms_xmalloc(size_t n);
void *oms_xcalloc(size_t n, size_t size);
void *oms_xrealloc(void *p, size_t n);
/* 1 when s is 1..64 chars of [A-Za-z0-9_.:-] (the API's ids). */
int oms_valid_id(const char *s);
/* Constant-time comparison of n bytes; 1 when equal. */
int oms_ct_equal(const void *a, const void *b, size_t n);

/* Copies text into out with the password of every URL's user-info replaced by "***":
 * "postgres://app:s3cret@db:5432/x" -> "postgres://app:***@db:5432/x". The user stays
 * (it says which account); a URL without a password, and any other text, is copied
 * unchanged. Every "://" in text is looked at, so a whole message that echoes a URL
 * (a library's error text) can go through it too. The user-info is taken to end at
 * the last '@' before the first '/', blank or quote, the way libpq reads it, so a
 * password with a raw '?', '#' or '@' is still hidden whole.
 * out (outsz bytes, borrowed) is always NUL-terminated when outsz > 0 and cut when too
 * small; the return value is the length of the whole result, like snprintf's, so
 * return >= outsz means it was cut. text NULL is taken as "". */
size_t oms_url_redact(const char *text, char *out, size_t outsz);

/* Blocks SIGINT/SIGTERM/SIGPIPE in the calling thread (call first in main, so every
 * thread inherits the mask) and later waits for SIGINT or SIGTERM. */
void oms_signals_block(void);
int oms_signals_wait(void);

/* out = the clock's now + ns, for pthread_cond_timedwait (CLOCK_MONOTONIC for a
 * condition variable created with that clock). OMS_ERR when the clock cannot be read. */
int oms_deadline_after_ns(clockid_t clock, int64_t ns, struct timespec *out);

/* Called at the start of a background thread (outbox relay, event consumers, trace
 * export): raises the thread's nice value by OMS_BACKGROUND_NICE so that, when the
 * CPUs are busy, threads answering a request run first and the asynchronous work
 * fills the gaps. Best effort: a failure is ignored (the thread just keeps the
 * process's priority). */
#define OMS_BACKGROUND_NICE 5
void oms_thread_background(void);

/* pthread calls that abort with a line on stderr when pthread fails (libuv's
 * uv_mutex_lock, uv_cond_wait): on a mutex, condition variable or thread of our own
 * they fail only on memory corruption or a programming error, and going on unlocked,
 * with a broken wait or an unjoined thread would be worse than stopping. */
#include <pthread.h>
void oms_mutex_lock(pthread_mutex_t *mu);
void oms_mutex_unlock(pthread_mutex_t *mu);
void oms_cond_wait(pthread_cond_t *cv, pthread_mutex_t *mu);
/* Waits on cv until the absolute time until, read on cv's clock. Returns 0 (woken,
 * perhaps spuriously: re-check the condition) or ETIMEDOUT. */
int oms_cond_timedwait(pthread_cond_t *cv, pthread_mutex_t *mu, const struct timespec *until);
void oms_cond_signal(pthread_cond_t *cv);
void oms_cond_broadcast(pthread_cond_t *cv);
void oms_thread_join(pthread_t thread);

/* Initialises cv (caller-owned; pthread_cond_destroy it) to time its waits on
 * CLOCK_MONOTONIC, so a wall-clock step cannot stretch or cut a bounded wait; its
 * deadlines come from oms_mono_deadline_ms. Returns 0 or the pthread error number
 * (the caller says which object could not be made). */
int oms_cond_init_monotonic(pthread_cond_t *cv);
/* out = CLOCK_MONOTONIC now + ms (< 0 taken as 0), a deadline for oms_cond_timedwait on
 * a condition variable from oms_cond_init_monotonic. Aborts when that clock cannot be
 * read, which it always can. */
void oms_mono_deadline_ms(int64_t ms, struct timespec *out);

/* The deadline of the work the calling thread is doing for someone (an HTTP request's
 * budget, a gRPC call's deadline) on oms_mono_ms()'s clock; 0: none. The servers set
 * it around each handler and clear it after; oms_grpc_call gives a call no more than
 * what is left of it, so deadlines shrink along a chain of calls. */
void oms_work_deadline_set(int64_t mono_ms);
int64_t oms_work_deadline(void);

#endif
