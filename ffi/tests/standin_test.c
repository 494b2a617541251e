/*
 * standin_test.c: tests of the Motr HA-interface stand-in (ffi/standin/).
 *
 * The program is both the HA user (it registers the callbacks, like hax) and the remote Motr
 * processes (small TCP clients speaking ffi/standin/PROTOCOL.md). It checks the [must]
 * behaviours of shared/design/halon-interface.md and the codec of wire.c.
 *
 * Build: see Makefile (or scripts/ffi-memcheck). Prints "N passed, M failed" last; exits 1 on
 * any failure.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "conf/ha.h"
#include "ha/halon/interface.h"
#include "wire.h"

/* Test hook of the stand-in (hooks.c, not in Motr's header): -ENOENT for a pointer that is not a link of
 * hi, else 0 alive, 1 disconnecting, 2 dead (link_disconnected returned, still recognised). */
int hax_standin_link_state(struct m0_halon_interface *hi, const struct m0_ha_link *hl);

/* A node UUID Motr parses. */
#define NODE_UUID "3f2504e0-4f89-11d3-9a0c-0305e82c3301"

/* ------------------------------------------------------------------ checks */

static int g_passed;
static int g_failed;

#define CHECK(cond) check_((cond), __LINE__, "%s", #cond)
#define CHECKF(cond, ...) check_((cond), __LINE__, __VA_ARGS__)

static bool check_(bool ok, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static bool check_(bool ok, int line, const char *fmt, ...)
{
	va_list ap;

	if (ok) {
		__atomic_add_fetch(&g_passed, 1, __ATOMIC_SEQ_CST);
		return true;
	}
	__atomic_add_fetch(&g_failed, 1, __ATOMIC_SEQ_CST);
	fprintf(stderr, "FAIL line %d: ", line);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n");
	return false;
}

static void section(const char *name)
{
	fprintf(stderr, "== %s\n", name);
}

static uint64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static void sleep_ms(int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L };

	while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
	}
}

static int g_scale = 1; /* timeouts multiplier (valgrind is slow) */
#define T(ms) ((ms) * g_scale)

static bool fid_eq(const struct m0_fid *a, const struct m0_fid *b)
{
	return a->f_container == b->f_container && a->f_key == b->f_key;
}

/* ------------------------------------------------------------------ event log */

enum ev_kind {
	EV_EPREQ,
	EV_RECV,
	EV_DELIV,
	EV_NOTDELIV,
	EV_CONN,
	EV_REUSED,
	EV_ABSENT,
	EV_DISCING,
	EV_DISC,
};

static const char *ev_names[] = { "entrypoint_request", "msg_received", "msg_is_delivered",
				  "msg_is_not_delivered", "link_connected", "link_reused",
				  "link_absent", "link_is_disconnecting", "link_disconnected" };

struct ev {
	int k;
	bool in_reply;
	bool in_send;
	bool on_main;
	bool on_stopper;
	struct m0_ha_link *hl;
	uint64_t tag;
	struct m0_uint128 req;
	uint64_t at_ms;
	/* entrypoint */
	char ep[300];
	struct m0_fid proc;
	char git[64];
	uint64_t pid;
	bool first;
	/* message summary */
	uint64_t type;
	struct m0_fid fid;
	struct m0_fid src_proc;
	uint64_t a, b, c; /* event/type/pid, or nvec type/id_of_get/nr */
	struct m0_fid note_fid;
	uint32_t note_state;
};

enum { EV_MAX = 8192 };
static struct ev g_ev[EV_MAX];
static int g_nev;
static pthread_mutex_t g_ev_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_ev_cv = PTHREAD_COND_INITIALIZER;

/*
 * Quiet mode (the scale tests): callbacks are only counted per kind, and the links given to
 * link_connected are recorded in order, instead of filling the event log.
 */
enum { QUIET_LINKS_MAX = 4096 };
static bool g_quiet;
static int g_quiet_count[EV_DISC + 1];
static struct m0_ha_link *g_quiet_links[QUIET_LINKS_MAX];
static int g_quiet_nlinks;

static pthread_t g_main;
static __thread bool tls_in_send;
static __thread bool tls_in_reply;
static __thread bool tls_stopper;

static int ev_add(struct ev *e)
{
	int i;

	e->in_reply = tls_in_reply;
	e->in_send = tls_in_send;
	e->on_main = pthread_equal(pthread_self(), g_main);
	e->on_stopper = tls_stopper;
	e->at_ms = now_ms();
	pthread_mutex_lock(&g_ev_lock);
	if (__atomic_load_n(&g_quiet, __ATOMIC_SEQ_CST)) {
		g_quiet_count[e->k]++;
		if (e->k == EV_CONN && g_quiet_nlinks < QUIET_LINKS_MAX)
			g_quiet_links[g_quiet_nlinks++] = e->hl;
		pthread_cond_broadcast(&g_ev_cv);
		pthread_mutex_unlock(&g_ev_lock);
		return -1;
	}
	i = g_nev;
	if (g_nev < EV_MAX)
		g_ev[g_nev++] = *e;
	pthread_cond_broadcast(&g_ev_cv);
	pthread_mutex_unlock(&g_ev_lock);
	return i;
}

static int ev_now(void)
{
	int n;

	pthread_mutex_lock(&g_ev_lock);
	n = g_nev;
	pthread_mutex_unlock(&g_ev_lock);
	return n;
}

static bool ev_match(const struct ev *e, int k, const struct m0_ha_link *hl, uint64_t tag)
{
	return e->k == k && (hl == NULL || e->hl == hl) && (tag == 0 || e->tag == tag);
}

/* Index of the first event >= from matching (k, hl, tag), waiting up to timeout_ms; -1. */
/* Waits (g_ev_lock held) up to 20 ms for a new event. */
static void ev_cv_wait_20ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_nsec += 20 * 1000000L;
	if (ts.tv_nsec >= 1000000000L) {
		ts.tv_sec++;
		ts.tv_nsec -= 1000000000L;
	}
	pthread_cond_timedwait(&g_ev_cv, &g_ev_lock, &ts);
}

static int ev_wait(int from, int k, const struct m0_ha_link *hl, uint64_t tag, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
	int found = -1;

	pthread_mutex_lock(&g_ev_lock);
	for (;;) {
		for (int i = from; i < g_nev; i++) {
			if (ev_match(&g_ev[i], k, hl, tag)) {
				found = i;
				break;
			}
		}
		if (found >= 0 || now_ms() >= deadline)
			break;
		ev_cv_wait_20ms();
	}
	pthread_mutex_unlock(&g_ev_lock);
	return found;
}

static int ev_count(int from, int k, const struct m0_ha_link *hl, uint64_t tag)
{
	int n = 0;

	pthread_mutex_lock(&g_ev_lock);
	for (int i = from; i < g_nev; i++)
		n += ev_match(&g_ev[i], k, hl, tag);
	pthread_mutex_unlock(&g_ev_lock);
	return n;
}

static struct ev ev_get(int i)
{
	struct ev e;

	pthread_mutex_lock(&g_ev_lock);
	e = g_ev[i];
	pthread_mutex_unlock(&g_ev_lock);
	return e;
}

static int quiet_count(int k)
{
	int n;

	pthread_mutex_lock(&g_ev_lock);
	n = g_quiet_count[k];
	pthread_mutex_unlock(&g_ev_lock);
	return n;
}

/* Waits until the quiet count of kind k reaches n; false on timeout. */
static bool quiet_wait(int k, int n, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
	bool ok;

	pthread_mutex_lock(&g_ev_lock);
	while (g_quiet_count[k] < n && now_ms() < deadline)
		ev_cv_wait_20ms();
	ok = g_quiet_count[k] >= n;
	pthread_mutex_unlock(&g_ev_lock);
	return ok;
}

/* Entrypoint request event for a process fid, from index `from`. */
static int ev_wait_ep(int from, const struct m0_fid *proc, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		int i = ev_wait(from, EV_EPREQ, NULL, 0, 50);

		if (i >= 0) {
			struct ev e = ev_get(i);

			if (fid_eq(&e.proc, proc))
				return i;
			from = i + 1;
			continue;
		}
		if (now_ms() >= deadline)
			return -1;
	}
}

/* ------------------------------------------------------------------ HA side (callbacks) */

static struct m0_halon_interface *g_hi;
static bool g_auto_reply;        /* reply rc 0 to every entrypoint request, inside the callback */
static bool g_answer_get;        /* answer NVEC GETs inside msg_received */
static bool g_slow_recv;         /* make msg_received slow (ordering test) */
static bool g_send_after_disconnect; /* child test: send after disconnect() */
static int g_recv_overlap;       /* msg_received ran concurrently on one link */
static bool g_slow_connected;    /* link_connected sleeps 300 ms */
static struct m0_ha_link *g_connecting; /* set while a slow link_connected runs */
static bool g_defer_delivered;   /* msg_received keeps the messages (g_deferred) instead of
				  * calling delivered() */
static int g_delivered_calls;    /* delivered() calls made by msg_received, returned */

/* Messages msg_received kept for a later delivered() (g_defer_delivered). */
struct deferred {
	struct m0_ha_link *hl;
	const struct m0_ha_msg *msg;
	uint64_t tag;
};
enum { DEFERRED_MAX = 64 };
static struct deferred g_deferred[DEFERRED_MAX];
static int g_ndeferred;

/* Waits until msg_received has kept a message of link hl; the first such one. (Another link's,
 * such as a late one on the self link, may have been kept before it.) */
static struct deferred deferred_wait_on(const struct m0_ha_link *hl, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
	struct deferred d = { 0 };

	pthread_mutex_lock(&g_ev_lock);
	for (;;) {
		for (int i = 0; i < g_ndeferred && d.msg == NULL; i++)
			if (g_deferred[i].hl == hl)
				d = g_deferred[i];
		if (d.msg != NULL || now_ms() >= deadline)
			break;
		ev_cv_wait_20ms();
	}
	pthread_mutex_unlock(&g_ev_lock);
	return d;
}

/* Waits until msg_received has kept n messages; the n-th (0-based n - 1). */
static struct deferred deferred_wait(int n, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;
	struct deferred d = { 0 };

	pthread_mutex_lock(&g_ev_lock);
	while (g_ndeferred < n && now_ms() < deadline)
		ev_cv_wait_20ms();
	if (g_ndeferred >= n)
		d = g_deferred[n - 1];
	pthread_mutex_unlock(&g_ev_lock);
	return d;
}

/* Waits until msg_received's delivered() calls reach n; false on timeout. */
static bool delivered_calls_wait(int n, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

	while (__atomic_load_n(&g_delivered_calls, __ATOMIC_SEQ_CST) < n) {
		if (now_ms() >= deadline)
			return false;
		sleep_ms(1);
	}
	return true;
}

static const struct m0_fid g_rm_fid = { 0x7300000000000001ULL, 0x2 };
static const char g_rm_ep[] = "inet:tcp:127.0.0.1@22001";

static bool flag(bool *f)
{
	return __atomic_load_n(f, __ATOMIC_SEQ_CST);
}

static void set_flag(bool *f, bool v)
{
	__atomic_store_n(f, v, __ATOMIC_SEQ_CST);
}

/* The test's record of its sends, for the exactly-once check. */
struct sent {
	struct m0_ha_link *hl;
	uint64_t tag;
};
enum { SENT_MAX = 4096 };
static struct sent g_sent[SENT_MAX];
static int g_nsent;
static pthread_mutex_t g_sent_lock = PTHREAD_MUTEX_INITIALIZER;

static uint64_t tsend(struct m0_ha_link *hl, const struct m0_ha_msg *msg)
{
	uint64_t tag = 0;

	tls_in_send = true;
	m0_halon_interface_send(g_hi, hl, msg, &tag);
	tls_in_send = false;
	pthread_mutex_lock(&g_sent_lock);
	if (g_nsent < SENT_MAX)
		g_sent[g_nsent++] = (struct sent){ hl, tag };
	pthread_mutex_unlock(&g_sent_lock);
	return tag;
}

/* Replies with a 2-confd answer; the strings are freed and scribbled right after. */
static void reply(struct m0_uint128 id, int rc)
{
	struct m0_fid fids[2] = { { 0x7300000000000001ULL, 0x9 }, { 0x7300000000000001ULL, 0xa } };
	char *eps[2] = { strdup("inet:tcp:127.0.0.1@22001"), strdup("inet:tcp:127.0.0.1@22002") };
	char *rm = strdup(g_rm_ep);

	tls_in_reply = true;
	m0_halon_interface_entrypoint_reply(g_hi, &id, rc, 2, fids, (const char **)eps, 2,
					    &g_rm_fid, rm);
	tls_in_reply = false;
	for (int i = 0; i < 2; i++) {
		memset(eps[i], 'X', strlen(eps[i]));
		free(eps[i]);
	}
	memset(rm, 'X', strlen(rm));
	free(rm);
	memset(fids, 0xff, sizeof fids);
}

static void cb_entrypoint(struct m0_halon_interface *hi, const struct m0_uint128 *req_id,
			  const char *ep, const struct m0_fid *proc, const char *git, uint64_t pid,
			  bool first)
{
	struct ev e = { .k = EV_EPREQ, .req = *req_id, .proc = *proc, .pid = pid, .first = first };

	CHECK(hi == g_hi);
	snprintf(e.ep, sizeof e.ep, "%s", ep);
	snprintf(e.git, sizeof e.git, "%s", git);
	ev_add(&e);
	if (flag(&g_auto_reply))
		reply(*req_id, 0);
}

/* Per-link "inside msg_received" marks, to catch concurrent delivery on one link. */
static struct {
	struct m0_ha_link *hl;
	int active;
} g_active[64];
static pthread_mutex_t g_active_lock = PTHREAD_MUTEX_INITIALIZER;

static void recv_enter(struct m0_ha_link *hl, int delta)
{
	pthread_mutex_lock(&g_active_lock);
	for (int i = 0; i < 64; i++) {
		if (g_active[i].hl == hl || g_active[i].hl == NULL) {
			g_active[i].hl = hl;
			g_active[i].active += delta;
			if (g_active[i].active > 1)
				g_recv_overlap++;
			break;
		}
	}
	pthread_mutex_unlock(&g_active_lock);
}

static void msg_init(struct m0_ha_msg *m)
{
	memset(m, 0, sizeof *m);
}

static void cb_received(struct m0_halon_interface *hi, struct m0_ha_link *hl,
			const struct m0_ha_msg *msg, uint64_t tag)
{
	struct ev e = { .k = EV_RECV, .hl = hl, .tag = tag };
	const struct m0_ha_msg_data *d = &msg->hm_data;

	CHECK(hi == g_hi);
	CHECKF(__atomic_load_n(&g_connecting, __ATOMIC_SEQ_CST) != hl,
	       "msg_received waits until link_connected has returned");
	recv_enter(hl, 1);
	e.type = d->hed_type;
	e.fid = msg->hm_fid;
	e.src_proc = msg->hm_source_process;
	if (d->hed_type == M0_HA_MSG_EVENT_PROCESS) {
		e.a = d->u.hed_event_process.chp_event;
		e.b = d->u.hed_event_process.chp_type;
		e.c = d->u.hed_event_process.chp_pid;
	} else if (d->hed_type == M0_HA_MSG_EVENT_SERVICE) {
		e.a = d->u.hed_event_service.chs_event;
		e.b = d->u.hed_event_service.chs_type;
		e.c = d->u.hed_event_service.chs_pid;
	} else if (d->hed_type == M0_HA_MSG_NVEC) {
		e.a = d->u.hed_nvec.hmnv_type;
		e.b = d->u.hed_nvec.hmnv_id_of_get;
		e.c = d->u.hed_nvec.hmnv_nr;
		if (d->u.hed_nvec.hmnv_nr > 0) {
			e.note_fid = d->u.hed_nvec.hmnv_arr.hmna_arr[0].no_id;
			e.note_state = d->u.hed_nvec.hmnv_arr.hmna_arr[0].no_state;
		}
	}
	if (flag(&g_slow_recv))
		sleep_ms(1);
	ev_add(&e);
	if (flag(&g_answer_get) && d->hed_type == M0_HA_MSG_NVEC &&
	    d->u.hed_nvec.hmnv_type == M0_HA_NVEC_GET) {
		struct m0_ha_msg *r = malloc(sizeof *r);

		msg_init(r);
		r->hm_data.hed_type = M0_HA_MSG_NVEC;
		r->hm_data.u.hed_nvec.hmnv_type = M0_HA_NVEC_SET;
		r->hm_data.u.hed_nvec.hmnv_id_of_get = d->u.hed_nvec.hmnv_id_of_get;
		r->hm_data.u.hed_nvec.hmnv_nr = d->u.hed_nvec.hmnv_nr;
		for (uint64_t i = 0; i < d->u.hed_nvec.hmnv_nr; i++) {
			r->hm_data.u.hed_nvec.hmnv_arr.hmna_arr[i].no_id =
				d->u.hed_nvec.hmnv_arr.hmna_arr[i].no_id;
			r->hm_data.u.hed_nvec.hmnv_arr.hmna_arr[i].no_state = M0_NC_ONLINE;
		}
		tsend(hl, r); /* from inside a callback, on a locality thread */
		free(r);
	}
	recv_enter(hl, -1);
	if (flag(&g_defer_delivered)) {
		pthread_mutex_lock(&g_ev_lock);
		if (g_ndeferred < DEFERRED_MAX)
			g_deferred[g_ndeferred++] = (struct deferred){ hl, msg, tag };
		pthread_cond_broadcast(&g_ev_cv);
		pthread_mutex_unlock(&g_ev_lock);
		return;
	}
	m0_halon_interface_delivered(hi, hl, msg);
	__atomic_add_fetch(&g_delivered_calls, 1, __ATOMIC_SEQ_CST);
}

