/*
 * util.c: logging, assertions as Motr's, allocation, clocks, fids, the current interface. See
 * standin.h.
 */
#include "standin.h"

/* ------------------------------------------------------------------ helpers */

void slog(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	int n = snprintf(buf, sizeof buf, "hax-standin: ");

	va_start(ap, fmt);
	vsnprintf(buf + n, sizeof buf - (size_t)n - 1, fmt, ap);
	va_end(ap);
	strcat(buf, "\n");
	/* One write: lines from different threads do not interleave. */
	if (write(STDERR_FILENO, buf, strlen(buf)) < 0) {
		/* nothing to do */
	}
}

void assert_fail(const char *expr, const char *func)
{
	slog("Assertion failed: %s in %s() (real Motr panics here)", expr, func);
	abort();
}

/* M0_ASSERT_INFO: the condition, then Motr's explanation. */
void assert_info(const char *expr, const char *func, const char *info)
{
	slog("Assertion failed: %s in %s(): %s (real Motr panics here)", expr, func, info);
	abort();
}


void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (p == NULL)
		assert_fail("memory allocation", __func__);
	return p;
}

char *xstrdup(const char *s)
{
	char *p = strdup(s == NULL ? "" : s);

	if (p == NULL)
		assert_fail("memory allocation", __func__);
	return p;
}

uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

uint64_t real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

struct timespec abs_mono(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ULL),
			       .tv_nsec = (long)(ns % 1000000000ULL) };
	return ts;
}

bool fid_eq(const struct m0_fid *a, const struct m0_fid *b)
{
	return a->f_container == b->f_container && a->f_key == b->f_key;
}


struct m0_halon_interface *current_hi(void)
{
	return __atomic_load_n(&g_hi, __ATOMIC_ACQUIRE);
}

bool hi_valid(const struct m0_halon_interface *hi)
{
	return hi != NULL && hi == current_hi();
}