static void cb_delivered(struct m0_halon_interface *hi, struct m0_ha_link *hl, uint64_t tag)
{
	struct ev e = { .k = EV_DELIV, .hl = hl, .tag = tag };

	CHECK(hi == g_hi);
	ev_add(&e);
}

static void cb_not_delivered(struct m0_halon_interface *hi, struct m0_ha_link *hl,
			     uint64_t tag)
{
	struct ev e = { .k = EV_NOTDELIV, .hl = hl, .tag = tag };

	CHECK(hi == g_hi);
	ev_add(&e);
}

static void cb_connected(struct m0_halon_interface *hi, const struct m0_uint128 *req_id,
			 struct m0_ha_link *hl)
{
	struct ev e = { .k = EV_CONN, .hl = hl, .req = *req_id };
	char buf[300];

	CHECK(hi == g_hi);
	m0_ha_link_rpc_endpoint(hl, buf, sizeof buf);
	snprintf(e.ep, sizeof e.ep, "%s", buf);
	ev_add(&e);
	if (flag(&g_slow_connected)) {
		__atomic_store_n(&g_connecting, hl, __ATOMIC_SEQ_CST);
		sleep_ms(300);
		__atomic_store_n(&g_connecting, NULL, __ATOMIC_SEQ_CST);
	}
}

static void cb_reused(struct m0_halon_interface *hi, const struct m0_uint128 *req_id,
		      struct m0_ha_link *hl)
{
	struct ev e = { .k = EV_REUSED, .hl = hl, .req = *req_id };

	CHECK(hi == g_hi);
	ev_add(&e);
}

static void cb_absent(struct m0_halon_interface *hi, const struct m0_uint128 *req_id)
{
	struct ev e = { .k = EV_ABSENT, .req = *req_id };

	CHECK(hi == g_hi);
	ev_add(&e);
}

static void cb_disconnecting(struct m0_halon_interface *hi, struct m0_ha_link *hl)
{
	struct ev e = { .k = EV_DISCING, .hl = hl };

	CHECK(hi == g_hi);
	ev_add(&e);
	m0_halon_interface_disconnect(hi, hl);
	if (flag(&g_send_after_disconnect)) {
		struct m0_ha_msg *m = calloc(1, sizeof *m);

		m->hm_data.hed_type = M0_HA_MSG_NVEC;
		tsend(hl, m); /* must abort */
		free(m);
	}
}

static void cb_disconnected(struct m0_halon_interface *hi, struct m0_ha_link *hl)
{
	struct ev e = { .k = EV_DISC, .hl = hl };

	CHECK(hi == g_hi);
	ev_add(&e);
}

static const struct m0_fid g_proc = { 0x7200000000000001ULL, 0x1 };
static const struct m0_fid g_ha = { 0x7300000000000001ULL, 0x1 };
static const struct m0_fid g_rm = { 0x7300000000000001ULL, 0x2 };

static int start_at(const char *ep, const struct m0_fid *proc)
{
	return m0_halon_interface_start(g_hi, ep, proc, &g_ha, &g_rm, cb_entrypoint, cb_received,
					cb_delivered, cb_not_delivered, cb_connected, cb_reused,
					cb_absent, cb_disconnecting, cb_disconnected);
}

static int free_port(void)
{
	struct sockaddr_in sa = { .sin_family = AF_INET };
	socklen_t len = sizeof sa;
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	int port;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 ||
	    getsockname(fd, (struct sockaddr *)&sa, &len) != 0) {
		perror("free_port");
		exit(2);
	}
	port = ntohs(sa.sin_port);
	close(fd);
	return port;
}

/* ------------------------------------------------------------------ process side (client) */

struct client {
	int fd;
	uint8_t *buf;
	size_t len;
	size_t cap;
	uint64_t cookie; /* the HA cookie of the last EP_REP, sent back as cookie_expected */
};

struct frame {
	uint8_t kind;
	uint64_t tag;
	struct wire_ep_rep rep;
	struct m0_ha_msg *msg;
};

static struct client *client_new(int port, int rcvbuf)
{
	struct client *c = calloc(1, sizeof *c);
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	c->fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (rcvbuf > 0)
		setsockopt(c->fd, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof rcvbuf);
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof sa) != 0) {
		perror("connect");
		exit(2);
	}
	c->cap = 1 << 16;
	c->buf = malloc(c->cap);
	return c;
}

static void client_free(struct client *c)
{
	if (c == NULL)
		return;
	if (c->fd >= 0)
		close(c->fd);
	free(c->buf);
	free(c);
}

static void client_close(struct client *c)
{
	close(c->fd);
	c->fd = -1;
}

static void client_write(struct client *c, const void *p, size_t n)
{
	const uint8_t *q = p;

	while (n > 0) {
		ssize_t k = send(c->fd, q, n, MSG_NOSIGNAL);

		if (k <= 0) {
			if (k < 0 && errno == EINTR)
				continue;
			return; /* closed by the server: the tests notice */
		}
		q += k;
		n -= (size_t)k;
	}
}

static void client_put(struct client *c, struct wire_buf *b)
{
	client_write(c, b->data, b->len);
	wire_buf_fini(b);
}

static void frame_free(struct frame *f)
{
	wire_ep_rep_free(&f->rep);
	free(f->msg);
	f->msg = NULL;
}

/* 1: a frame, 0: timeout, -1: closed, -2: undecodable. */
static int client_recv(struct client *c, struct frame *f, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

	memset(f, 0, sizeof *f);
	for (;;) {
		size_t flen;
		const char *why = NULL;
		int rc = wire_frame_peek(c->buf, c->len, &flen, &why);

		if (rc < 0)
			return -2;
		if (rc == 1) {
			const uint8_t *body = c->buf + WIRE_HDR + 1;
			size_t n = flen - WIRE_HDR - 1;

			f->kind = c->buf[WIRE_HDR];
			switch (f->kind) {
			case WIRE_EP_REP:
				rc = wire_dec_ep_rep(body, n, &f->rep, &why);
				if (rc == 0)
					c->cookie = f->rep.cookie_actual; /* as a process does */
				break;
			case WIRE_HA_MSG:
				f->msg = malloc(sizeof *f->msg);
				rc = wire_dec_msg(body, n, &f->tag, f->msg, &why);
				break;
			case WIRE_HA_ACK:
				rc = wire_dec_ack(body, n, &f->tag, &why);
				break;
			case WIRE_DROP:
				rc = wire_dec_drop(body, n, &why);
				break;
			default:
				rc = -1;
				why = "unknown kind";
			}
			memmove(c->buf, c->buf + flen, c->len - flen);
			c->len -= flen;
			if (rc != 0) {
				fprintf(stderr, "client: bad frame 0x%02x: %s\n", f->kind, why);
				frame_free(f);
				return -2;
			}
			return 1;
		}
		if (flen > c->cap) {
			c->cap = flen;
			c->buf = realloc(c->buf, c->cap);
		}
		if (c->len == c->cap) {
			c->cap *= 2;
			c->buf = realloc(c->buf, c->cap);
		}
		{
			struct pollfd p = { .fd = c->fd, .events = POLLIN };
			uint64_t now = now_ms();
			ssize_t k;

			if (now >= deadline)
				return 0;
			if (poll(&p, 1, (int)(deadline - now)) <= 0)
				continue;
			k = recv(c->fd, c->buf + c->len, c->cap - c->len, 0);
			if (k <= 0)
				return -1;
			c->len += (size_t)k;
		}
	}
}

/* Next frame of a kind, skipping others (skipped HA_MSGs are counted in *skipped if given). */
static int client_expect(struct client *c, uint8_t kind, struct frame *f, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		uint64_t now = now_ms();
		int rc;

		if (now >= deadline)
			return 0;
		rc = client_recv(c, f, (int)(deadline - now));
		if (rc != 1)
			return rc;
		if (f->kind == kind)
			return 1;
		frame_free(f);
	}
}

/* true when the server closed the connection within timeout_ms (frames are discarded). */
static bool client_wait_closed(struct client *c, int timeout_ms)
{
	uint64_t deadline = now_ms() + (uint64_t)timeout_ms;

	for (;;) {
		struct frame f;
		uint64_t now = now_ms();
		int rc;

		if (now >= deadline)
			return false;
		rc = client_recv(c, &f, (int)(deadline - now));
		if (rc == 1) {
			frame_free(&f);
			continue;
		}
		if (rc == 0)
			return false;
		return rc == -1;
	}
}

static void c_ep_req(struct client *c, uint64_t seq, bool first, uint64_t pid,
		     const struct m0_fid *proc, const char *ep)
{
	struct wire_ep_req *r = calloc(1, sizeof *r);
	struct wire_buf b = { 0 };

	r->seq = seq;
	r->first_request = first;
	r->cookie_expected = c->cookie;
	r->pid = pid;
	r->process = *proc;
	snprintf(r->endpoint, sizeof r->endpoint, "%s", ep);
	snprintf(r->git_rev, sizeof r->git_rev, "test-git-rev");
	CHECK(wire_enc_ep_req(&b, r) == 0);
	client_put(c, &b);
	free(r);
}

static void c_msg(struct client *c, uint64_t tag, const struct m0_ha_msg *m)
{
	struct wire_buf b = { 0 };

	CHECK(wire_enc_msg(&b, WIRE_MSG, tag, m) == 0);
	client_put(c, &b);
}

static void c_ack(struct client *c, uint64_t tag)
{
	struct wire_buf b = { 0 };

	CHECK(wire_enc_ack(&b, WIRE_ACK, tag) == 0);
	client_put(c, &b);
}

static void mk_process_event(struct m0_ha_msg *m, const struct m0_fid *proc, uint64_t event,
			     uint64_t pid)
{
	msg_init(m);
	m->hm_fid = *proc;
	m->hm_data.hed_type = M0_HA_MSG_EVENT_PROCESS;
	m->hm_data.u.hed_event_process.chp_event = event;
	m->hm_data.u.hed_event_process.chp_type = M0_CONF_HA_PROCESS_M0D;
	m->hm_data.u.hed_event_process.chp_pid = pid;
}

static void mk_nvec(struct m0_ha_msg *m, uint64_t type, uint64_t id, bool ignore_same,
		    uint32_t nr, const struct m0_fid *fids, uint32_t state)
{
	msg_init(m);
	m->hm_data.hed_type = M0_HA_MSG_NVEC;
	m->hm_data.u.hed_nvec.hmnv_type = type;
	m->hm_data.u.hed_nvec.hmnv_id_of_get = id;
	m->hm_data.u.hed_nvec.hmnv_ignore_same_state = ignore_same;
	m->hm_data.u.hed_nvec.hmnv_nr = nr;
	for (uint32_t i = 0; i < nr; i++) {
		m->hm_data.u.hed_nvec.hmnv_arr.hmna_arr[i].no_id = fids[i % 4];
		m->hm_data.u.hed_nvec.hmnv_arr.hmna_arr[i].no_state = state;
	}
}

/* Sends a one-note NVEC SET on the self link. */
static uint64_t self_note(struct m0_ha_link *self, const struct m0_fid *fid, uint32_t state,
			  bool ignore_same)
{
	struct m0_ha_msg *m = malloc(sizeof *m);
	uint64_t tag;

	mk_nvec(m, M0_HA_NVEC_SET, 0, ignore_same, 1, (const struct m0_fid[4]){ *fid }, state);
	tag = tsend(self, m);
	free(m);
	return tag;
}

/* Connects a process and makes its link (auto reply must be on). */
static struct client *process_connect(int port, const struct m0_fid *proc, const char *ep,
				      struct m0_ha_link **hl, int rcvbuf)
{
	struct client *c = client_new(port, rcvbuf);
	int from = ev_now();
	struct frame f;
	int i;

	c_ep_req(c, 1, true, 4242, proc, ep);
	i = ev_wait_ep(from, proc, T(5000));
	CHECK(i >= 0);
	*hl = NULL;
	if (i >= 0) {
		struct ev e = ev_get(i);
		int j = ev_wait(i, EV_CONN, NULL, 0, T(5000));

		for (; j >= 0; j = ev_wait(j + 1, EV_CONN, NULL, 0, T(5000))) {
			struct ev k = ev_get(j);

			if (k.req.u_lo == e.req.u_lo) {
				*hl = k.hl;
				break;
			}
		}
	}
	CHECK(*hl != NULL);
	CHECK(client_expect(c, WIRE_EP_REP, &f, T(5000)) == 1 && f.rep.rc == 0 &&
	      f.rep.link == WIRE_LINK_CONNECTED);
	frame_free(&f);
	return c;
}

/* ------------------------------------------------------------------ codec tests */

static void fill_random(void *p, size_t n, unsigned *seed)
{
	uint8_t *q = p;

	for (size_t i = 0; i < n; i++)
		q[i] = (uint8_t)rand_r(seed);
}

static void make_msg(struct m0_ha_msg *m, uint64_t type, unsigned *seed)
{
	struct m0_ha_msg_data *d = &m->hm_data;

	msg_init(m);
	fill_random(&m->hm_fid, sizeof m->hm_fid, seed);
	fill_random(&m->hm_source_process, sizeof m->hm_source_process, seed);
	fill_random(&m->hm_source_service, sizeof m->hm_source_service, seed);
	fill_random(&m->hm_time, sizeof m->hm_time, seed);
	fill_random(&m->hm_epoch, sizeof m->hm_epoch, seed);
	d->hed_type = type;
	switch (type) {
	case M0_HA_MSG_STOB_IOQ: {
		struct m0_stob_ioq_error *e = &d->u.hed_stob_ioq;

		fill_random(&e->sie_conf_sdev, sizeof e->sie_conf_sdev, seed);
		fill_random(&e->sie_stob_id, sizeof e->sie_stob_id, seed);
		e->sie_fd = -5;
		e->sie_opcode = 2;
		e->sie_rc = -EIO;
		e->sie_offset = 0x123456789ULL;
		e->sie_size = 4096;
		e->sie_bshift = 12;
		break;
	}
	case M0_HA_MSG_NVEC:
	case M0_HA_MSG_FAILURE_VEC_REP: {
		struct m0_ha_note *arr = type == M0_HA_MSG_NVEC ? d->u.hed_nvec.hmnv_arr.hmna_arr :
								  d->u.hed_fvec_rep.mfp_vec.hmna_arr;
		uint32_t nr = type == M0_HA_MSG_NVEC ? 1024 : 3;

		for (uint32_t i = 0; i < nr; i++) {
			fill_random(&arr[i].no_id, sizeof arr[i].no_id, seed);
			arr[i].no_state = (uint32_t)rand_r(seed) % 8;
		}
		if (type == M0_HA_MSG_NVEC) {
			d->u.hed_nvec.hmnv_type = M0_HA_NVEC_GET;
			d->u.hed_nvec.hmnv_id_of_get = 77;
			d->u.hed_nvec.hmnv_ignore_same_state = 1;
			d->u.hed_nvec.hmnv_nr = nr;
		} else {
			fill_random(&d->u.hed_fvec_rep.mfp_pool, sizeof(struct m0_fid), seed);
			d->u.hed_fvec_rep.mfp_cookie.co_addr = 0x5555d8362d80ULL;
			d->u.hed_fvec_rep.mfp_cookie.co_generation = 0x18ea76c2cc668b7cULL;
			d->u.hed_fvec_rep.mfp_nr = nr;
		}
		break;
	}
	case M0_HA_MSG_FAILURE_VEC_REQ:
		fill_random(&d->u.hed_fvec_req.mfq_pool, sizeof(struct m0_fid), seed);
		d->u.hed_fvec_req.mfq_cookie.co_addr = 1;
		d->u.hed_fvec_req.mfq_cookie.co_generation = 2;
		break;
	case M0_HA_MSG_EVENT_PROCESS:
		d->u.hed_event_process.chp_event = 4;
		d->u.hed_event_process.chp_type = 3;
		d->u.hed_event_process.chp_pid = 11136;
		break;
	case M0_HA_MSG_EVENT_SERVICE:
		d->u.hed_event_service.chs_event = 1;
		d->u.hed_event_service.chs_type = 17;
		d->u.hed_event_service.chs_pid = 11136;
		break;
	case M0_HA_MSG_EVENT_RPC:
		d->u.hed_event_rpc.hmr_attempts = 3;
		d->u.hed_event_rpc.hmr_state = 9;
		break;
	case M0_HA_MSG_BE_IO_ERR:
		d->u.hed_be_io_err.ber_errcode = (uint32_t)-EIO;
		d->u.hed_be_io_err.ber_location = 2;
		d->u.hed_be_io_err.ber_io_opcode = 255;
		break;
	case M0_HA_MSG_SNS_ERR:
		d->u.hed_ha_sns_err.hse_errcode = 28;
		d->u.hed_ha_sns_err.hse_opcode = 1;
		break;
	}
}

/* Every strict prefix of a body and the body plus one byte must be rejected. */
static bool rejects_bad_lengths(uint8_t kind, const uint8_t *body, size_t n)
{
	uint8_t *p = malloc(n + 1);
	struct m0_ha_msg *m = malloc(sizeof *m);
	struct wire_ep_req *q = malloc(sizeof *q);
	struct wire_ep_rep rep;
	bool ok = true;

	memcpy(p, body, n);
	p[n] = 0;
	for (size_t len = 0; len <= n + 1; len++) {
		const char *why = NULL;
		uint64_t tag;
		int rc;

		if (len == n)
			continue;
		/* A strict prefix is rejected; long bodies: test a sample of prefixes. */
		if (n > 4096 && len % 97 != 0 && len < n - 64)
			continue;
		switch (kind) {
		case WIRE_EP_REQ:
			rc = wire_dec_ep_req(p, len, q, &why);
			break;
		case WIRE_EP_REP:
			rc = wire_dec_ep_rep(p, len, &rep, &why);
			wire_ep_rep_free(&rep);
			break;
		case WIRE_MSG:
			rc = wire_dec_msg(p, len, &tag, m, &why);
			break;
		default:
			rc = wire_dec_ack(p, len, &tag, &why);
			break;
		}
		if (rc == 0 || why == NULL)
			ok = false;
	}
	free(p);
	free(m);
	free(q);
	return ok;
}

static void test_codec(void)
{
	static const uint64_t types[] = { 1, 2, 3, 4, 7, 8, 9, 10, 11 };
	struct m0_ha_msg *m = malloc(sizeof *m);
	struct m0_ha_msg *d = malloc(sizeof *d);
	unsigned seed = 12345;

	section("codec");
	for (size_t i = 0; i < sizeof types / sizeof types[0]; i++) {
		struct wire_buf b = { 0 };
		const char *why = NULL;
		size_t flen = 0;
		uint64_t tag = 0;

		make_msg(m, types[i], &seed);
		CHECKF(wire_enc_msg(&b, WIRE_HA_MSG, 2 * i + 1, m) == 0, "encode type %" PRIu64,
		       types[i]);
		CHECK(wire_frame_peek(b.data, b.len, &flen, &why) == 1 && flen == b.len);
		CHECK(b.data[WIRE_HDR] == WIRE_HA_MSG);
		memset(d, 0xa5, sizeof *d);
		CHECKF(wire_dec_msg(b.data + WIRE_HDR + 1, b.len - WIRE_HDR - 1, &tag, d, &why) == 0,
		       "decode type %" PRIu64 ": %s", types[i], why);
		CHECKF(tag == 2 * i + 1 && memcmp(m, d, sizeof *m) == 0, "round trip of type %" PRIu64,
		       types[i]);
		CHECKF(rejects_bad_lengths(WIRE_MSG, b.data + WIRE_HDR + 1, b.len - WIRE_HDR - 1),
		       "truncations of type %" PRIu64 " rejected", types[i]);
		/* the tag patch used by send */
		wire_msg_patch_tag(b.data, 99);
		CHECK(wire_dec_msg(b.data + WIRE_HDR + 1, b.len - WIRE_HDR - 1, &tag, d, &why) == 0 &&
		      tag == 99);
		wire_buf_fini(&b);
	}
	/* types that cannot cross the wire */
	{
		static const uint64_t bad[] = { 0, 5, 6, 12, 1000 };

		for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
			struct wire_buf b = { 0 };
			const char *why = NULL;
			uint64_t tag;

			make_msg(m, 7, &seed);
			m->hm_data.hed_type = bad[i];
			CHECKF(wire_enc_msg(&b, WIRE_MSG, 2, m) == -EINVAL && b.len == 0,
			       "type %" PRIu64 " not encodable", bad[i]);
			/* hand-made body with that type */
			m->hm_data.hed_type = 7;
			CHECK(wire_enc_msg(&b, WIRE_MSG, 2, m) == 0);
			/* type field: after len(4) kind(1) tag(8) 3 fids(48) time(8) epoch(8) */
			for (int k = 0; k < 8; k++)
				b.data[WIRE_HDR + 1 + 8 + 48 + 16 + k] = (uint8_t)(bad[i] >> (8 * k));
			CHECKF(wire_dec_msg(b.data + WIRE_HDR + 1, b.len - WIRE_HDR - 1, &tag, d, &why) ==
				       -EPROTO && why != NULL,
			       "type %" PRIu64 " rejected by the decoder", bad[i]);
			wire_buf_fini(&b);
		}
	}
	/* nr > 1024, bad nvec type, 8-bit fields */
	{
		struct wire_buf b = { 0 };
		const char *why = NULL;
		uint64_t tag;

		make_msg(m, M0_HA_MSG_NVEC, &seed);
		m->hm_data.u.hed_nvec.hmnv_nr = 1025;
		CHECK(wire_enc_msg(&b, WIRE_MSG, 2, m) == -EINVAL);
		CHECK(wire_msg_check(m, &why) == -EINVAL && why != NULL);
		m->hm_data.u.hed_nvec.hmnv_nr = 1024;
		CHECK(wire_enc_msg(&b, WIRE_MSG, 2, m) == 0);
		/* nr at: hdr 4 + kind 1 + tag 8 + 72 header + 24 (type,id,ignore) */
		b.data[WIRE_HDR + 1 + 8 + 72 + 24] = 0x01;
		b.data[WIRE_HDR + 1 + 8 + 72 + 24 + 1] = 0x04; /* 1025 */
		CHECK(wire_dec_msg(b.data + WIRE_HDR + 1, b.len - WIRE_HDR - 1, &tag, d, &why) ==
		      -EPROTO);
		wire_buf_fini(&b);
		m->hm_data.u.hed_nvec.hmnv_type = 2;
		CHECK(wire_enc_msg(&b, WIRE_MSG, 2, m) == -EINVAL);
		make_msg(m, M0_HA_MSG_BE_IO_ERR, &seed);
		CHECK(wire_enc_msg(&b, WIRE_MSG, 2, m) == 0);
		b.data[b.len - 4 - 3] = 1; /* location = 0x100 + 2 */
		CHECK(wire_dec_msg(b.data + WIRE_HDR + 1, b.len - WIRE_HDR - 1, &tag, d, &why) ==
		      -EPROTO);
		wire_buf_fini(&b);
	}
	/* EP_REQ */
	{
		struct wire_ep_req *q = calloc(1, sizeof *q);
		struct wire_ep_req *q2 = calloc(1, sizeof *q2);
		struct wire_buf b = { 0 };
		const char *why = NULL;

		q->seq = 7;
		q->first_request = true;
		q->cookie_expected = 0x1234567890abcdefULL;
		q->pid = 29534;
		q->process = (struct m0_fid){ 0x7200000000000048ULL, 1 };
		snprintf(q->endpoint, sizeof q->endpoint, "inet:tcp:127.0.0.1@22002");
		snprintf(q->git_rev, sizeof q->git_rev, "27e7f86ed57aad344d02c426e939add31626034d");
		CHECK(wire_enc_ep_req(&b, q) == 0);
		CHECK(b.data[WIRE_HDR] == WIRE_EP_REQ);
		CHECK(wire_dec_ep_req(b.data + WIRE_HDR + 1, b.len - WIRE_HDR - 1, q2, &why) == 0);
		CHECK(q2->seq == 7 && q2->first_request && q2->pid == 29534 &&
		      q2->cookie_expected == 0x1234567890abcdefULL &&
		      fid_eq(&q2->process, &q->process) && strcmp(q2->endpoint, q->endpoint) == 0 &&
		      strcmp(q2->git_rev, q->git_rev) == 0);
		CHECK(rejects_bad_lengths(WIRE_EP_REQ, b.data + WIRE_HDR + 1, b.len - WIRE_HDR - 1));
		wire_buf_fini(&b);
		memset(q->endpoint, 'e', WIRE_MAX_STR);
		q->endpoint[WIRE_MAX_STR] = '\0';
		CHECK(wire_enc_ep_req(&b, q) == 0); /* 4096 is fine */
		CHECK(wire_dec_ep_req(b.data + WIRE_HDR + 1, b.len - WIRE_HDR - 1, q2, &why) == 0 &&
		      strlen(q2->endpoint) == WIRE_MAX_STR);
		wire_buf_fini(&b);
		{
			char *big = malloc(WIRE_MAX_STR + 2);

			memset(big, 'e', WIRE_MAX_STR + 1);
			big[WIRE_MAX_STR + 1] = '\0';
			CHECK(wire_enc_ep_rep(&b, 1, 0, 0, 1, 0, NULL, NULL, 0, NULL, big) == -EINVAL &&
			      b.len == 0);
			wire_buf_fini(&b);
			free(big);
		}
		free(q);
		free(q2);
	}
	/* EP_REP, ACK, DROP */
	{
		struct m0_fid fids[2] = { { 0x7300000000000001ULL, 9 }, { 1, 2 } };
		const char *eps[2] = { "inet:tcp:127.0.0.1@22001", "" };
		struct wire_buf b = { 0 };
		struct wire_ep_rep r;
		const char *why = NULL;
		uint64_t tag;

		CHECK(wire_enc_ep_rep(&b, 5, -11, WIRE_LINK_NONE, 0xfedcba9876543210ULL, 2, fids, eps,
				      1, &g_rm_fid, g_rm_ep) == 0);
		wire_ep_rep_patch(b.data, 9, WIRE_LINK_REUSED);
		CHECK(wire_dec_ep_rep(b.data + WIRE_HDR + 1, b.len - WIRE_HDR - 1, &r, &why) == 0);
		CHECK(r.seq == 9 && r.rc == -11 && r.link == WIRE_LINK_REUSED && r.confd_nr == 2 &&
		      r.cookie_actual == 0xfedcba9876543210ULL &&
		      fid_eq(&r.confd_fids[0], &fids[0]) && fid_eq(&r.confd_fids[1], &fids[1]) &&
		      strcmp(r.confd_eps[0], eps[0]) == 0 && strcmp(r.confd_eps[1], "") == 0 &&
		      r.quorum == 1 && fid_eq(&r.rm_fid, &g_rm_fid) && strcmp(r.rm_ep, g_rm_ep) == 0);
		wire_ep_rep_free(&r);
		CHECK(rejects_bad_lengths(WIRE_EP_REP, b.data + WIRE_HDR + 1, b.len - WIRE_HDR - 1));
		wire_buf_fini(&b);
		CHECK(wire_enc_ep_rep(&b, 5, 0, 0, 1, 1025, NULL, NULL, 1, NULL, NULL) == -EINVAL);
		CHECK(wire_enc_ack(&b, WIRE_ACK, 42) == 0 && b.len == WIRE_HDR + 9);
		CHECK(wire_dec_ack(b.data + WIRE_HDR + 1, 8, &tag, &why) == 0 && tag == 42);
		CHECK(rejects_bad_lengths(WIRE_ACK, b.data + WIRE_HDR + 1, 8));
		wire_buf_fini(&b);
		CHECK(wire_enc_drop(&b) == 0 && b.len == WIRE_HDR + 1 && b.data[0] == 1 &&
		      b.data[WIRE_HDR] == WIRE_DROP);
		CHECK(wire_dec_drop(b.data, 0, &why) == 0);
		CHECK(wire_dec_drop(b.data, 1, &why) == -EPROTO);
		wire_buf_fini(&b);
	}
	/* frame lengths */
	{
		uint8_t h[5] = { 0, 0, 0, 0, 1 };
		size_t flen;
		const char *why = NULL;

		CHECK(wire_frame_peek(h, 3, &flen, &why) == 0);
		CHECK(wire_frame_peek(h, 5, &flen, &why) == -EPROTO);
		h[0] = 1;
		h[2] = 0x10; /* 1 MiB + 1 */
		CHECK(wire_frame_peek(h, 5, &flen, &why) == -EPROTO);
		h[0] = 0;    /* exactly 1 MiB */
		CHECK(wire_frame_peek(h, 5, &flen, &why) == 0 && flen == WIRE_HDR + (1u << 20));
		h[2] = 0;
		h[0] = 1;
		CHECK(wire_frame_peek(h, 5, &flen, &why) == 1 && flen == 5);
	}
	/* random bodies and mutations never crash (sanitizers/valgrind watch) */
	{
		uint8_t *buf = malloc(4096);
		struct wire_ep_req *q = malloc(sizeof *q);
		struct wire_ep_rep r;
		int accepted = 0;

		for (int it = 0; it < 20000; it++) {
			size_t n = (size_t)rand_r(&seed) % 300;
			const char *why = NULL;
			uint64_t tag;

			fill_random(buf, n, &seed);
			if (n >= 80 && it % 2 == 0) { /* plausible message header */
				memset(buf + 8 + 64, 0, 8);
				buf[8 + 64] = (uint8_t)(1 + rand_r(&seed) % 11);
			}
			accepted += wire_dec_msg(buf, n, &tag, d, &why) == 0;
			accepted += wire_dec_ep_req(buf, n, q, &why) == 0;
			accepted += wire_dec_ep_rep(buf, n, &r, &why) == 0;
			wire_ep_rep_free(&r);
			accepted += wire_dec_ack(buf, n, &tag, &why) == 0;
		}
		CHECK(accepted >= 0);
		free(buf);
		free(q);
	}
	free(m);
	free(d);
}

/* ------------------------------------------------------------------ abort tests (forked) */

static char g_child_ep[64];

static void child_setup(void)
{
	int from = ev_now();

	set_flag(&g_auto_reply, true);
	if (m0_halon_interface_init(&g_hi, "x", "y", "disable-compatibility-check",
				    NODE_UUID) != 0 ||
	    start_at(g_child_ep, &g_proc) != 0)
		_exit(3);
	if (ev_wait(from, EV_RECV, NULL, 12, T(10000)) < 0)
		_exit(4);
}

static struct m0_ha_link *child_self(void)
{
	int i = ev_wait(0, EV_CONN, NULL, 0, 1000);

	return i < 0 ? NULL : ev_get(i).hl;
}

static void child_tag_nonzero(void)
{
	struct m0_ha_msg *m = malloc(sizeof *m);

	mk_nvec(m, M0_HA_NVEC_SET, 0, false, 0, NULL, 0);
	m->hm_tag = 1;
	tsend(child_self(), m);
}

static void child_nr_too_big(void)
{
	struct m0_ha_msg *m = malloc(sizeof *m);

	mk_nvec(m, M0_HA_NVEC_SET, 0, false, 0, NULL, 0);
	m->hm_data.u.hed_nvec.hmnv_nr = 1025;
	tsend(child_self(), m);
}

static void child_bad_type(void)
{
	struct m0_ha_msg *m = malloc(sizeof *m);

	msg_init(m);
	m->hm_data.hed_type = M0_HA_MSG_KEEPALIVE_REQ;
	tsend(child_self(), m);
}

static void child_bogus_link(void)
{
	struct m0_ha_msg *m = malloc(sizeof *m);
	uint64_t bogus[64] = { 0 };

	mk_nvec(m, M0_HA_NVEC_SET, 0, false, 0, NULL, 0);
	tsend((struct m0_ha_link *)bogus, m);
}

/* In an abort child: connects a process and has its link dropped (FAILED on the self link). */
static struct client *child_link_then_drop(int port, struct m0_ha_link **hl)
{
	const struct m0_fid pf = { 0x7200000000000099ULL, 1 };
	struct client *c;
	int from;

	c = process_connect(port, &pf, "inet:tcp:127.0.0.1@1", hl, 0);
	if (*hl == NULL)
		_exit(5);
	from = ev_now();
	self_note(child_self(), &pf, M0_NC_ONLINE, false);
	self_note(child_self(), &pf, M0_NC_FAILED, false);
	if (ev_wait(from, EV_DISC, *hl, 0, T(5000)) < 0)
		_exit(6);
	return c;
}

static void child_dead_link(void)
{
	struct m0_ha_msg *m = malloc(sizeof *m);
	struct m0_ha_link *hl = NULL;
	struct client *c = child_link_then_drop(atoi(strrchr(g_child_ep, '@') + 1), &hl);

	mk_nvec(m, M0_HA_NVEC_SET, 0, false, 0, NULL, 0);
	tsend(hl, m);
	client_free(c);
}

/* Sends one NVEC SET on the self link with a note (state) for each of nr process fids. */
static void self_notes(struct m0_ha_link *self, const struct m0_fid *fids, uint32_t nr,
		       uint32_t state)
{
	struct m0_ha_msg *m = malloc(sizeof *m);

	mk_nvec(m, M0_HA_NVEC_SET, 0, false, 0, NULL, state);
	m->hm_data.u.hed_nvec.hmnv_nr = nr;
	for (uint32_t i = 0; i < nr; i++) {
		m->hm_data.u.hed_nvec.hmnv_arr.hmna_arr[i].no_id = fids[i];
		m->hm_data.u.hed_nvec.hmnv_arr.hmna_arr[i].no_state = state;
	}
	tsend(self, m);
	free(m);
}

/* Connects a process without the event log (auto reply on): EP_REQ, wait for EP_REP. */
static struct client *quiet_connect(int port, const struct m0_fid *proc, const char *ep)
{
	struct client *c = client_new(port, 0);
	struct frame f;

	c_ep_req(c, 1, true, 4242, proc, ep);
	CHECK(client_expect(c, WIRE_EP_REP, &f, T(5000)) == 1 && f.rep.rc == 0 &&
	      f.rep.link == WIRE_LINK_CONNECTED);
	frame_free(&f);
	return c;
}

/*
 * nr processes connect (fids[0..nr)) and are dropped by FAILED notes; returns when their
 * link_disconnected have run and their DROPs arrived. The fids must have a first note
 * recorded already. Quiet mode.
 */
static void quiet_cycle(int port, struct m0_ha_link *self, const struct m0_fid *fids, int nr)
{
	struct client *c[64];
	int disc = quiet_count(EV_DISC);

	for (int i = 0; i < nr && i < 64; i++)
		c[i] = quiet_connect(port, &fids[i], "inet:tcp:127.0.0.1@3");
	self_notes(self, fids, (uint32_t)nr, M0_NC_FAILED);
	CHECK(quiet_wait(EV_DISC, disc + nr, T(10000)));
	for (int i = 0; i < nr && i < 64; i++) {
		struct frame f;

		CHECK(client_expect(c[i], WIRE_DROP, &f, T(5000)) == 1);
		client_free(c[i]);
	}
}

/* Like child_dead_link, but 40 more links die between the link's death and the send. */
static void child_endpoint_unknown_link(void)
{
	char buf[64];
	uint64_t bogus[64] = { 0 };

	m0_ha_link_rpc_endpoint((struct m0_ha_link *)bogus, buf, sizeof buf);
}

static void child_endpoint_len_0(void)
{
	char buf[64];

	m0_ha_link_rpc_endpoint(child_self(), buf, 0);
}

static void child_endpoint_dead_link(void)
{
	char buf[64];
	struct m0_ha_link *hl = NULL;
	struct client *c = child_link_then_drop(atoi(strrchr(g_child_ep, '@') + 1), &hl);

	for (int i = 0; i < 200 && hax_standin_link_state(g_hi, hl) != 2; i++)
		sleep_ms(10); /* until link_disconnected has returned */
	m0_ha_link_rpc_endpoint(hl, buf, sizeof buf);
	client_free(c);
}

static void child_dead_link_graveyard(void)
{
	struct m0_fid fids[40];
	struct m0_ha_msg *m = malloc(sizeof *m);
	struct m0_ha_link *hl = NULL;
	int port = atoi(strrchr(g_child_ep, '@') + 1);
	struct client *c = child_link_then_drop(port, &hl);

	for (int i = 0; i < 40; i++)
		fids[i] = (struct m0_fid){ 0x72000000000000a0ULL, (uint64_t)i + 1 };
	self_notes(child_self(), fids, 40, M0_NC_ONLINE);
	set_flag(&g_quiet, true);
	quiet_cycle(port, child_self(), fids, 40);
	set_flag(&g_quiet, false);
	mk_nvec(m, M0_HA_NVEC_SET, 0, false, 0, NULL, 0);
	tsend(hl, m);
	client_free(c);
}

/* The thread that called init (the child's main thread) adopted, even shunned: fini fails. */
static void child_adopt_init_thread(void)
{
	struct m0_thread *th = calloc(1, sizeof *th);

	if (m0_halon_interface_thread_adopt(g_hi, th) != 0)
		_exit(7);
	m0_halon_interface_thread_shun();
	m0_halon_interface_stop(g_hi);
	m0_halon_interface_fini(g_hi);
}

static void *adopt_thread(void *arg)
{
	(void)arg;
	m0_halon_interface_thread_adopt(g_hi, calloc(1, sizeof(struct m0_thread)));
	return NULL; /* exits without shunning */
}

static void child_adopted_not_shunned(void)
{
	pthread_t t;

	pthread_create(&t, NULL, adopt_thread, NULL);
	pthread_join(t, NULL);
	m0_halon_interface_fini(g_hi); /* stops first */
}

static void child_adopt_nonzero(void)
{
	struct m0_thread *th = calloc(1, sizeof *th);

	th->t_opaque[3] = 1;
	m0_halon_interface_thread_adopt(g_hi, th);
}

/* 4096 distinct process fids noted on the self link are fine; the 4097th aborts. */
static void child_notes_4097(void)
{
	struct m0_fid *fids = calloc(1024, sizeof *fids);

	for (uint32_t b = 0; b < 4; b++) {
		for (uint32_t i = 0; i < 1024; i++)
			fids[i] = (struct m0_fid){ 0x7200000000000100ULL + b, (uint64_t)i + 1 };
		self_notes(child_self(), fids, 1024, M0_NC_ONLINE);
		self_notes(child_self(), fids, 1024, M0_NC_TRANSIENT); /* known: no new entry */
	}
	fprintf(stderr, "4096 processes noted\n");
	fids[0] = (struct m0_fid){ 0x7200000000000200ULL, 1 };
	self_notes(child_self(), fids, 1, M0_NC_ONLINE);
}

#define OWN_FAILED_ASSERT                                                                \
	"!rep->hae_disconnected_previously in ha_entrypoint_state_cb(): HA has already decided " \
	"that this process has failed"

/* HA notes its own process ONLINE then FAILED on the self link: the self link is dropped. */
static struct m0_ha_link *child_own_failed(void)
{
	struct m0_ha_link *self = child_self();
	int from = ev_now();

	self_note(self, &g_proc, M0_NC_ONLINE, true);
	self_note(self, &g_proc, M0_NC_FAILED, true);
	if (ev_wait(from, EV_DISCING, self, 0, T(5000)) < 0 ||
	    ev_wait(from, EV_DISC, self, 0, T(5000)) < 0)
		_exit(8);
	fprintf(stderr, "self link dropped\n");
	return self;
}

static void child_own_failed_stop(void)
{
	child_own_failed();
	m0_halon_interface_stop(g_hi);
}

static void child_own_failed_send(void)
{
	struct m0_ha_link *self = child_self();
	int from = ev_now();

	self_note(self, &g_proc, M0_NC_ONLINE, true);
	self_note(self, &g_proc, M0_NC_FAILED, true);
	/* the next send on the self link, before or after its link_disconnected */
	if (ev_wait(from, EV_DISCING, self, 0, T(5000)) < 0)
		_exit(8);
	self_note(self, &g_proc, M0_NC_ONLINE, true);
}

/* In an abort child: a process connects and sends one event that msg_received keeps. */
static struct deferred child_deferred_msg(struct m0_ha_link **hl, struct client **c)
{
	const struct m0_fid pf = { 0x7200000000000098ULL, 1 };
	struct m0_ha_msg *m = malloc(sizeof *m);
	struct deferred d;

	set_flag(&g_defer_delivered, true);
	*c = process_connect(atoi(strrchr(g_child_ep, '@') + 1), &pf, "inet:tcp:127.0.0.1@1", hl,
			     0);
	mk_process_event(m, &pf, M0_CONF_HA_PROCESS_STARTED, 1);
	c_msg(*c, 2, m);
	free(m);
	d = deferred_wait_on(*hl, T(5000));
	if (d.msg == NULL) {
		fprintf(stderr, "child: the deferred message did not come (msg %p, link %p, want %p)\n",
			(void *)d.msg, (void *)d.hl, (void *)*hl);
		_exit(9);
	}
	return d;
}

static void child_delivered_twice(void)
{
	struct m0_ha_link *hl;
	struct client *c;
	struct deferred d = child_deferred_msg(&hl, &c);

	m0_halon_interface_delivered(g_hi, hl, d.msg);
	fprintf(stderr, "delivered once\n");
	m0_halon_interface_delivered(g_hi, hl, d.msg);
}

static void child_delivered_not_given(void)
{
	struct m0_ha_link *hl;
	struct client *c;
	struct m0_ha_msg *other = calloc(1, sizeof *other);

	child_deferred_msg(&hl, &c);
	m0_halon_interface_delivered(g_hi, hl, other);
}

static void child_delivered_other_link(void)
{
	struct m0_ha_link *hl;
	struct client *c;
	struct deferred d = child_deferred_msg(&hl, &c);

	m0_halon_interface_delivered(g_hi, child_self(), d.msg);
}

static void child_delivered_after_drop(void)
{
	const struct m0_fid pf = { 0x7200000000000098ULL, 1 };
	struct m0_ha_link *hl;
	struct client *c;
	struct deferred d = child_deferred_msg(&hl, &c);
	int from = ev_now();

	self_note(child_self(), &pf, M0_NC_ONLINE, false);
	self_note(child_self(), &pf, M0_NC_FAILED, false);
	if (ev_wait(from, EV_DISC, hl, 0, T(5000)) < 0)
		_exit(6);
	m0_halon_interface_delivered(g_hi, hl, d.msg);
}

static void child_send_after_disconnect(void)
{
	set_flag(&g_send_after_disconnect, true);
	m0_halon_interface_stop(g_hi);
}

static void run_abort_child_all(const char *name, void (*fn)(void), const char *const *wants);

static void run_abort_child(const char *name, void (*fn)(void), const char *want)
{
	const char *wants[] = { want, NULL };

	run_abort_child_all(name, fn, wants);
}

/* Runs fn in a forked child set up by child_setup; it must abort with every string of wants
 * (NULL-terminated) in its standard error. */
static void run_abort_child_all(const char *name, void (*fn)(void), const char *const *wants)
{
	int pfd[2];
	pid_t pid;
	char out[8192];
	size_t n = 0;
	int status = 0;

	snprintf(g_child_ep, sizeof g_child_ep, "inet:tcp:127.0.0.1@%d", free_port());
	if (pipe(pfd) != 0) {
		perror("pipe");
		exit(2);
	}
	fflush(NULL);
	pid = fork();
	if (pid == 0) {
		close(pfd[0]);
		dup2(pfd[1], STDERR_FILENO);
		close(pfd[1]);
		child_setup();
		fn();
		_exit(0); /* should not get here */
	}
	close(pfd[1]);
	for (;;) {
		ssize_t k = read(pfd[0], out + n, sizeof out - 1 - n);

		if (k <= 0)
			break;
		n += (size_t)k;
		if (n == sizeof out - 1)
			n = 0; /* keep the tail */
	}
	out[n] = '\0';
	close(pfd[0]);
	waitpid(pid, &status, 0);
	if (!(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT))
		fprintf(stderr, "%s: the child said:\n%s\n", name,
			n > 2000 ? out + n - 2000 : out);
	CHECKF(WIFSIGNALED(status) && WTERMSIG(status) == SIGABRT,
	       "%s: the stand-in aborts like Motr's M0_ASSERT (status 0x%x)", name, status);
	CHECKF(strstr(out, "Assertion failed") != NULL, "%s: an assertion message is printed",
	       name);
	for (int i = 0; wants[i] != NULL; i++)
		CHECKF(strstr(out, wants[i]) != NULL, "%s: the output says '%s'", name, wants[i]);
}

static void test_aborts(void)
{
	section("assertions (forked children)");
	run_abort_child("hm_tag != 0", child_tag_nonzero, NULL);
	run_abort_child("nr > 1024", child_nr_too_big, NULL);
	run_abort_child("keepalive type", child_bad_type, NULL);
	run_abort_child("unknown link pointer", child_bogus_link, "hl is a link of this interface");
	run_abort_child("send on a disconnected link", child_dead_link,
			"the link is not disconnected");
	run_abort_child("send after disconnect()", child_send_after_disconnect, NULL);
	run_abort_child("fini after the init thread was adopted", child_adopt_init_thread,
			"sys->sy_total == 0 in m0_addb2_sys_fini()");
	run_abort_child("fini with an adopted thread not shunned", child_adopted_not_shunned,
			"sys->sy_total == 0 in m0_addb2_sys_fini()");
	run_abort_child("adopt with a descriptor not zeroed", child_adopt_nonzero,
			"M0_IS0(thread) in m0_thread_adopt()");
	run_abort_child_all("a 4097th process noted on the self link", child_notes_4097,
			    (const char *const[]){ "4096 processes noted",
						   "Currently we don't support more than 4096 "
						   "processes connected to a single "
						   "m0_halon_interface.", NULL });
	run_abort_child_all("stop after HA's own process was noted FAILED", child_own_failed_stop,
			    (const char *const[]){ "m0_ha_process_failed: disconnecting local link",
						   "self link dropped", OWN_FAILED_ASSERT, NULL });
	run_abort_child_all("send on the self link after own FAILED", child_own_failed_send,
			    (const char *const[]){ "m0_ha_process_failed: disconnecting local link",
						   OWN_FAILED_ASSERT, NULL });
	run_abort_child_all("delivered() twice", child_delivered_twice,
			    (const char *const[]){ "delivered once",
						   "lq->hlq_tags.hlt_delivered <= msg->hm_tag in "
						   "m0_ha_lq_mark_delivered()", NULL });
	run_abort_child("delivered() of a message msg_received did not give",
			child_delivered_not_given, "m0_ha_lq_mark_delivered()");
	run_abort_child("delivered() on another link", child_delivered_other_link,
			"m0_ha_lq_mark_delivered()");
	run_abort_child("delivered() after the link is gone", child_delivered_after_drop,
			"msg != NULL in m0_ha_lq_mark_delivered()");
	run_abort_child("rpc_endpoint of an unknown link", child_endpoint_unknown_link,
			"hl is a link of this interface");
	run_abort_child("rpc_endpoint with buf_len 0", child_endpoint_len_0, "buf_len > 0");
	run_abort_child("rpc_endpoint on a dead link", child_endpoint_dead_link,
			"the link is not disconnected");
	/* a small graveyard: 64 dead links are kept, the link dies 40 links before the send */
	setenv("HAX_STANDIN_LINK_GRAVEYARD", "64", 1);
	run_abort_child("send on a link dead 40 links ago", child_dead_link_graveyard,
			"the link is not disconnected");
	unsetenv("HAX_STANDIN_LINK_GRAVEYARD");
}

/* ------------------------------------------------------------------ interface tests */

struct replier_arg {
	bool start_returned;
	bool returned_before_reply;
	bool ok;
};

static struct replier_arg g_rep;

/* Answers the self entrypoint request from another thread: first -EAGAIN, then 0. */
static void *replier_main(void *arg)
{
	struct replier_arg *ra = arg;
	int i = ev_wait(0, EV_EPREQ, NULL, 0, T(10000));
	struct ev e;

	if (i < 0)
		return NULL;
	e = ev_get(i);
	sleep_ms(200);
	ra->returned_before_reply = flag(&ra->start_returned);
	reply(e.req, -EAGAIN);
	i = ev_wait(i + 1, EV_EPREQ, NULL, 0, T(10000));
	if (i < 0)
		return NULL;
	e = ev_get(i);
	sleep_ms(50);
	ra->returned_before_reply |= flag(&ra->start_returned);
	reply(e.req, 0);
	ra->ok = true;
	return NULL;
}

static void check_self_event(int i, uint64_t tag, bool process, uint64_t event, uint64_t type,
			     const struct m0_fid *svc, struct m0_ha_link *self)
{
	struct ev e;

	if (!CHECKF(i >= 0, "own event tag %" PRIu64 " arrives", tag))
		return;
	e = ev_get(i);
	CHECKF(e.hl == self && e.tag == tag, "own event tag %" PRIu64 " on the self link", tag);
	if (process) {
		CHECKF(e.type == M0_HA_MSG_EVENT_PROCESS && fid_eq(&e.fid, &g_proc) &&
			       e.src_proc.f_container == 0 && e.src_proc.f_key == 0 && e.a == event &&
			       e.b == type && e.c == (uint64_t)getpid(),
		       "tag %" PRIu64 ": process event %" PRIu64 " (got type %" PRIu64 " event %" PRIu64
		       ")", tag, event, e.type, e.a);
	} else {
		CHECKF(e.type == M0_HA_MSG_EVENT_SERVICE && fid_eq(&e.fid, svc) &&
			       fid_eq(&e.src_proc, &g_proc) && e.a == event && e.b == type &&
			       e.c == (uint64_t)getpid(),
		       "tag %" PRIu64 ": service event %" PRIu64 " type %" PRIu64, tag, event, type);
	}
}

static void *adopt_shun_thread(void *arg)
{
	int *rc = arg;

	for (int i = 0; i < 2; i++) {
		struct m0_thread th;

		memset(&th, 0, sizeof th);
		*rc = m0_halon_interface_thread_adopt(g_hi, &th);
		m0_halon_interface_thread_shun();
		if (*rc != 0)
			break;
	}
	return NULL;
}

static void test_init(void)
{
	struct m0_halon_interface *hi2 = NULL;

	section("init: node UUID parsed as Motr does");
	{
		static const char *good[] = {
			NULL, /* the nil UUID */
			"01234567-89ab-CDEF-0123-456789abcdef",
			"0123456789abcdef0123456789ABCDEF",
			"01234567-89ab-cdef-0123-456789abcdefXYZ", /* Motr keeps 36 characters */
		};
		static const char *bad[] = {
			"node-1", "", "01234567-89ab-cdef-0123-456789abcdeg",
			"0123456789abcdef0123456789abcdef0", "01234567-89ab-cdef-0123456789abcdef",
			"0123456789abcdef0123456789abcde", " 1234567-89ab-cdef-0123-456789abcdef",
		};

		for (size_t i = 0; i < sizeof good / sizeof good[0]; i++) {
			CHECKF(m0_halon_interface_init(&g_hi, "hax-standin", "", NULL, good[i]) == 0,
			       "node_uuid '%s' accepted", good[i] == NULL ? "(null)" : good[i]);
			m0_halon_interface_fini(g_hi);
		}
		for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
			g_hi = NULL;
			CHECKF(m0_halon_interface_init(&g_hi, "hax-standin", "", NULL, bad[i]) ==
				       -EINVAL && g_hi == NULL,
			       "node_uuid '%s' refused", bad[i]);
		}
		/* NULL keeps the last string given (Motr's static buffer): still refused */
		CHECK(m0_halon_interface_init(&g_hi, "hax-standin", "", NULL, NULL) == -EINVAL);
	}

	section("init");
	CHECK(m0_halon_interface_init(&g_hi, "some-rev", "--opts", "", NODE_UUID) ==
	      -EINVAL);
	CHECK(m0_halon_interface_init(&g_hi, "some-rev", "", NULL, NODE_UUID) == -EINVAL);
	CHECK(m0_halon_interface_init(&g_hi, "hax-standin", "", NULL, NODE_UUID) == 0);
	CHECK(m0_halon_interface_init(&hi2, "hax-standin", "", "disable-compatibility-check",
				      NODE_UUID) == -EEXIST);
	/* another thread adopted and shunned (twice), as hax's threads do: fini is fine */
	{
		pthread_t t;
		int rc = -1;

		pthread_create(&t, NULL, adopt_shun_thread, &rc);
		pthread_join(t, NULL);
		CHECK(rc == 0);
	}
	m0_halon_interface_thread_shun(); /* never adopted: nothing to give back */
	m0_halon_interface_stop(g_hi); /* not started: prints, returns */
	m0_halon_interface_fini(g_hi);
	CHECK(m0_halon_interface_init(&g_hi, "x", "y", "log-link,disable-compatibility-check",
				      NODE_UUID) == 0);
	m0_halon_interface_fini(g_hi);
	g_hi = NULL;
}

/* A process that sends a message as soon as its EP_REP arrives. */
static void *eager_process(void *arg)
{
	struct client *c = arg;
	struct m0_ha_msg *m = malloc(sizeof *m);
	struct frame f;

	if (client_expect(c, WIRE_EP_REP, &f, T(5000)) == 1) {
		mk_process_event(m, &g_proc, M0_CONF_HA_PROCESS_STARTING, 1);
		c_msg(c, 2, m);
	}
	frame_free(&f);
	free(m);
	return NULL;
}

static void *stop_thread(void *arg)
{
	(void)arg;
	tls_stopper = true;
	m0_halon_interface_stop(g_hi);
	return NULL;
}

/* The big scenario: one interface, several simulated processes. */
static void test_interface(void)
{
	char ep[64];
	char buf[300];
	int port = free_port();
	int busy_fd;
	pthread_t rep;
	struct m0_ha_link *self = NULL;
	struct m0_ha_link *hl_a = NULL, *hl_b = NULL, *hl_c = NULL, *hl_d1 = NULL, *hl_d2 = NULL;
	struct m0_ha_link *hl_e = NULL, *hl_f = NULL;
	struct client *ca, *cb, *cc, *cd1, *cd2, *ce, *cf;
	struct m0_ha_msg *m = malloc(sizeof *m);
	const struct m0_fid fa = { 0x7200000000000048ULL, 1 };
	const struct m0_fid fb = { 0x7200000000000049ULL, 1 };
	const struct m0_fid fc = { 0x720000000000004aULL, 1 };
	const struct m0_fid fd = { 0x720000000000004bULL, 1 };
	const struct m0_fid fe = { 0x720000000000004cULL, 1 };
	const struct m0_fid ff = { 0x720000000000004dULL, 1 };
	struct frame f;
	int i, j, k, from;

	section("start");
	setenv("HAX_STANDIN_RPC_TIMEOUT_MS", "600", 1);
	CHECK(m0_halon_interface_init(&g_hi, "x", "y", "disable-compatibility-check",
				      NODE_UUID) == 0);
	snprintf(ep, sizeof ep, "inet:tcp:127.0.0.1@%d", port);
	CHECK(m0_halon_interface_start(g_hi, ep, NULL, &g_ha, &g_rm, cb_entrypoint, cb_received,
				       cb_delivered, cb_not_delivered, cb_connected, cb_reused,
				       cb_absent, cb_disconnecting, cb_disconnected) == -EINVAL);
	CHECK(m0_halon_interface_start(g_hi, ep, &g_proc, NULL, &g_rm, cb_entrypoint, cb_received,
				       cb_delivered, cb_not_delivered, cb_connected, cb_reused,
				       cb_absent, cb_disconnecting, cb_disconnected) == -EINVAL);
	CHECK(start_at("inet:tcp:127.0.0.2@5000", &g_proc) == -EINVAL);
	CHECK(start_at("tcp:127.0.0.1@5000", &g_proc) == -EINVAL);
	CHECK(start_at("inet:tcp:127.0.0.1@", &g_proc) == -EINVAL);
	CHECK(start_at("inet:tcp:127.0.0.1@70000", &g_proc) == -EINVAL);
	CHECK(start_at("inet:tcp:127.0.0.1@12a", &g_proc) == -EINVAL);
	CHECK(start_at("inet:tcp:127.0.0.1@0", &g_proc) == -EINVAL);
	CHECK(start_at(NULL, &g_proc) == -EINVAL);
	{
		struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };

		sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		busy_fd = socket(AF_INET, SOCK_STREAM, 0);
		CHECK(bind(busy_fd, (struct sockaddr *)&sa, sizeof sa) == 0 && listen(busy_fd, 1) == 0);
		CHECK(start_at(ep, &g_proc) == -EADDRINUSE);
		close(busy_fd);
	}
	CHECK(ev_now() == 0);

	/* start blocks until the self request is answered (first -EAGAIN, then 0) */
	g_rep = (struct replier_arg){ 0 };
	pthread_create(&rep, NULL, replier_main, &g_rep);
	CHECK(start_at(ep, &g_proc) == 0);
	set_flag(&g_rep.start_returned, true);
	pthread_join(rep, NULL);
	CHECK(g_rep.ok);
	CHECK(!g_rep.returned_before_reply);
	i = ev_wait(0, EV_EPREQ, NULL, 0, 0);
	if (CHECK(i == 0)) {
		struct ev e = ev_get(0);

		CHECK(e.req.u_hi == 0 && e.req.u_lo == 1);
		CHECK(strcmp(e.ep, ep) == 0);
		CHECK(fid_eq(&e.proc, &g_proc));
		CHECK(e.pid == (uint64_t)getpid());
		CHECK(e.first);
		CHECK(e.git[0] != '\0');
		CHECK(!e.on_main);
	}
	/* As observed with real Motr: the EAGAIN reply already made the self link
	 * (link_connected inside it); the request made again is not first and reuses it. */
	i = ev_wait(1, EV_EPREQ, NULL, 0, 0);
	CHECK(i >= 0 && ev_get(i).req.u_lo == 2 && !ev_get(i).first);
	CHECK(ev_count(0, EV_CONN, NULL, 0) == 1);
	i = ev_wait(0, EV_CONN, NULL, 0, 0);
	if (CHECK(i >= 0)) {
		struct ev e = ev_get(i);

		self = e.hl;
		CHECK(e.req.u_lo == 1);
		CHECK(e.in_reply && !e.on_main);
		CHECK(strcmp(e.ep, ep) == 0);
	}
	i = ev_wait(0, EV_REUSED, NULL, 0, 0);
	CHECK(i >= 0 && ev_get(i).req.u_lo == 2 && ev_get(i).hl == self);
	for (int t = 0; t < 6; t++) {
		static const int proc[] = { 1, 0, 0, 0, 0, 1 };
		static const uint64_t evn[] = { 0, 0, 1, 0, 1, 1 };
		static const uint64_t typ[] = { 3, 6, 6, 4, 4, 3 };
		const struct m0_fid *svc = t < 3 ? &g_ha : &g_rm;

		i = ev_wait(0, EV_RECV, self, (uint64_t)(2 + 2 * t), T(5000));
		check_self_event(i, (uint64_t)(2 + 2 * t), proc[t], evn[t], typ[t], svc, self);
	}
	CHECK(ev_count(0, EV_RECV, NULL, 0) == 6);
	/* in order */
	{
		uint64_t last = 0;
		bool ok = true;

		for (i = 0; i < ev_now(); i++) {
			struct ev e = ev_get(i);

			if (e.k == EV_RECV) {
				ok &= e.tag > last;
				last = e.tag;
			}
		}
		CHECK(ok);
	}
	m0_ha_link_rpc_endpoint(self, buf, sizeof buf);
	CHECK(strcmp(buf, ep) == 0);
	CHECK(start_at(ep, &g_proc) == -EALREADY);

	section("remote process: entrypoint, connected, reused");
	ca = client_new(port, 0);
	from = ev_now();
	{
		char longep[256];

		memset(longep, 'a', 255);
		memcpy(longep, "inet:tcp:127.0.0.1@", 19);
		longep[255] = '\0';
		c_ep_req(ca, 7, true, 29534, &fa, longep);
		i = ev_wait_ep(from, &fa, T(5000));
		if (CHECK(i >= 0)) {
			struct ev e = ev_get(i);

			CHECK(e.req.u_hi == 0 && e.req.u_lo == 3);
			CHECK(strcmp(e.ep, longep) == 0);
			CHECK(e.pid == 29534 && e.first && strcmp(e.git, "test-git-rev") == 0);
			CHECK(!e.on_main && !e.in_reply);
			reply(e.req, 0);
			j = ev_wait(from, EV_CONN, NULL, 0, 0);
			if (CHECK(j >= 0)) {
				struct ev c = ev_get(j);

				hl_a = c.hl;
				CHECK(c.req.u_lo == 3 && c.on_main && c.in_reply);
				CHECK(hl_a != self);
			}
			m0_ha_link_rpc_endpoint(hl_a, buf, sizeof buf);
			CHECK(strcmp(buf, longep) == 0);
			/* at most buf_len - 1 bytes, then a NUL */
			memset(buf, 'X', sizeof buf);
			m0_ha_link_rpc_endpoint(hl_a, buf, 64);
			CHECK(strlen(buf) == 63 && strncmp(buf, longep, 63) == 0);
			m0_ha_link_rpc_endpoint(hl_a, buf, 1);
			CHECK(buf[0] == '\0');
		}
	}
	if (CHECK(client_expect(ca, WIRE_EP_REP, &f, T(5000)) == 1)) {
		CHECK(f.rep.seq == 7 && f.rep.rc == 0 && f.rep.link == WIRE_LINK_CONNECTED);
		CHECK(f.rep.confd_nr == 2 && f.rep.confd_fids[0].f_key == 9 &&
		      strcmp(f.rep.confd_eps[0], "inet:tcp:127.0.0.1@22001") == 0 &&
		      strcmp(f.rep.confd_eps[1], "inet:tcp:127.0.0.1@22002") == 0);
		CHECK(f.rep.quorum == 2 && fid_eq(&f.rep.rm_fid, &g_rm_fid) &&
		      strcmp(f.rep.rm_ep, g_rm_ep) == 0);
		frame_free(&f);
	}
	from = ev_now();
	mk_process_event(m, &fa, M0_CONF_HA_PROCESS_STARTING, 29534);
	c_msg(ca, 2, m);
	i = ev_wait(from, EV_RECV, hl_a, 2, T(5000));
	if (CHECK(i >= 0)) {
		struct ev e = ev_get(i);

		CHECK(e.type == 7 && fid_eq(&e.fid, &fa) && e.a == 0 && e.b == 3 && e.c == 29534);
		CHECK(!e.on_main);
	}
	CHECK(client_expect(ca, WIRE_HA_ACK, &f, T(5000)) == 1 && f.tag == 2);
	/* not first, live link -> reused */
	from = ev_now();
	c_ep_req(ca, 8, false, 29534, &fa, "inet:tcp:127.0.0.1@22002");
	i = ev_wait_ep(from, &fa, T(5000));
	if (CHECK(i >= 0)) {
		struct ev e = ev_get(i);

		CHECK(!e.first && e.req.u_lo == 4);
		reply(e.req, 0);
		j = ev_wait(from, EV_REUSED, NULL, 0, 0);
		CHECK(j >= 0 && ev_get(j).hl == hl_a && ev_get(j).req.u_lo == 4 &&
		      ev_get(j).in_reply);
		m0_ha_link_rpc_endpoint(hl_a, buf, sizeof buf);
		CHECK(strcmp(buf, "inet:tcp:127.0.0.1@22002") == 0);
	}
	CHECK(client_expect(ca, WIRE_EP_REP, &f, T(5000)) == 1 && f.rep.seq == 8 &&
	      f.rep.link == WIRE_LINK_REUSED && f.rep.rc == 0);
	frame_free(&f);
	/* error reply to a non-first request: decided all the same (reused); then a second reply
	 * and an unknown id are ignored */
	from = ev_now();
	c_ep_req(ca, 9, false, 29534, &fa, "inet:tcp:127.0.0.1@22002");
	i = ev_wait_ep(from, &fa, T(5000));
	if (CHECK(i >= 0)) {
		struct ev e = ev_get(i);

		reply(e.req, -EAGAIN);
		CHECK(client_expect(ca, WIRE_EP_REP, &f, T(5000)) == 1 && f.rep.seq == 9 &&
		      f.rep.rc == -EAGAIN && f.rep.link == WIRE_LINK_REUSED);
		frame_free(&f);
		j = ev_wait(from, EV_REUSED, NULL, 0, 0);
		CHECK(j >= 0 && ev_get(j).hl == hl_a && ev_get(j).in_reply);
		reply(e.req, 0);
		reply((struct m0_uint128){ 0, 9999 }, 0);
		reply((struct m0_uint128){ 1, 1 }, 0);
		CHECK(client_recv(ca, &f, T(300)) == 0);
		CHECK(ev_count(from, EV_REUSED, NULL, 0) == 1 && ev_count(from, EV_CONN, NULL, 0) == 0 &&
		      ev_count(from, EV_ABSENT, NULL, 0) == 0);
	}

	section("entrypoint: HA cookies; decisions for restarted HAs and EAGAIN");
	{
		const struct m0_fid fh = { 0x7200000000000051ULL, 1 };
		struct client *ch = client_new(port, 0);
		uint64_t cookie = ca->cookie;
		struct m0_ha_link *hh = NULL;

		CHECK(cookie != 0);
		/* first request answered EAGAIN: the link is made anyway (observed with real
		 * Motr), the same cookie; the request made again is not first and reuses it */
		{
			const struct m0_fid fe = { 0x7200000000000053ULL, 1 };
			struct client *ce = client_new(port, 0);
			struct m0_ha_link *he = NULL;

			from = ev_now();
			c_ep_req(ce, 1, true, 1, &fe, "inet:tcp:127.0.0.1@22015");
			i = ev_wait_ep(from, &fe, T(5000));
			if (CHECK(i >= 0))
				reply(ev_get(i).req, -EAGAIN);
			CHECK(client_expect(ce, WIRE_EP_REP, &f, T(5000)) == 1 &&
			      f.rep.rc == -EAGAIN && f.rep.link == WIRE_LINK_CONNECTED &&
			      f.rep.cookie_actual == cookie);
			frame_free(&f);
			j = ev_wait(from, EV_CONN, NULL, 0, 0);
			if (CHECK(j >= 0 && ev_get(j).in_reply))
				he = ev_get(j).hl;
			from = ev_now();
			ce->cookie = cookie;
			c_ep_req(ce, 2, false, 1, &fe, "inet:tcp:127.0.0.1@22015");
			i = ev_wait_ep(from, &fe, T(5000));
			if (CHECK(i >= 0))
				reply(ev_get(i).req, 0);
			CHECK(client_expect(ce, WIRE_EP_REP, &f, T(5000)) == 1 && f.rep.rc == 0 &&
			      f.rep.link == WIRE_LINK_REUSED);
			frame_free(&f);
			j = ev_wait(from, EV_REUSED, NULL, 0, 0);
			CHECK(j >= 0 && ev_get(j).hl == he);
			client_free(ce);
		}
		/* a process of a restarted HA (another cookie), no link here: a new link, even with
		 * an EAGAIN reply (Motr's "reconnect case") */
		from = ev_now();
		ch->cookie = cookie ^ 0x5a5a;
		c_ep_req(ch, 2, false, 1, &fh, "inet:tcp:127.0.0.1@22013");
		i = ev_wait_ep(from, &fh, T(5000));
		if (CHECK(i >= 0 && !ev_get(i).first))
			reply(ev_get(i).req, -EAGAIN);
		j = ev_wait(from, EV_CONN, NULL, 0, 0);
		if (CHECK(j >= 0 && ev_get(j).in_reply))
			hh = ev_get(j).hl;
		CHECK(client_expect(ch, WIRE_EP_REP, &f, T(5000)) == 1 && f.rep.rc == -EAGAIN &&
		      f.rep.link == WIRE_LINK_CONNECTED && f.rep.cookie_actual == cookie);
		frame_free(&f);
		/* the link works: a message is received on it */
		mk_process_event(m, &fh, M0_CONF_HA_PROCESS_STARTING, 1);
		c_msg(ch, 2, m);
		CHECK(ev_wait(from, EV_RECV, hh, 2, T(5000)) >= 0);
		/* no cookie at all (0) is another cookie too */
		client_free(ch);
		ch = client_new(port, 0);
		from = ev_now();
		c_ep_req(ch, 1, false, 1, &(struct m0_fid){ 0x7200000000000052ULL, 1 },
			 "inet:tcp:127.0.0.1@22014");
		i = ev_wait(from, EV_EPREQ, NULL, 0, T(5000));
		if (CHECK(i >= 0))
			reply(ev_get(i).req, 0);
		CHECK(client_expect(ch, WIRE_EP_REP, &f, T(5000)) == 1 && f.rep.rc == 0 &&
		      f.rep.link == WIRE_LINK_CONNECTED);
		frame_free(&f);
		CHECK(ev_count(from, EV_CONN, NULL, 0) == 1);
		client_free(ch);
	}

	section("a new link's messages wait until link_connected has returned");
	{
		const struct m0_fid fg = { 0x720000000000004eULL, 1 };
		struct client *cg = client_new(port, 0);
		pthread_t th;

		from = ev_now();
		c_ep_req(cg, 1, true, 1, &fg, "inet:tcp:127.0.0.1@22011");
		i = ev_wait_ep(from, &fg, T(5000));
		pthread_create(&th, NULL, eager_process, cg);
		set_flag(&g_slow_connected, true);
		if (CHECK(i >= 0))
			reply(ev_get(i).req, 0);
		set_flag(&g_slow_connected, false);
		pthread_join(th, NULL);
		j = ev_wait(from, EV_CONN, NULL, 0, 0);
		k = ev_wait(from, EV_RECV, NULL, 2, T(5000));
		CHECK(j >= 0 && k > j && ev_get(k).hl == ev_get(j).hl);
		CHECK(k >= 0 && ev_get(k).at_ms - ev_get(j).at_ms >= 250);
		client_free(cg);
	}

	section("HA sends: odd tags per link, delivered in order");
	from = ev_now();
	mk_nvec(m, M0_HA_NVEC_SET, 0, false, 1, &g_proc, M0_NC_ONLINE);
	CHECK(tsend(self, m) == 1);
	CHECK(tsend(hl_a, m) == 1);
	CHECK(tsend(hl_a, m) == 3);
	CHECK(tsend(hl_a, m) == 5);
	CHECK(ev_wait(from, EV_DELIV, self, 1, T(5000)) >= 0);
	for (uint64_t t = 1; t <= 5; t += 2) {
		if (CHECKF(client_expect(ca, WIRE_HA_MSG, &f, T(5000)) == 1 && f.tag == t,
			   "process gets HA tag %" PRIu64, t)) {
			CHECK(f.msg->hm_data.hed_type == M0_HA_MSG_NVEC &&
			      f.msg->hm_data.u.hed_nvec.hmnv_nr == 1 &&
			      fid_eq(&f.msg->hm_data.u.hed_nvec.hmnv_arr.hmna_arr[0].no_id, &g_proc));
		}
		frame_free(&f);
	}
	sleep_ms(100);
	CHECK(ev_count(from, EV_DELIV, hl_a, 0) == 0);
	c_ack(ca, 3); /* confirms 1 and 3, in order */
	i = ev_wait(from, EV_DELIV, hl_a, 1, T(5000));
	j = ev_wait(from, EV_DELIV, hl_a, 3, T(5000));
	CHECK(i >= 0 && j > i);
	c_ack(ca, 3);  /* duplicate */
	c_ack(ca, 99); /* never sent */
	c_ack(ca, 4);  /* even */
	sleep_ms(200);
	CHECK(ev_count(from, EV_DELIV, hl_a, 0) == 2);

	section("process B: GET answered inside msg_received; ordered, serial delivery");
	set_flag(&g_auto_reply, true);
	cb = process_connect(port, &fb, "inet:tcp:127.0.0.1@22003", &hl_b, 0);
	set_flag(&g_answer_get, true);
	from = ev_now();
	{
		const struct m0_fid notes[4] = { g_proc, g_rm, g_proc, g_rm };

		mk_nvec(m, M0_HA_NVEC_GET, 77, false, 2, notes, 0);
	}
	c_msg(cb, 2, m);
	if (CHECK(client_expect(cb, WIRE_HA_MSG, &f, T(5000)) == 1)) {
		CHECK(f.tag == 1 && f.msg->hm_data.u.hed_nvec.hmnv_type == M0_HA_NVEC_SET &&
		      f.msg->hm_data.u.hed_nvec.hmnv_id_of_get == 77 &&
		      f.msg->hm_data.u.hed_nvec.hmnv_nr == 2 &&
		      f.msg->hm_data.u.hed_nvec.hmnv_arr.hmna_arr[1].no_state == M0_NC_ONLINE);
		frame_free(&f);
	}
	CHECK(client_expect(cb, WIRE_HA_ACK, &f, T(5000)) == 1 && f.tag == 2);
	c_ack(cb, 1);
	CHECK(ev_wait(from, EV_DELIV, hl_b, 1, T(5000)) >= 0);
	set_flag(&g_answer_get, false);
	set_flag(&g_slow_recv, true);
	from = ev_now();
	for (uint64_t t = 4; t <= 202; t += 2) {
		mk_process_event(m, &fb, M0_CONF_HA_PROCESS_STARTED, t);
		c_msg(cb, t, m);
	}
	CHECK(ev_wait(from, EV_RECV, hl_b, 202, T(20000)) >= 0);
	{
		uint64_t want = 4;
		bool ok = true;

		for (i = from; i < ev_now(); i++) {
			struct ev e = ev_get(i);

			if (e.k == EV_RECV && e.hl == hl_b) {
				ok &= e.tag == want && e.c == want;
				want += 2;
			}
		}
		CHECKF(ok && want == 204, "100 messages received in order (next %" PRIu64 ")", want);
	}
	/* ACKs carry the delivered mark: increasing, up to 202 (several at once coalesce) */
	{
		uint64_t last = 2;
		int acks = 0;

		while (last < 202) {
			if (!CHECKF(client_expect(cb, WIRE_HA_ACK, &f, T(5000)) == 1 &&
					    f.tag > last && f.tag % 2 == 0 && f.tag <= 202,
				    "ACK after %" PRIu64 " (got %" PRIu64 ")", last, f.tag))
				break;
			last = f.tag;
			acks++;
		}
		CHECK(last == 202 && acks >= 1 && acks <= 100);
	}
	set_flag(&g_slow_recv, false);

	section("FAILED note on the self link drops a process's link");
	from = ev_now();
	{
		const struct m0_fid svc = { 0x7300000000000001ULL, 0x99 };

		self_note(self, &svc, M0_NC_FAILED, false); /* not a process: ignored */
	}
	self_note(self, &fa, M0_NC_ONLINE, false);  /* first note for A: recorded only */
	self_note(self, &fb, M0_NC_FAILED, false);  /* first note for B: ignored */
	self_note(self, &fb, M0_NC_FAILED, true);   /* same state, ignore_same_state */
	sleep_ms(300);
	CHECK(ev_count(from, EV_DISCING, NULL, 0) == 0);
	CHECK(ev_count(from, EV_DELIV, self, 0) == 4);
	from = ev_now();
	self_note(self, &fa, M0_NC_FAILED, false);
	i = ev_wait(from, EV_DISCING, hl_a, 0, T(2000));
	j = ev_wait(from, EV_NOTDELIV, hl_a, 5, T(2000));
	k = ev_wait(from, EV_DISC, hl_a, 0, T(2000));
	CHECK(i >= 0 && j > i && k > j);
	CHECK(ev_count(from, EV_NOTDELIV, hl_a, 0) == 1);
	CHECK(i >= 0 && ev_get(i).at_ms - ev_get(from).at_ms < (uint64_t)T(500));
	CHECK(client_expect(ca, WIRE_DROP, &f, T(5000)) == 1);
	CHECK(ev_count(from, EV_DISCING, hl_b, 0) == 0);
	/* B was not dropped: still serving */
	mk_process_event(m, &fb, M0_CONF_HA_PROCESS_STARTED, 1);
	c_msg(cb, 204, m);
	CHECK(client_expect(cb, WIRE_HA_ACK, &f, T(5000)) == 1 && f.tag == 204);
	/* A asks again (not first): absent */
	set_flag(&g_auto_reply, true);
	from = ev_now();
	c_ep_req(ca, 10, false, 29534, &fa, "inet:tcp:127.0.0.1@22002");
	i = ev_wait(from, EV_ABSENT, NULL, 0, T(5000));
	CHECK(i >= 0 && ev_get(i).in_reply);
	CHECK(client_expect(ca, WIRE_EP_REP, &f, T(5000)) == 1 && f.rep.seq == 10 &&
	      f.rep.rc == 0 && f.rep.link == WIRE_LINK_ABSENT);
	frame_free(&f);
	/* MSG after the link was dropped: dropped, not delivered, connection kept */
	mk_process_event(m, &fa, M0_CONF_HA_PROCESS_STARTED, 1);
	c_msg(ca, 4, m);
	sleep_ms(100);
	CHECK(ev_count(from, EV_RECV, hl_a, 0) == 0);

	section("notes: FAILED twice keeps a re-created link; TRANSIENT then FAILED drops it");
	{
		const struct m0_fid fr = { 0x720000000000004fULL, 1 };
		struct m0_ha_link *l1 = NULL, *l2 = NULL;
		struct client *c1, *c2;

		set_flag(&g_auto_reply, true);
		c1 = process_connect(port, &fr, "inet:tcp:127.0.0.1@22012", &l1, 0);
		from = ev_now();
		self_note(self, &fr, M0_NC_ONLINE, true);  /* first note: recorded */
		self_note(self, &fr, M0_NC_FAILED, true);  /* drops l1 */
		CHECK(ev_wait(from, EV_DISC, l1, 0, T(5000)) >= 0);
		CHECK(client_expect(c1, WIRE_DROP, &f, T(5000)) == 1);
		/* the process restarts: a new link while HA still holds it FAILED */
		c2 = process_connect(port, &fr, "inet:tcp:127.0.0.1@22012", &l2, 0);
		CHECK(l2 != NULL && l2 != l1);
		from = ev_now();
		self_note(self, &fr, M0_NC_FAILED, true);  /* same state: ignored */
		self_note(self, &fr, M0_NC_FAILED, true);
		sleep_ms(300);
		CHECK(ev_count(from, EV_DISCING, l2, 0) == 0);
		self_note(self, &fr, M0_NC_TRANSIENT, true);
		sleep_ms(100);
		CHECK(ev_count(from, EV_DISCING, l2, 0) == 0);
		self_note(self, &fr, M0_NC_FAILED, true);  /* a change: drops l2 */
		CHECK(ev_wait(from, EV_DISC, l2, 0, T(5000)) >= 0);
		CHECK(client_expect(c2, WIRE_DROP, &f, T(5000)) == 1);
		/* without ignore_same_state, FAILED again drops a new link at once */
		client_free(c2);
		c2 = process_connect(port, &fr, "inet:tcp:127.0.0.1@22012", &l2, 0);
		from = ev_now();
		self_note(self, &fr, M0_NC_FAILED, false);
		CHECK(ev_wait(from, EV_DISC, l2, 0, T(5000)) >= 0);
		client_free(c1);
		client_free(c2);
	}

	section("peer gone: the link stays; dropping it waits the RPC timeout");
	cc = process_connect(port, &fc, "inet:tcp:127.0.0.1@22004", &hl_c, 0);
	from = ev_now();
	CHECK(tsend(hl_c, m) == 1);
	CHECK(client_expect(cc, WIRE_HA_MSG, &f, T(5000)) == 1 && f.tag == 1);
	frame_free(&f);
	client_close(cc);
	sleep_ms(300);
	CHECK(tsend(hl_c, m) == 3);
	CHECK(ev_count(from, EV_DISCING, hl_c, 0) == 0);
	self_note(self, &fc, M0_NC_ONLINE, false);
	from = ev_now();
	self_note(self, &fc, M0_NC_FAILED, false);
	i = ev_wait(from, EV_DISCING, hl_c, 0, T(2000));
	j = ev_wait(from, EV_NOTDELIV, hl_c, 1, T(5000));
	k = ev_wait(from, EV_NOTDELIV, hl_c, 3, T(5000));
	CHECK(ev_wait(from, EV_DISC, hl_c, 0, T(5000)) > k);
	if (CHECK(i >= 0 && j > i && k > j)) {
		uint64_t waited = ev_get(j).at_ms - ev_get(i).at_ms;

		CHECKF(waited >= 550, "not-delivered after the RPC timeout (waited %" PRIu64 " ms)",
		       waited);
	}

	section("restarted process: a new link, the old one stays");
	cd1 = process_connect(port, &fd, "inet:tcp:127.0.0.1@22005", &hl_d1, 0);
	cd2 = process_connect(port, &fd, "inet:tcp:127.0.0.1@22005", &hl_d2, 0);
	CHECK(hl_d1 != NULL && hl_d2 != NULL && hl_d1 != hl_d2);
	CHECK(tsend(hl_d1, m) == 1);
	CHECK(client_expect(cd1, WIRE_HA_MSG, &f, T(5000)) == 1 && f.tag == 1);
	frame_free(&f);
	from = ev_now();
	c_ep_req(cd2, 2, false, 4242, &fd, "inet:tcp:127.0.0.1@22005");
	i = ev_wait(from, EV_REUSED, NULL, 0, T(5000));
	CHECK(i >= 0 && ev_get(i).hl == hl_d2);
	CHECK(client_expect(cd2, WIRE_EP_REP, &f, T(5000)) == 1 && f.rep.link == WIRE_LINK_REUSED);
	frame_free(&f);

	section("malformed frames close only their connection");
	{
		static const struct {
			const char *name;
			uint8_t bytes[16];
			size_t n;
		} raw[] = {
			{ "length 0", { 0, 0, 0, 0 }, 4 },
			{ "length over 1 MiB", { 1, 0, 0x10, 0, 1 }, 5 },
			{ "unknown kind", { 1, 0, 0, 0, 0x55 }, 5 },
			{ "HA kind from a process", { 1, 0, 0, 0, 0x84 }, 5 },
			{ "truncated EP_REQ", { 3, 0, 0, 0, 1, 7, 0 }, 7 },
			{ "ACK with trailing bytes", { 10, 0, 0, 0, 3, 1, 0, 0, 0, 0, 0, 0, 0, 9 }, 14 },
		};

		for (size_t r = 0; r < sizeof raw / sizeof raw[0]; r++) {
			struct client *x = client_new(port, 0);

			client_write(x, raw[r].bytes, raw[r].n);
			CHECKF(client_wait_closed(x, T(3000)), "%s closes the connection", raw[r].name);
			client_free(x);
		}
	}
	{
		/* a string longer than 4096 */
		struct client *x = client_new(port, 0);

		/* by hand: seq, first, pid, fid, str(4097), str(0) */
		{
			uint32_t len = 1 + 8 + 1 + 8 + 16 + 2 + 4097 + 2;
			uint8_t *p = calloc(1, 4 + len);

			memcpy(p, &len, 4);
			p[4] = WIRE_EP_REQ;
			p[4 + 1 + 8] = 1;
			p[4 + 1 + 8 + 1 + 8 + 16] = 4097 & 0xff;
			p[4 + 1 + 8 + 1 + 8 + 16 + 1] = 4097 >> 8;
			memset(p + 4 + 1 + 8 + 1 + 8 + 16 + 2, 'a', 4097);
			client_write(x, p, 4 + len);
			free(p);
		}
		CHECK(client_wait_closed(x, T(3000)));
		client_free(x);
	}
	{
		/* MSG before any entrypoint reply */
		struct client *x = client_new(port, 0);

		mk_process_event(m, &fd, 0, 1);
		c_msg(x, 2, m);
		CHECK(client_wait_closed(x, T(3000)));
		client_free(x);
	}
	{
		/* bad messages on a linked connection: nr > 1024, type 12, keepalive, odd tag,
		 * non-increasing tag */
		static const char *names[] = { "nr 1025", "type 12", "keepalive", "odd tag",
					       "non-increasing tag" };

		for (int r = 0; r < 5; r++) {
			struct m0_ha_link *hx = NULL;
			struct client *x = process_connect(port, &ff, "inet:tcp:127.0.0.1@22009", &hx, 0);
			struct wire_buf b = { 0 };
			uint64_t tag = 2;

			if (r == 4) {
				mk_process_event(m, &ff, 0, 1);
				c_msg(x, 4, m);
				tag = 4;
			}
			mk_process_event(m, &ff, 0, 1);
			CHECK(wire_enc_msg(&b, WIRE_MSG, tag, m) == 0);
			/* type at body offset 8 + 64 */
			if (r == 0) {
				wire_buf_fini(&b);
				mk_nvec(m, M0_HA_NVEC_SET, 0, false, 1, &ff, 1);
				CHECK(wire_enc_msg(&b, WIRE_MSG, tag, m) == 0);
				b.data[WIRE_HDR + 1 + 8 + 72 + 24] = 0x01;
				b.data[WIRE_HDR + 1 + 8 + 72 + 24 + 1] = 0x04;
			} else if (r == 1 || r == 2) {
				b.data[WIRE_HDR + 1 + 8 + 64] = r == 1 ? 12 : 5;
			} else if (r == 3) {
				wire_msg_patch_tag(b.data, 3);
			}
			client_put(x, &b);
			CHECKF(client_wait_closed(x, T(3000)), "%s closes the connection", names[r]);
			client_free(x);
			if (r == 0)
				hl_f = hx;
		}
		CHECK(hl_f != NULL);
	}
	{
		/* a peer vanishing mid-frame */
		struct client *x = client_new(port, 0);
		uint8_t half[8] = { 100, 0, 0, 0, 1, 2, 3, 4 };

		client_write(x, half, sizeof half);
		client_free(x);
	}
	/* others still served */
	cf = process_connect(port, &ff, "inet:tcp:127.0.0.1@22010", &hl_f, 0);
	mk_process_event(m, &fb, M0_CONF_HA_PROCESS_STARTED, 1);
	c_msg(cb, 206, m);
	CHECK(client_expect(cb, WIRE_HA_ACK, &f, T(5000)) == 1 && f.tag == 206);

	section("a peer that does not read cannot block HA");
	ce = process_connect(port, &fe, "inet:tcp:127.0.0.1@22006", &hl_e, 4096);
	{
		uint64_t worst = 0;
		uint64_t t0 = now_ms();
		int n = 0;
		const struct m0_fid notes[4] = { fe, fb, fc, fd };

		mk_nvec(m, M0_HA_NVEC_SET, 0, false, 1024, notes, M0_NC_ONLINE);
		for (n = 0; n < 800; n++) {
			uint64_t s = now_ms();

			tsend(hl_e, m);
			if (now_ms() - s > worst)
				worst = now_ms() - s;
		}
		CHECKF(worst < (uint64_t)T(500), "each send returns at once (worst %" PRIu64 " ms)",
		       worst);
		fprintf(stderr, "   800 sends of 20 KiB in %" PRIu64 " ms\n", now_ms() - t0);
		CHECK(client_wait_closed(ce, T(10000)));
		CHECK(ev_count(0, EV_DISCING, hl_e, 0) == 0);
	}

	section("stop (from another thread)");
	{
		pthread_t st;
		int before = ev_now();
		struct m0_ha_link *alive[] = { self, hl_b, hl_d1, hl_d2, hl_e, hl_f };

		/* unconfirmed sends at stop: one on B, one on D2 */
		CHECK(tsend(hl_b, m) == 3);
		CHECK(tsend(hl_d2, m) == 1);
		pthread_create(&st, NULL, stop_thread, NULL);
		pthread_join(st, NULL);
		/* own STOP events, tags 14..24 */
		{
			static const int proc[] = { 1, 0, 0, 0, 0, 1 };
			static const uint64_t evn[] = { 2, 2, 3, 2, 3, 3 };
			static const uint64_t typ[] = { 3, 4, 4, 6, 6, 3 };

			for (int t = 0; t < 6; t++) {
				const struct m0_fid *svc = t < 3 ? &g_rm : &g_ha;

				i = ev_wait(before, EV_RECV, self, (uint64_t)(14 + 2 * t), 0);
				check_self_event(i, (uint64_t)(14 + 2 * t), proc[t], evn[t], typ[t], svc,
						 self);
				if (i >= 0)
					CHECK(!ev_get(i).on_stopper && !ev_get(i).on_main);
			}
		}
		i = ev_wait(before, EV_RECV, self, 24, 0);
		j = ev_wait(before, EV_DISCING, self, 0, 0);
		k = ev_wait(before, EV_DISC, self, 0, 0);
		CHECK(i >= 0 && j > i && k > j);
		for (size_t l = 1; l < sizeof alive / sizeof alive[0]; l++) {
			j = ev_wait(before, EV_DISCING, alive[l], 0, 0);
			k = ev_wait(before, EV_DISC, alive[l], 0, 0);
			CHECKF(j > i && k > j, "stop disconnects link %zu", l);
		}
		i = ev_wait(before, EV_NOTDELIV, hl_b, 3, 0);
		CHECK(i >= 0 && i < ev_wait(before, EV_DISC, hl_b, 0, 0));
		CHECK(ev_wait(before, EV_NOTDELIV, hl_d2, 1, 0) >= 0);
		CHECK(ev_count(before, EV_NOTDELIV, hl_e, 0) == 800);
		CHECK(client_expect(cb, WIRE_DROP, &f, T(5000)) == 1);
		CHECK(client_expect(cd2, WIRE_DROP, &f, T(5000)) == 1);
		CHECK(client_wait_closed(cb, T(5000)));
		m0_halon_interface_stop(g_hi); /* twice: harmless */
	}

	section("exactly one delivered / not-delivered per send, in order, never inside send");
	{
		bool ok = true;
		int nlinks = 0;
		struct m0_ha_link *links[32];

		for (int s = 0; s < g_nsent; s++) {
			bool seen = false;

			for (int l = 0; l < nlinks; l++)
				seen |= links[l] == g_sent[s].hl;
			if (!seen && nlinks < 32)
				links[nlinks++] = g_sent[s].hl;
		}
		for (int l = 0; l < nlinks; l++) {
			uint64_t want[SENT_MAX];
			int nw = 0;
			int got = 0;

			for (int s = 0; s < g_nsent; s++) {
				if (g_sent[s].hl == links[l])
					want[nw++] = g_sent[s].tag;
			}
			for (i = 0; i < ev_now(); i++) {
				struct ev e = ev_get(i);

				if (e.hl != links[l] || (e.k != EV_DELIV && e.k != EV_NOTDELIV))
					continue;
				if (got >= nw || e.tag != want[got]) {
					fprintf(stderr, "link %d: confirmation %d is tag %" PRIu64
							", expected %" PRIu64 "\n",
						l, got, e.tag, got < nw ? want[got] : 0);
					ok = false;
				}
				got++;
			}
			if (got != nw) {
				fprintf(stderr, "link %d: %d sends, %d confirmations\n", l, nw, got);
				ok = false;
			}
		}
		CHECK(ok);
		CHECK(nlinks >= 6);
	}
	{
		bool threads_ok = true;
		bool after_disc_ok = true;

		for (i = 0; i < ev_now(); i++) {
			struct ev e = ev_get(i);
			bool link_cb = e.k == EV_CONN || e.k == EV_REUSED || e.k == EV_ABSENT;

			if (e.in_send || (link_cb && !e.in_reply) ||
			    (!link_cb && (e.in_reply || e.on_main || e.on_stopper))) {
				fprintf(stderr, "event %d (%s): in_send %d in_reply %d on_main %d\n", i,
					ev_names[e.k], e.in_send, e.in_reply, e.on_main);
				threads_ok = false;
			}
			if (e.k == EV_DISC) {
				for (j = i + 1; j < ev_now(); j++) {
					if (ev_get(j).hl == e.hl && ev_get(j).k != EV_EPREQ &&
					    ev_get(j).k != EV_ABSENT)
						after_disc_ok = false;
				}
				CHECK(ev_count(0, EV_DISC, e.hl, 0) == 1);
			}
		}
		CHECK(threads_ok);
		CHECK(after_disc_ok);
		CHECK(g_recv_overlap == 0);
	}
	m0_halon_interface_fini(g_hi);
	g_hi = NULL;
	client_free(ca);
	client_free(cb);
	client_free(cc);
	client_free(cd1);
	client_free(cd2);
	client_free(ce);
	client_free(cf);
	free(m);
	unsetenv("HAX_STANDIN_RPC_TIMEOUT_MS");
}

/* Next frame of the client, skipping nothing; kind 0 on timeout or close. */
static uint8_t next_kind(struct client *c, uint64_t *tag, int timeout_ms)
{
	struct frame f;
	uint8_t k = 0;

	if (client_recv(c, &f, timeout_ms) == 1) {
		k = f.kind;
		*tag = f.tag;
	}
	frame_free(&f);
	return k;
}

/*
 * Confirmations as Motr's HA link: the ACK frame carries the contiguous delivered mark; it is
 * written just before the next HA message on the link or after the delay (300 ms here), and
 * never once the link has started disconnecting.
 */
static void test_confirmations(void)
{
	char ep[64];
	int port = free_port();
	const struct m0_fid fp = { 0x7200000000000080ULL, 1 };
	const struct m0_fid fq = { 0x7200000000000081ULL, 1 };
	const struct m0_fid fr = { 0x7200000000000082ULL, 1 };
	struct m0_ha_msg *m = malloc(sizeof *m);
	struct m0_ha_link *self = NULL, *hp = NULL, *hq = NULL, *hr = NULL;
	struct client *cp, *cq, *cr;
	struct deferred d[3];
	uint64_t tag = 0, t0;
	int i, calls;

	section("confirmations: the delivered mark, out of order");
	g_nev = 0;
	g_nsent = 0;
	g_ndeferred = 0;
	setenv("HAX_STANDIN_CONFIRM_DELAY_MS", "300", 1);
	set_flag(&g_auto_reply, true);
	snprintf(ep, sizeof ep, "inet:tcp:127.0.0.1@%d", port);
	CHECK(m0_halon_interface_init(&g_hi, "hax-standin", "", "", NODE_UUID) == 0);
	CHECK(start_at(ep, &g_proc) == 0);
	unsetenv("HAX_STANDIN_CONFIRM_DELAY_MS");
	i = ev_wait(0, EV_CONN, NULL, 0, T(5000));
	if (CHECK(i >= 0))
		self = ev_get(i).hl;
	CHECK(ev_wait(0, EV_RECV, self, 12, T(5000)) >= 0);
	cp = process_connect(port, &fp, "inet:tcp:127.0.0.1@8", &hp, 0);
	set_flag(&g_defer_delivered, true);
	for (uint64_t t = 2; t <= 6; t += 2) {
		mk_process_event(m, &fp, M0_CONF_HA_PROCESS_STARTED, t);
		c_msg(cp, t, m);
	}
	for (i = 0; i < 3; i++)
		d[i] = deferred_wait(i + 1, T(5000));
	CHECK(d[0].tag == 2 && d[1].tag == 4 && d[2].tag == 6 && d[2].hl == hp);
	set_flag(&g_defer_delivered, false);
	m0_halon_interface_delivered(g_hi, hp, d[2].msg); /* out of order: only marks */
	CHECK(next_kind(cp, &tag, T(600)) == 0);
	t0 = now_ms();
	m0_halon_interface_delivered(g_hi, hp, d[0].msg);
	CHECK(next_kind(cp, &tag, T(2000)) == WIRE_HA_ACK && tag == 2);
	CHECKF(now_ms() - t0 >= 250, "the confirmation waited the delay (%" PRIu64 " ms)",
	       now_ms() - t0);
	m0_halon_interface_delivered(g_hi, hp, d[1].msg); /* 4, and 6 was delivered already */
	CHECK(next_kind(cp, &tag, T(2000)) == WIRE_HA_ACK && tag == 6);

	section("confirmations: an HA message carries the pending one at once");
	calls = __atomic_load_n(&g_delivered_calls, __ATOMIC_SEQ_CST);
	mk_process_event(m, &fp, M0_CONF_HA_PROCESS_STARTED, 8);
	c_msg(cp, 8, m);
	CHECK(delivered_calls_wait(calls + 1, T(5000)));
	t0 = now_ms();
	mk_nvec(m, M0_HA_NVEC_SET, 0, false, 1, &fp, M0_NC_ONLINE);
	CHECK(tsend(hp, m) == 1);
	CHECK(next_kind(cp, &tag, T(2000)) == WIRE_HA_ACK && tag == 8);
	CHECK(next_kind(cp, &tag, T(2000)) == WIRE_HA_MSG && tag == 1);
	CHECKF(now_ms() - t0 < 250, "before the delay (%" PRIu64 " ms)", now_ms() - t0);
	c_ack(cp, 1);

	section("confirmations: STOPPED delivered, link dropped at once: never confirmed");
	cq = process_connect(port, &fq, "inet:tcp:127.0.0.1@9", &hq, 0);
	self_note(self, &fq, M0_NC_ONLINE, true);
	calls = __atomic_load_n(&g_delivered_calls, __ATOMIC_SEQ_CST);
	mk_process_event(m, &fq, M0_CONF_HA_PROCESS_STOPPED, 2);
	c_msg(cq, 2, m);
	CHECK(delivered_calls_wait(calls + 1, T(5000)));
	self_note(self, &fq, M0_NC_FAILED, true); /* within a few ms of STOPPED */
	CHECKF(next_kind(cq, &tag, T(5000)) == WIRE_DROP, "DROP, and no ACK before it");
	CHECKF(next_kind(cq, &tag, T(600)) == 0, "nor after it");
	CHECK(ev_wait(0, EV_DISC, hq, 0, T(5000)) >= 0);

	section("confirmations: STOPPED delivered, an HA message, then the drop: confirmed");
	cr = process_connect(port, &fr, "inet:tcp:127.0.0.1@10", &hr, 0);
	self_note(self, &fr, M0_NC_ONLINE, true);
	calls = __atomic_load_n(&g_delivered_calls, __ATOMIC_SEQ_CST);
	mk_process_event(m, &fr, M0_CONF_HA_PROCESS_STOPPED, 2);
	c_msg(cr, 2, m);
	CHECK(delivered_calls_wait(calls + 1, T(5000)));
	mk_nvec(m, M0_HA_NVEC_SET, 0, false, 1, &fr, M0_NC_ONLINE);
	CHECK(tsend(hr, m) == 1);
	self_note(self, &fr, M0_NC_FAILED, true);
	CHECK(next_kind(cr, &tag, T(5000)) == WIRE_HA_ACK && tag == 2);
	CHECK(next_kind(cr, &tag, T(5000)) == WIRE_HA_MSG && tag == 1);
	CHECK(next_kind(cr, &tag, T(5000)) == WIRE_DROP);
	CHECK(ev_wait(0, EV_DISC, hr, 0, T(5000)) >= 0);

	m0_halon_interface_stop(g_hi);
	m0_halon_interface_fini(g_hi);
	g_hi = NULL;
	client_free(cp);
	client_free(cq);
	client_free(cr);
	free(m);
	set_flag(&g_auto_reply, false);
}

/* Without HAX_STANDIN_RPC_TIMEOUT_MS, a gone peer's link is dropped after 5 s, as in Motr. */
static void test_rpc_timeout_default(void)
{
	char ep[64];
	int port = free_port();
	const struct m0_fid pf = { 0x7200000000000070ULL, 1 };
	struct m0_ha_link *self = NULL;
	struct m0_ha_link *hl = NULL;
	struct client *c;
	int i, j, from;

	section("default RPC timeout: a gone peer's link is dropped after 5 s");
	g_nev = 0;
	g_nsent = 0;
	unsetenv("HAX_STANDIN_RPC_TIMEOUT_MS");
	set_flag(&g_auto_reply, true);
	snprintf(ep, sizeof ep, "inet:tcp:127.0.0.1@%d", port);
	CHECK(m0_halon_interface_init(&g_hi, "hax-standin", "", "", NODE_UUID) == 0);
	CHECK(start_at(ep, &g_proc) == 0);
	i = ev_wait(0, EV_CONN, NULL, 0, T(5000));
	if (CHECK(i >= 0))
		self = ev_get(i).hl;
	c = process_connect(port, &pf, "inet:tcp:127.0.0.1@7", &hl, 0);
	self_note(self, &pf, M0_NC_ONLINE, false);
	client_close(c);
	sleep_ms(100);
	from = ev_now();
	self_note(self, &pf, M0_NC_FAILED, false);
	i = ev_wait(from, EV_DISCING, hl, 0, T(2000));
	j = ev_wait(from, EV_DISC, hl, 0, T(10000));
	if (CHECK(i >= 0 && j > i)) {
		uint64_t waited = ev_get(j).at_ms - ev_get(i).at_ms;

		CHECKF(waited >= 4900 && waited < (uint64_t)T(6000),
		       "link_disconnected %" PRIu64 " ms after link_is_disconnecting (5000)", waited);
	}
	m0_halon_interface_stop(g_hi);
	m0_halon_interface_fini(g_hi);
	g_hi = NULL;
	client_free(c);
	set_flag(&g_auto_reply, false);
}

/* fini without stop, and a second cycle on the same port. */
static void test_fini_without_stop(void)
{
	char ep[64];
	int port = free_port();

	uint64_t cookies[2] = { 0, 0 };

	section("second cycle: fini without stop");
	g_nev = 0;
	g_nsent = 0;
	set_flag(&g_auto_reply, true);
	snprintf(ep, sizeof ep, "inet:tcp:127.0.0.1@%d", port);
	for (int round = 0; round < 2; round++) {
		int from = ev_now();
		struct m0_ha_link *hl = NULL;
		struct client *c;

		CHECK(m0_halon_interface_init(&g_hi, "hax-standin", "", "", NODE_UUID) == 0);
		CHECK(start_at(ep, &g_proc) == 0);
		CHECK(ev_wait(from, EV_RECV, NULL, 12, T(5000)) >= 0);
		c = process_connect(port, &(struct m0_fid){ 0x7200000000000050ULL, 1 },
				    "inet:tcp:127.0.0.1@1", &hl, 0);
		cookies[round] = c->cookie;
		{
			/* FAILED as the first note about HA's own process: ignored (recorded) */
			int k = ev_wait(from, EV_CONN, NULL, 0, 0);
			struct m0_ha_link *self = k >= 0 ? ev_get(k).hl : NULL;

			CHECK(self != NULL);
			self_note(self, &g_proc, M0_NC_FAILED, true);
			self_note(self, &g_proc, M0_NC_FAILED, true); /* the same state */
			sleep_ms(100);
			CHECK(ev_count(from, EV_DISCING, NULL, 0) == 0);
		}
		if (round == 0) {
			m0_halon_interface_fini(g_hi); /* stops first */
		} else {
			m0_halon_interface_stop(g_hi);
			m0_halon_interface_fini(g_hi);
		}
		CHECK(ev_count(from, EV_DISC, NULL, 0) == 2);
		CHECK(ev_count(from, EV_RECV, NULL, 0) == 12);
		g_hi = NULL;
		client_free(c);
	}
	CHECKF(cookies[0] != 0 && cookies[1] != 0 && cookies[0] != cookies[1],
	       "every interface instance has its own HA cookie");
	set_flag(&g_auto_reply, false);
}

/* Test hook of the stand-in (hooks.c, not in Motr's header): its link bookkeeping. */
int hax_standin_link_stats(struct m0_halon_interface *hi, uint64_t *live, uint64_t *dead,
			   uint64_t *dead_max, uint64_t *allocated);

int hax_standin_rx_stats(struct m0_halon_interface *hi, unsigned *queued, unsigned *peak,
			 unsigned *cap);

struct link_stats {
	uint64_t live, dead, dead_max, allocated;
};

static struct link_stats link_stats(void)
{
	struct link_stats st = { 0 };

	CHECK(hax_standin_link_stats(g_hi, &st.live, &st.dead, &st.dead_max, &st.allocated) == 0);
	return st;
}

/* Waits until `live` links are not buried yet (a link is buried just after link_disconnected). */
static struct link_stats link_stats_wait_live(uint64_t live)
{
	uint64_t deadline = now_ms() + (uint64_t)T(5000);
	struct link_stats st = link_stats();

	while (st.live != live && now_ms() < deadline) {
		sleep_ms(5);
		st = link_stats();
	}
	return st;
}

/*
 * Many processes: the stand-in keeps a bounded number of dead links (a small graveyard here),
 * still recognises the recent ones, and delivers a broadcast to hundreds of peers in order.
 */
static void test_scale(void)
{
	enum { GRAVE = 100, BATCH = 50, CYCLES = 2000, PEERS = 500, PER_PEER = 3 };
	char ep[64];
	int port = free_port();
	struct m0_ha_link *self = NULL;
	struct m0_ha_link *hl_old = NULL;
	struct m0_ha_link **dead = calloc(CYCLES, sizeof *dead);
	struct m0_fid fids[BATCH];
	struct link_stats st;
	struct client *c;
	bool ok = true;
	int from, i;

	section("scale: 2000 links come and go, a bounded graveyard");
	g_nev = 0;
	g_nsent = 0;
	set_flag(&g_auto_reply, true);
	setenv("HAX_STANDIN_LINK_GRAVEYARD", "100", 1);
	snprintf(ep, sizeof ep, "inet:tcp:127.0.0.1@%d", port);
	CHECK(m0_halon_interface_init(&g_hi, "hax-standin", "", "", NODE_UUID) == 0);
	CHECK(start_at(ep, &g_proc) == 0);
	unsetenv("HAX_STANDIN_LINK_GRAVEYARD");
	i = ev_wait(0, EV_CONN, NULL, 0, T(5000));
	if (CHECK(i >= 0))
		self = ev_get(i).hl;
	CHECK(ev_wait(0, EV_RECV, self, 12, T(5000)) >= 0);
	st = link_stats();
	CHECK(st.live == 1 && st.dead == 0 && st.dead_max == GRAVE && st.allocated == 1);
	/* a link that dies first: recognised while in the graveyard */
	{
		const struct m0_fid f0 = { 0x7200000000000060ULL, 1 };

		c = process_connect(port, &f0, "inet:tcp:127.0.0.1@4", &hl_old, 0);
		from = ev_now();
		self_note(self, &f0, M0_NC_ONLINE, false);
		self_note(self, &f0, M0_NC_FAILED, false);
		CHECK(ev_wait(from, EV_DISC, hl_old, 0, T(5000)) >= 0);
		client_free(c);
		st = link_stats_wait_live(1);
		CHECK(st.live == 1 && st.dead == 1 && st.allocated == 2);
		CHECK(hax_standin_link_state(g_hi, hl_old) == 2);
		m0_halon_interface_disconnect(g_hi, hl_old); /* ignored */
	}
	for (i = 0; i < BATCH; i++)
		fids[i] = (struct m0_fid){ 0x7200000000000061ULL, (uint64_t)i + 1 };
	self_notes(self, fids, BATCH, M0_NC_ONLINE); /* first notes: recorded only */
	set_flag(&g_quiet, true);
	for (int done = 0; done < CYCLES; done += BATCH) {
		quiet_cycle(port, self, fids, BATCH);
		st = link_stats();
		if (st.dead > GRAVE || st.allocated != st.live + st.dead || st.live > 1 + BATCH) {
			CHECKF(false, "after %d cycles: %" PRIu64 " live, %" PRIu64
			       " dead (at most %d), %" PRIu64 " allocated", done + BATCH, st.live,
			       st.dead, GRAVE, st.allocated);
			break;
		}
	}
	st = link_stats_wait_live(1);
	CHECKF(st.live == 1 && st.dead == GRAVE && st.allocated == 1 + GRAVE,
	       "after %d cycles: %" PRIu64 " live, %" PRIu64 " dead, %" PRIu64 " allocated",
	       CYCLES, st.live, st.dead, st.allocated);
	CHECK(quiet_count(EV_CONN) == CYCLES && quiet_count(EV_DISC) == CYCLES);
	CHECK(quiet_count(EV_NOTDELIV) == 0);
	/* The last GRAVE dead links are all still known (the hash set survived 1900 removals).
	 * Older pointers are not used: their memory may be another link's by now. */
	pthread_mutex_lock(&g_ev_lock);
	for (i = 0; i < CYCLES && i < g_quiet_nlinks; i++)
		dead[i] = g_quiet_links[i];
	pthread_mutex_unlock(&g_ev_lock);
	for (i = CYCLES - GRAVE; i < CYCLES; i++) {
		if (hax_standin_link_state(g_hi, dead[i]) != 2)
			ok = false;
	}
	CHECKF(ok, "the %d most recent dead links are recognised", GRAVE);

	section("scale: a broadcast to 500 peers, delivered to all, in order");
	{
		struct client **peers = calloc(PEERS, sizeof *peers);
		struct m0_ha_link **hl = calloc(PEERS, sizeof *hl);
		struct m0_ha_msg *m = malloc(sizeof *m);
		int base = quiet_count(EV_CONN);
		int got_all = 0;
		int *next = calloc(PEERS, sizeof *next);

		for (i = 0; i < PEERS; i++) {
			struct m0_fid f = { 0x7200000000000062ULL, (uint64_t)i + 1 };

			peers[i] = quiet_connect(port, &f, "inet:tcp:127.0.0.1@5");
			/* link_connected runs right after the reply is queued */
			CHECK(quiet_wait(EV_CONN, base + i + 1, T(5000)));
			pthread_mutex_lock(&g_ev_lock);
			hl[i] = base + i < QUIET_LINKS_MAX ? g_quiet_links[base + i] : NULL;
			pthread_mutex_unlock(&g_ev_lock);
		}
		st = link_stats();
		CHECK(st.live == 1 + PEERS && st.allocated == 1 + PEERS + GRAVE);
		set_flag(&g_quiet, false);
		g_nev = 0;
		g_nsent = 0;
		mk_process_event(m, &g_proc, M0_CONF_HA_PROCESS_STARTED, 1);
		m->hm_data.hed_type = M0_HA_MSG_EVENT_RPC;
		for (int k = 0; k < PER_PEER; k++) {
			for (i = 0; i < PEERS; i++) {
				uint64_t id = (uint64_t)(i * PER_PEER + k);

				m->hm_data.u.hed_event_rpc.hmr_attempts = id;
				if (tsend(hl[i], m) != (uint64_t)(2 * k + 1))
					ok = false;
			}
		}
		CHECKF(ok, "tags 1, 3, 5 on every link");
		/* every peer gets its messages in order; even peers ACK each, odd ones the last */
		for (i = 0; i < PEERS; i++) {
			for (int k = 0; k < PER_PEER; k++) {
				struct frame f;

				if (client_expect(peers[i], WIRE_HA_MSG, &f, T(5000)) == 1 &&
				    f.tag == (uint64_t)(2 * k + 1) &&
				    f.msg->hm_data.u.hed_event_rpc.hmr_attempts ==
					    (uint64_t)(i * PER_PEER + k))
					got_all++;
				frame_free(&f);
				if (i % 2 == 0 || k == PER_PEER - 1)
					c_ack(peers[i], (uint64_t)(2 * k + 1));
			}
		}
		CHECKF(got_all == PEERS * PER_PEER, "%d of %d messages arrived in order", got_all,
		       PEERS * PER_PEER);
		for (i = 0; i < PEERS * PER_PEER; i++) {
			if (ev_wait(i, EV_DELIV, NULL, 0, T(10000)) < 0)
				break;
		}
		CHECKF(i == PEERS * PER_PEER && ev_count(0, EV_DELIV, NULL, 0) == PEERS * PER_PEER,
		       "%d delivered", ev_count(0, EV_DELIV, NULL, 0));
		/* per link: delivered 1, 3, 5 in that order, nothing else */
		ok = true;
		pthread_mutex_lock(&g_ev_lock);
		for (int e = 0; e < g_nev; e++) {
			int p;

			if (g_ev[e].k != EV_DELIV && g_ev[e].k != EV_NOTDELIV)
				continue;
			for (p = 0; p < PEERS && hl[p] != g_ev[e].hl; p++) {
			}
			if (p == PEERS || g_ev[e].k != EV_DELIV ||
			    g_ev[e].tag != (uint64_t)(2 * next[p] + 1))
				ok = false;
			else
				next[p]++;
		}
		pthread_mutex_unlock(&g_ev_lock);
		for (i = 0; i < PEERS; i++)
			ok &= next[i] == PER_PEER;
		CHECKF(ok, "every link: delivered 1, 3, 5 in order, once");

		section("scale: a flood from many peers stays within the received-message cap");
		{
			enum { FLOODERS = 16, PER = 200 };
			unsigned queued = 0, peak = 0, cap = 0;
			int from = ev_now();
			int in_order = 0;

			set_flag(&g_slow_recv, true); /* 1 ms per callback: the queue fills */
			for (int k = 0; k < PER; k++) {
				for (i = 0; i < FLOODERS; i++) {
					const struct m0_fid f = { 0x7200000000000062ULL,
								  (uint64_t)i + 1 };

					mk_process_event(m, &f, M0_CONF_HA_PROCESS_STARTED,
							 (uint64_t)k);
					c_msg(peers[i], (uint64_t)(2 * k + 2), m);
				}
			}
			for (i = 0; i < FLOODERS; i++)
				CHECK(ev_wait(from, EV_RECV, hl[i], 2 * PER, T(30000)) >= 0);
			set_flag(&g_slow_recv, false);
			for (i = 0; i < FLOODERS; i++) {
				uint64_t want = 2;

				pthread_mutex_lock(&g_ev_lock);
				for (int e = from; e < g_nev; e++) {
					if (g_ev[e].k == EV_RECV && g_ev[e].hl == hl[i] &&
					    g_ev[e].tag == want)
						want += 2;
				}
				pthread_mutex_unlock(&g_ev_lock);
				in_order += want == 2 * PER + 2;
			}
			CHECKF(in_order == FLOODERS, "%d of %d peers' %d messages received in order",
			       in_order, FLOODERS, PER);
			CHECK(hax_standin_rx_stats(g_hi, &queued, &peak, &cap) == 0);
			/* the cap holds frame by frame: frames past it wait in the connection */
			CHECKF(peak == cap,
			       "at most %u received messages queued (cap %u, %d sent at once)", peak,
			       cap, FLOODERS * PER);
			CHECK(queued == 0);
		}
		set_flag(&g_quiet, true);
		m0_halon_interface_stop(g_hi);
		CHECK(quiet_count(EV_DISC) == CYCLES + PEERS + 1);
		m0_halon_interface_fini(g_hi);
		g_hi = NULL;
		for (i = 0; i < PEERS; i++)
			client_free(peers[i]);
		free(peers);
		free(hl);
		free(next);
		free(m);
	}
	set_flag(&g_quiet, false);
	set_flag(&g_auto_reply, false);
	free(dead);
}

int main(int argc, char **argv)
{
	const char *scale = getenv("STANDIN_TEST_SCALE");

	(void)argc;
	(void)argv;
	if (scale != NULL && atoi(scale) > 0)
		g_scale = atoi(scale);
	signal(SIGPIPE, SIG_IGN);
	{
		/* the scale test has 500 peers: 1000+ descriptors */
		struct rlimit rl;

		if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max &&
		    rl.rlim_cur < 4096) {
			rl.rlim_cur = rl.rlim_max < 4096 ? rl.rlim_max : 4096;
			setrlimit(RLIMIT_NOFILE, &rl);
		}
	}
	g_main = pthread_self();
	test_codec();
	test_aborts();
	g_nev = 0;
	g_nsent = 0;
	test_init();
	test_interface();
	test_fini_without_stop();
	test_confirmations();
	test_rpc_timeout_default();
	test_scale();
	printf("%d passed, %d failed\n", g_passed, g_failed);
	return g_failed == 0 ? 0 : 1;
}
