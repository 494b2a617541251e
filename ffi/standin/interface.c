/*
 * interface.c: a stand-in for Motr's HA interface (m0_halon_interface).
 *
 * It reproduces the observed behaviour of real Motr (see
 * shared/design/halon-interface.md and tests/fixtures/motr-traces/) closely enough for hax to
 * be developed and tested without Motr. Remote "Motr processes" reach it over TCP with the
 * framing of PROTOCOL.md (codec in wire.c).
 *
 * Threads:
 *   - the caller's threads: init/start/stop/fini, and anything the user calls;
 *   - LOCALITY_NR "locality" threads: run every callback except link_connected/reused/absent
 *     (those run inside entrypoint_reply, on the caller's thread);
 *   - one I/O thread: epoll over the listener, the connections and a wake-up pipe. It
 *     accepts, reads, writes and closes. Its work per wake-up follows the connections that
 *     are ready or changed (hi->dirty), not the number of connections.
 *
 * One mutex (hi->lock) protects all state. It is never held while a user callback runs.
 *
 * Scheduling: every link has its own FIFO of work items (received message, delivery
 * confirmations, disconnect steps). A link with pending work is put once on the run queue;
 * a locality thread takes it, runs ONE item without the lock, and puts it back if more work is
 * pending. So a link's callbacks run one at a time and in order, different links run
 * concurrently. Entrypoint requests are standalone tasks and may run concurrently. A new
 * link's work is held back until its link_connected callback has returned.
 *
 * Tags: HA sends on a link get odd tags 1, 3, 5 ...; confirmations are in order, so the set of
 * unconfirmed sends of a link is always the tag range [hl_confirm_next, hl_next_tag).
 *
 * Link pointers from the user are checked against a hash set of the links we know (O(1)).
 * Dead links (link_disconnected returned) are kept in a bounded graveyard, the LINK_GRAVEYARD
 * most recent ones, so that a stale link pointer can be recognised (and a send on it turned
 * into the assertion failure real Motr would hit); older ones are freed, so memory does not
 * grow with the number of links ever made. See link_bury().
 *
 * Received messages wait for their callback as whole m0_ha_msg structs (about 24 KiB each, as
 * in Motr): the I/O thread stops reading a connection whose link has RX_BACKLOG of them queued,
 * and every connection while RX_TOTAL_MAX are queued over all links, so a flood of events
 * from many peers is held back by TCP instead of growing the process's memory.
 *
 * Rules of real Motr (cortx-motr 27e7f86) that the stand-in reproduces, assertions included:
 *   - Prototypes and types are Motr's exactly (ffi/tests/prototypes.c checks them at compile
 *     time): m0_ha_link_rpc_endpoint() returns nothing and copies at most buf_len - 1 bytes
 *     then a NUL; buf_len 0 or a link that is not a live link of the interface aborts (Motr
 *     writes before the buffer or reads freed memory). thread_adopt/_shun are M0_INTERNAL.
 *   - init: a node_uuid Motr cannot parse (at most 36 characters are kept, then 8-4-4-4-12 hex
 *     digits with dashes or 32 hex digits) gives -EINVAL after "Unable to parse node UUID
 *     string". NULL keeps the last string given (the nil UUID at first), as Motr's static does.
 *   - thread_adopt/_shun: fini aborts ("sys->sy_total == 0 in m0_addb2_sys_fini()") if the
 *     thread that called init was ever adopted, or an adopted thread was not shunned; the
 *     descriptor must be all zero. Threads never adopted may call everything.
 *   - Dropping the link of a peer that is gone waits the RPC timeout, 5000 ms by default (real
 *     Motr reported link_disconnected 5.0 s after link_is_disconnecting); the environment
 *     variable HAX_STANDIN_RPC_TIMEOUT_MS overrides it.
 *   - Process notes on the self link (halon_interface_process_failure_check in Motr's
 *     ha/halon/interface.c): the state of at most 4096 process fids is kept; a note about a
 *     4097th aborts ("Currently we don't support more than 4096 processes connected to a
 *     single m0_halon_interface."). The first note about a process is recorded (a FAILED one
 *     drops nothing); with hmnv_ignore_same_state a note that does not change the state is
 *     ignored; any other FAILED note drops every link of that process.
 *   - Such a FAILED note about HA's own process drops the self link too ("m0_ha_process_failed:
 *     disconnecting local link"; the user gets link_is_disconnecting and link_disconnected for
 *     it). Motr's local link then asks for an entrypoint again and is told it was disconnected
 *     previously: "!rep->hae_disconnected_previously in ha_entrypoint_state_cb(): HA has
 *     already decided that this process has failed" (ha/ha.c:304). The stand-in makes that
 *     re-request when the local link is next needed: at stop (before the own STOPPING ..
 *     STOPPED events) and at the next send on the self link; both abort.
 *   - Link decisions (Motr's ha_link_handle in ha/ha.c) with cookies: every interface instance
 *     has its own HA cookie, sent in every entrypoint reply; a process sends back the last one
 *     it got as cookie_expected (PROTOCOL.md v2). First request: a new link (link_connected).
 *     Not first: a live link of that process -> link_reused; none, and cookie_expected is this
 *     instance's cookie -> link_absent ("disconnected previously"); none, and another cookie
 *     (HA restarted) -> a new link, link_connected. A non-first request is decided whatever
 *     rc HA replies (an EAGAIN reply to a reconnecting process still makes the link), and so is a
 *     first request (observed with real Motr: an EAGAIN reply to a first request fires
 *     link_connected; the process then asks again with a request that is not first, and that
 *     one is answered link_reused). HA's own request goes the same way: an rc != 0 reply makes
 *     the self link, the request is made again (not first) and start returns once one is
 *     answered rc 0.
 *   - Confirmations as Motr's HA link (ha/link.c, ha/lq.c): delivered() marks a message; the
 *     link's delivered mark is the highest tag such that it and every earlier message of the
 *     link are delivered, and the peer's ACK frame carries that mark. Out-of-order delivered()
 *     only marks. delivered() of a message msg_received did not give on that link, of one
 *     below the mark (delivered twice), or on a link after disconnect() or its end aborts.
 *     Pending confirmations are not written at once: just before the next HA message sent on
 *     the link, or after HAX_STANDIN_CONFIRM_DELAY_MS (default 1 ms); once the link has
 *     started disconnecting they are never written (Motr's link loop checks the stop request
 *     before it sends pending confirmations): an m0d whose link HA drops right after its
 *     STOPPED waits in m0_ha_link_flush() for a confirmation that never comes.
 */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <time.h>
#include <unistd.h>

#include "conf/ha.h"
#include "ha/halon/interface.h"
#include "wire.h"

/* The build strings the stand-in accepts without "disable-compatibility-check". */
#define STANDIN_GIT_REV "hax-standin"
#define STANDIN_CONFIGURE_OPTS ""

enum {
	LOCALITY_NR = 2,
	OUT_LIMIT = 8 << 20,          /* unsent bytes per connection before it is closed */
	READ_CHUNK = 64 * 1024,
	IN_CAP_MAX = WIRE_HDR + WIRE_MAX_FRAME + READ_CHUNK,
	RX_BACKLOG = 256,             /* queued received messages per link before we stop reading */
	RX_TOTAL_MAX = 1024,          /* ... and over all links (each holds a whole m0_ha_msg,
	                               * about 24 KiB): reading resumes below half of it */
	LINK_GRAVEYARD = 4096,        /* dead links kept so that stale pointers are recognised */
	IO_EVENTS = 256,              /* epoll events taken per wake-up */
	STOP_EVENTS_WAIT_MS = 5000,   /* stop: wait this long for the own STOP events' delivered */
	STOP_LINKS_EXTRA_MS = 30000,  /* stop: wait RPC timeout + this for the links to go */
	DEFAULT_RPC_TIMEOUT_MS = 5000, /* real Motr: disconnected 5.0 s after disconnecting */
	DEFAULT_CONFIRM_DELAY_MS = 1, /* delivered() -> ACK when no HA message goes first */
	PROCESS_FID_TYPE = 0x72,
	NOTES_MAX = 0x1000,           /* HALON_INTERFACE_NVEC_SIZE_MAX */
};

#define LINK_MAGIC 0x68617873746c6e6bULL /* "haxstlnk" */

typedef void (*entrypoint_request_cb_t)(struct m0_halon_interface *hi,
					const struct m0_uint128 *req_id,
					const char *remote_rpc_endpoint,
					const struct m0_fid *process_fid, const char *git_rev_id,
					uint64_t pid, bool first_request);
typedef void (*msg_received_cb_t)(struct m0_halon_interface *hi, struct m0_ha_link *hl,
				  const struct m0_ha_msg *msg, uint64_t tag);
typedef void (*msg_tag_cb_t)(struct m0_halon_interface *hi, struct m0_ha_link *hl,
			     uint64_t tag);
typedef void (*link_req_cb_t)(struct m0_halon_interface *hi, const struct m0_uint128 *req_id,
			      struct m0_ha_link *link);
typedef void (*link_absent_cb_t)(struct m0_halon_interface *hi,
				 const struct m0_uint128 *req_id);
typedef void (*link_cb_t)(struct m0_halon_interface *hi, struct m0_ha_link *hl);

struct callbacks {
	entrypoint_request_cb_t entrypoint_request;
	msg_received_cb_t msg_received;
	msg_tag_cb_t msg_is_delivered;
	msg_tag_cb_t msg_is_not_delivered;
	link_req_cb_t link_connected;
	link_req_cb_t link_reused;
	link_absent_cb_t link_absent;
	link_cb_t link_is_disconnecting;
	link_cb_t link_disconnected;
};

struct ep_task;

/* An entry of the run queue: a link with pending work, or one entrypoint request. */
struct task {
	struct task *t_next;
	struct m0_ha_link *t_link;
	struct ep_task *t_ep;
};

/* An entrypoint request callback to run. Owns copies of its strings. */
struct ep_task {
	struct task et_task;
	struct m0_uint128 et_id;
	char *et_ep;
	struct m0_fid et_process;
	char *et_git;
	uint64_t et_pid;
	bool et_first;
};

/* A received message, from arrival until the user's delivered() (or the link's end). */
struct rcv {
	struct rcv *r_next;
	uint64_t r_tag;
	bool r_delivered;             /* delivered() was called (it waits for earlier ones) */
	struct m0_ha_msg r_msg;
};

enum item_kind {
	IT_MSG,              /* msg_received for i_rcv */
	IT_CONFIRM,          /* msg_is_delivered for every unconfirmed tag <= i_tag */
	IT_IS_DISCONNECTING, /* link_is_disconnecting */
	IT_FINISH,           /* msg_is_not_delivered for the rest, DROP, link_disconnected */
};

struct item {
	struct item *i_next;
	enum item_kind i_kind;
	uint64_t i_tag;
	struct rcv *i_rcv;
};

struct timer {
	struct timer *tm_next;
	uint64_t tm_due; /* monotonic ns */
	struct m0_ha_link *tm_link;
	struct item *tm_item;
};

enum link_state { LS_ALIVE, LS_DISCONNECTING, LS_DEAD };

struct conn;

struct m0_ha_link {
	uint64_t hl_magic;
	struct m0_ha_link *hl_next;   /* hi->links (creation order), or the graveyard once buried */
	struct m0_ha_link *hl_prev;   /* hi->links only */
	uint64_t hl_id;
	bool hl_self;
	enum link_state hl_state;
	bool hl_disconnect_called;
	bool hl_ready;                /* link_connected has returned */
	bool hl_scheduled;            /* on the run queue or being run */
	bool hl_gone;                 /* link_disconnected has returned */
	bool hl_buried;               /* in the graveyard: only recognised, never used again */
	struct m0_fid hl_process;
	char *hl_ep;                  /* the peer's endpoint */
	struct conn *hl_conn;         /* NULL for the self link or once the connection closed */
	uint64_t hl_next_tag;         /* next odd tag for an HA send */
	uint64_t hl_confirm_next;     /* first tag whose delivered/not-delivered has not fired */
	uint64_t hl_ack_hwm;          /* highest tag whose confirmation is queued */
	uint64_t hl_rx_tag;           /* self link: last even tag given to an own event */
	unsigned hl_rx_queued;        /* IT_MSG items queued */
	struct item *hl_qhead;
	struct item *hl_qtail;
	struct rcv *hl_rcvs;          /* received, not yet below the delivered mark, oldest first */
	struct rcv *hl_rcvs_tail;
	uint64_t hl_rx_mark;          /* the highest tag such that it and every earlier received
	                               * message are delivered (what the ACK frame confirms) */
	uint64_t hl_ack_sent;         /* the highest mark written to the peer in an ACK */
	bool hl_cq_queued;            /* on hi->cq: a confirmation is due at hl_cq_due */
	uint64_t hl_cq_due;
	struct m0_ha_link *hl_cq_next;
	struct m0_ha_link *hl_cq_prev;
	struct task hl_task;
};

struct conn {
	struct conn *c_next;          /* hi->conns */
	struct conn *c_prev;
	struct conn *c_dnext;         /* hi->dirty, while c_dirty */
	uint64_t c_id;
	int c_fd;
	uint32_t c_ev;                /* the epoll events registered for c_fd */
	bool c_dirty;                 /* the I/O thread must flush, re-arm or close it */
	unsigned c_nreqs;             /* pending entrypoint requests with r_conn == this */
	uint8_t *c_in;
	size_t c_in_len;
	size_t c_in_cap;
	struct wire_buf c_out;
	size_t c_out_off;
	bool c_writing;               /* the I/O thread writes c_out without the lock: senders
	                               * append to c_side meanwhile */
	struct wire_buf c_side;
	struct m0_ha_link *c_link;
	bool c_ever_linked;
	uint64_t c_last_rx_tag;
	bool c_close;                 /* close it at the next I/O round */
	bool c_close_error;
	char c_why[160];
};

/* A pending entrypoint request (answered exactly once). */
struct epreq {
	struct epreq *r_next;
	struct m0_uint128 r_id;
	struct conn *r_conn;          /* NULL for the self request or if the connection closed */
	bool r_self;
	bool r_first;
	uint64_t r_cookie;            /* cookie_expected of the request */
	uint64_t r_seq;
	struct m0_fid r_process;
	char *r_ep;
};

struct note_state {
	struct note_state *ns_next;
	struct m0_fid ns_fid;
	uint32_t ns_state;
};

enum hi_state { HI_INIT, HI_STARTING, HI_STARTED, HI_STOPPING, HI_STOPPED };

/*
 * An open-addressing (linear probing) hash set of pointers: the links we know, live or buried,
 * so that a link pointer from the user is checked in O(1) without dereferencing it.
 */
struct ptrset {
	const void **ps_slot;
	size_t ps_cap;                /* 0 or a power of 2, at least twice ps_nr */
	size_t ps_nr;
};

struct m0_halon_interface {
	pthread_mutex_t lock;
	pthread_cond_t loc_cv;        /* locality threads wait for work */
	pthread_cond_t state_cv;      /* start/stop wait for progress */
	enum hi_state state;
	pthread_t main_thread;
	bool main_adopted;            /* the init thread was adopted: fini aborts */
	unsigned adopted_live;        /* adopted threads not shunned: fini aborts unless 0 */
	bool log_ep;
	bool log_link;
	bool log_msg;
	struct callbacks cb;
	char *endpoint;
	struct m0_fid process;
	struct m0_fid ha_svc;
	struct m0_fid rm_svc;
	uint64_t rpc_timeout_ns;
	uint64_t confirm_delay_ns;    /* pending confirmations are written this long after */
	struct m0_ha_link *cq_head;   /* links with a confirmation due, in due order */
	struct m0_ha_link *cq_tail;
	uint64_t cookie;              /* this instance's HA cookie (Motr's h_cookie_local), not 0 */
	int listen_fd;
	int wake_rd;
	int wake_wr;
	int epoll_fd;
	bool wake_pending;
	pthread_t io_thread;
	bool io_running;
	bool io_quit;
	pthread_t loc[LOCALITY_NR];
	int loc_nr;
	bool loc_quit;
	struct task *runq_head;
	struct task *runq_tail;
	struct timer *timers;
	struct m0_ha_link *links;     /* links not (yet) buried, in creation order */
	struct m0_ha_link *links_tail;
	struct m0_ha_link *grave;     /* buried links, oldest first */
	struct m0_ha_link *grave_tail;
	size_t grave_nr;
	size_t grave_max;
	struct ptrset known;          /* every link in hi->links or in the graveyard */
	uint64_t links_allocated;     /* link structs not freed */
	uint64_t link_seq;
	unsigned links_live;          /* links whose link_disconnected has not returned */
	struct m0_ha_link *self_link;
	bool self_connected;
	bool self_failed;             /* HA noted its own process FAILED: the local link is gone
	                               * and its re-request (at stop or send) aborts */
	struct epreq *reqs;
	uint64_t req_seq;
	struct conn *conns;
	struct conn *dirty;           /* connections the I/O thread must look at */
	unsigned rx_total;            /* IT_MSG items queued over all links */
	unsigned rx_peak;             /* the most rx_total has been (tests) */
	bool rx_held;                 /* rx_total reached RX_TOTAL_MAX: no connection is read */
	uint64_t conn_seq;
	struct note_state *notes;     /* the state of every process fid noted on the self link */
	unsigned notes_nr;            /* at most NOTES_MAX */
};

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static struct m0_halon_interface *g_hi;
static __thread bool tls_locality;
static __thread unsigned tls_adopted;   /* adoptions not shunned on this thread */
static __thread struct m0_halon_interface *tls_adopted_hi;
static __thread bool tls_io;

/* ------------------------------------------------------------------ helpers */

static void slog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void slog(const char *fmt, ...)
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

static void assert_fail(const char *expr, const char *func) __attribute__((noreturn));
static void assert_fail(const char *expr, const char *func)
{
	slog("Assertion failed: %s in %s() (real Motr panics here)", expr, func);
	abort();
}

/* M0_ASSERT_INFO: the condition, then Motr's explanation. */
static void assert_info(const char *expr, const char *func, const char *info)
	__attribute__((noreturn));
static void assert_info(const char *expr, const char *func, const char *info)
{
	slog("Assertion failed: %s in %s(): %s (real Motr panics here)", expr, func, info);
	abort();
}

#define STANDIN_ASSERT(cond)                                 \
	do {                                                 \
		if (!(cond))                                 \
			assert_fail(#cond, __func__);        \
	} while (0)

static void *xcalloc(size_t n, size_t size)
{
	void *p = calloc(n, size);

	if (p == NULL)
		assert_fail("memory allocation", __func__);
	return p;
}

static char *xstrdup(const char *s)
{
	char *p = strdup(s == NULL ? "" : s);

	if (p == NULL)
		assert_fail("memory allocation", __func__);
	return p;
}

static uint64_t mono_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static uint64_t real_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static struct timespec abs_mono(uint64_t ns)
{
	struct timespec ts = { .tv_sec = (time_t)(ns / 1000000000ULL),
			       .tv_nsec = (long)(ns % 1000000000ULL) };
	return ts;
}

static bool fid_eq(const struct m0_fid *a, const struct m0_fid *b)
{
	return a->f_container == b->f_container && a->f_key == b->f_key;
}

#define FID_F "<%" PRIx64 ":%" PRIx64 ">"
#define FID_P(f) (f)->f_container, (f)->f_key

static struct m0_halon_interface *current_hi(void)
{
	return __atomic_load_n(&g_hi, __ATOMIC_ACQUIRE);
}

static bool hi_valid(const struct m0_halon_interface *hi)
{
	return hi != NULL && hi == current_hi();
}

/* ------------------------------------------------------------------ pointer set */

static size_t ptr_hash(const void *p, size_t mask)
{
	uint64_t x = (uint64_t)(uintptr_t)p;

	/* the murmur3 finaliser: allocation addresses differ mostly in the middle bits */
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	return (size_t)x & mask;
}

static bool ptrset_has(const struct ptrset *s, const void *p)
{
	size_t mask = s->ps_cap - 1;

	if (s->ps_cap == 0 || p == NULL)
		return false;
	for (size_t i = ptr_hash(p, mask); s->ps_slot[i] != NULL; i = (i + 1) & mask) {
		if (s->ps_slot[i] == p)
			return true;
	}
	return false;
}

static void ptrset_put(const void **slot, size_t mask, const void *p)
{
	size_t i = ptr_hash(p, mask);

	while (slot[i] != NULL)
		i = (i + 1) & mask;
	slot[i] = p;
}

static void ptrset_add(struct ptrset *s, const void *p)
{
	if ((s->ps_nr + 1) * 2 > s->ps_cap) {
		size_t cap = s->ps_cap == 0 ? 64 : 2 * s->ps_cap;
		const void **slot = xcalloc(cap, sizeof *slot);

		for (size_t i = 0; i < s->ps_cap; i++) {
			if (s->ps_slot[i] != NULL)
				ptrset_put(slot, cap - 1, s->ps_slot[i]);
		}
		free(s->ps_slot);
		s->ps_slot = slot;
		s->ps_cap = cap;
	}
	ptrset_put(s->ps_slot, s->ps_cap - 1, p);
	s->ps_nr++;
}

/* Removes p (which must be there). No tombstones: later entries of the run are shifted back. */
static void ptrset_del(struct ptrset *s, const void *p)
{
	size_t mask = s->ps_cap - 1;
	size_t i = ptr_hash(p, mask);
	size_t j;

	while (s->ps_slot[i] != p) {
		STANDIN_ASSERT(s->ps_slot[i] != NULL);
		i = (i + 1) & mask;
	}
	s->ps_slot[i] = NULL;
	s->ps_nr--;
	for (j = (i + 1) & mask; s->ps_slot[j] != NULL; j = (j + 1) & mask) {
		size_t k = ptr_hash(s->ps_slot[j], mask);

		/* the entry at j may move to the hole at i unless its home k lies in (i, j] */
		if (i <= j ? (k <= i || k > j) : (k <= i && k > j)) {
			s->ps_slot[i] = s->ps_slot[j];
			s->ps_slot[j] = NULL;
			i = j;
		}
	}
}

static void ptrset_fini(struct ptrset *s)
{
	free(s->ps_slot);
	*s = (struct ptrset){ 0 };
}

/* Is hl one of our links (live or recently dead)? Compares pointers only (hl may be garbage).
 * Under the lock. */
static bool link_known(struct m0_halon_interface *hi, const struct m0_ha_link *hl)
{
	return ptrset_has(&hi->known, hl);
}

/* ------------------------------------------------------------------ I/O helpers (locked) */

static void io_wake(struct m0_halon_interface *hi)
{
	if (!hi->wake_pending && hi->wake_wr >= 0) {
		hi->wake_pending = true;
		if (write(hi->wake_wr, "w", 1) < 0) {
			/* a full pipe wakes the I/O thread anyway */
		}
	}
}

/*
 * Puts c on the list of connections the I/O thread looks at before it waits again: to flush
 * its queued output, to change the epoll events (EPOLLOUT while output
 * is pending, EPOLLIN unless its link has a backlog) or to close it. Only the connections on
 * this list cost the I/O thread anything besides those epoll reports ready.
 */
static void conn_dirty(struct m0_halon_interface *hi, struct conn *c)
{
	if (c == NULL)
		return;
	if (!c->c_dirty) {
		c->c_dirty = true;
		c->c_dnext = hi->dirty;
		hi->dirty = c;
	}
	if (!tls_io) /* the I/O thread looks at the list before it waits */
		io_wake(hi);
}

static void conn_mark_close(struct m0_halon_interface *hi, struct conn *c, bool error,
			    const char *why)
{
	if (c->c_close)
		return;
	c->c_close = true;
	c->c_close_error = error;
	snprintf(c->c_why, sizeof c->c_why, "%s", why);
	conn_dirty(hi, c);
}

/*
 * Queues bytes for a connection (never blocks). The I/O thread writes them: it is woken only
 * when the connection's output goes from empty to not empty (and not again while a wake-up is
 * pending), so a burst of sends, e.g. a broadcast to every process, costs the sending thread
 * a memcpy per message and the I/O thread one wake-up. (Writing straight to the socket from
 * the sending thread was measured too: the I/O thread did less, the sender much more, under
 * the lock, and the total was no better; see ffi/tests/standin_bench.c.)
 */
static void conn_send(struct m0_halon_interface *hi, struct conn *c, const void *p, size_t n)
{
	size_t pending;

	if (c == NULL || c->c_close)
		return;
	pending = c->c_out.len - c->c_out_off + c->c_side.len;
	if (pending + n > OUT_LIMIT) {
		conn_mark_close(hi, c, true, "more than 8 MiB of unsent output (peer not reading)");
		return;
	}
	if (wire_buf_append(c->c_writing ? &c->c_side : &c->c_out, p, n) != 0) {
		conn_mark_close(hi, c, true, "out of memory for output");
		return;
	}
	if (pending == 0)
		conn_dirty(hi, c); /* to be flushed, and EPOLLOUT turned on if it does not all go */
}

/*
 * The binding of links and connections is kept symmetric: l->hl_conn == c if and only if
 * c->c_link == l. So a connection that closes finds its link through c_link.
 */
static void conn_unbind(struct conn *c)
{
	if (c != NULL && c->c_link != NULL) {
		if (c->c_link->hl_conn == c)
			c->c_link->hl_conn = NULL;
		c->c_link = NULL;
	}
}

/* Makes c the connection of link l (and only of l). */
static void link_bind(struct m0_halon_interface *hi, struct m0_ha_link *l, struct conn *c)
{
	/* Whether a connection is read depends on its link's backlog: both may change. */
	conn_dirty(hi, l->hl_conn);
	conn_dirty(hi, c);
	if (l->hl_conn != NULL && l->hl_conn != c && l->hl_conn->c_link == l)
		l->hl_conn->c_link = NULL;
	l->hl_conn = NULL;
	if (c == NULL)
		return;
	conn_unbind(c);
	c->c_link = l;
	c->c_ever_linked = true;
	l->hl_conn = c;
}

/* ------------------------------------------------------------------ scheduling (locked) */

static void runq_push(struct m0_halon_interface *hi, struct task *t)
{
	t->t_next = NULL;
	if (hi->runq_tail == NULL)
		hi->runq_head = t;
	else
		hi->runq_tail->t_next = t;
	hi->runq_tail = t;
	pthread_cond_signal(&hi->loc_cv);
}

static struct task *runq_pop(struct m0_halon_interface *hi)
{
	struct task *t = hi->runq_head;

	if (t != NULL) {
		hi->runq_head = t->t_next;
		if (hi->runq_head == NULL)
			hi->runq_tail = NULL;
		t->t_next = NULL;
	}
	return t;
}

static void link_kick(struct m0_halon_interface *hi, struct m0_ha_link *l)
{
	if (!l->hl_scheduled && l->hl_ready && l->hl_qhead != NULL) {
		l->hl_scheduled = true;
		runq_push(hi, &l->hl_task);
	}
}

static struct item *item_new(enum item_kind kind, uint64_t tag)
{
	struct item *it = xcalloc(1, sizeof *it);

	it->i_kind = kind;
	it->i_tag = tag;
	return it;
}

static void link_enqueue(struct m0_halon_interface *hi, struct m0_ha_link *l, struct item *it)
{
	it->i_next = NULL;
	if (l->hl_qtail == NULL)
		l->hl_qhead = it;
	else
		l->hl_qtail->i_next = it;
	l->hl_qtail = it;
	if (it->i_kind == IT_MSG) {
		l->hl_rx_queued++;
		if (++hi->rx_total > hi->rx_peak)
			hi->rx_peak = hi->rx_total;
		if (hi->rx_total >= RX_TOTAL_MAX)
			hi->rx_held = true; /* connections are disarmed as the I/O thread sees them */
	}
	link_kick(hi, l);
}

static void timer_add(struct m0_halon_interface *hi, uint64_t due, struct m0_ha_link *l,
		      struct item *it)
{
	struct timer *t = xcalloc(1, sizeof *t);
	struct timer **pp = &hi->timers;

	t->tm_due = due;
	t->tm_link = l;
	t->tm_item = it;
	while (*pp != NULL && (*pp)->tm_due <= due)
		pp = &(*pp)->tm_next;
	t->tm_next = *pp;
	*pp = t;
	pthread_cond_broadcast(&hi->loc_cv);
}

static void timers_fire(struct m0_halon_interface *hi)
{
	uint64_t now = mono_ns();

	while (hi->timers != NULL && hi->timers->tm_due <= now) {
		struct timer *t = hi->timers;

		hi->timers = t->tm_next;
		link_enqueue(hi, t->tm_link, t->tm_item);
		free(t);
	}
}

/* ---- confirmations (locked) */

/* Writes the link's delivered mark in an ACK frame if the peer does not have it yet. Only on
 * a live link: once a link starts disconnecting, Motr's link loop stops before it sends what
 * is pending (ha/link.c, HA_LINK_OUTGOING_STATE_IDLE), so those confirmations are lost. */
static void confirm_write(struct m0_halon_interface *hi, struct m0_ha_link *l)
{
	struct wire_buf b = { 0 };

	if (l->hl_self || l->hl_state != LS_ALIVE || l->hl_conn == NULL ||
	    l->hl_rx_mark <= l->hl_ack_sent)
		return;
	if (wire_enc_ack(&b, WIRE_HA_ACK, l->hl_rx_mark) == 0)
		conn_send(hi, l->hl_conn, b.data, b.len);
	wire_buf_fini(&b);
	if (hi->log_msg)
		slog("link %p confirms tag %" PRIu64, (void *)l, l->hl_rx_mark);
	l->hl_ack_sent = l->hl_rx_mark;
}

static void cq_remove(struct m0_halon_interface *hi, struct m0_ha_link *l)
{
	if (!l->hl_cq_queued)
		return;
	if (l->hl_cq_prev == NULL)
		hi->cq_head = l->hl_cq_next;
	else
		l->hl_cq_prev->hl_cq_next = l->hl_cq_next;
	if (l->hl_cq_next == NULL)
		hi->cq_tail = l->hl_cq_prev;
	else
		l->hl_cq_next->hl_cq_prev = l->hl_cq_prev;
	l->hl_cq_next = l->hl_cq_prev = NULL;
	l->hl_cq_queued = false;
}

/* The I/O thread writes the link's confirmation after the delay (unless an HA message on the
 * link carries it first). The delay is the same for all: the queue stays in due order. */
static void confirm_later(struct m0_halon_interface *hi, struct m0_ha_link *l)
{
	if (l->hl_cq_queued)
		return;
	l->hl_cq_queued = true;
	l->hl_cq_due = mono_ns() + hi->confirm_delay_ns;
	l->hl_cq_next = NULL;
	l->hl_cq_prev = hi->cq_tail;
	if (hi->cq_tail == NULL)
		hi->cq_head = l;
	else
		hi->cq_tail->hl_cq_next = l;
	hi->cq_tail = l;
	if (!tls_io && hi->cq_head == l)
		io_wake(hi); /* its epoll_wait timeout may be later or infinite */
}

/* I/O thread: writes the confirmations that are due; returns the epoll timeout (ms) until the
 * next one, -1 for none. */
static int confirm_service(struct m0_halon_interface *hi)
{
	uint64_t now = mono_ns();

	while (hi->cq_head != NULL && hi->cq_head->hl_cq_due <= now) {
		struct m0_ha_link *l = hi->cq_head;

		cq_remove(hi, l);
		confirm_write(hi, l);
	}
	if (hi->cq_head == NULL)
		return -1;
	return (int)((hi->cq_head->hl_cq_due - now + 999999) / 1000000);
}

static struct rcv *rcv_new(void)
{
	return xcalloc(1, sizeof(struct rcv));
}

/* Queues msg_received for a message; r is owned by the link from now on. */
static void link_receive(struct m0_halon_interface *hi, struct m0_ha_link *l, struct rcv *r)
{
	struct item *it = item_new(IT_MSG, r->r_tag);

	it->i_rcv = r;
	/* Oldest first: delivered() usually confirms the oldest, found at once. */
	r->r_next = NULL;
	if (l->hl_rcvs_tail == NULL)
		l->hl_rcvs = r;
	else
		l->hl_rcvs_tail->r_next = r;
	l->hl_rcvs_tail = r;
	link_enqueue(hi, l, it);
}

static void link_start_disconnect(struct m0_halon_interface *hi, struct m0_ha_link *l)
{
	if (l->hl_state != LS_ALIVE)
		return;
	l->hl_state = LS_DISCONNECTING;
	if (hi->log_link)
		slog("link %p (%s) starts disconnecting", (void *)l, l->hl_ep);
	link_enqueue(hi, l, item_new(IT_IS_DISCONNECTING, 0));
}

static struct m0_ha_link *link_new(struct m0_halon_interface *hi, bool self,
				   const struct m0_fid *process, const char *ep)
{
	struct m0_ha_link *l = xcalloc(1, sizeof *l);

	l->hl_magic = LINK_MAGIC;
	l->hl_id = ++hi->link_seq;
	l->hl_self = self;
	l->hl_state = LS_ALIVE;
	l->hl_process = *process;
	l->hl_ep = xstrdup(ep);
	l->hl_next_tag = 1;
	l->hl_confirm_next = 1;
	l->hl_task.t_link = l;
	l->hl_prev = hi->links_tail;
	if (hi->links_tail == NULL)
		hi->links = l;
	else
		hi->links_tail->hl_next = l;
	hi->links_tail = l;
	ptrset_add(&hi->known, l);
	hi->links_allocated++;
	hi->links_live++;
	return l;
}

static void link_free(struct m0_halon_interface *hi, struct m0_ha_link *l)
{
	while (l->hl_qhead != NULL) {
		struct item *it = l->hl_qhead;

		l->hl_qhead = it->i_next;
		free(it); /* its rcv, if any, is on hl_rcvs */
	}
	while (l->hl_rcvs != NULL) {
		struct rcv *r = l->hl_rcvs;

		l->hl_rcvs = r->r_next;
		free(r);
	}
	free(l->hl_ep);
	l->hl_magic = 0;
	free(l);
	hi->links_allocated--;
}

/*
 * A link whose link_disconnected has returned, and that the locality thread has finished
 * with, moves from hi->links to the graveyard. Nothing of the stand-in points at it any more
 * (its connection was unbound by IT_FINISH, it has no work, timer or run queue entry left); it
 * stays only so that a stale pointer from the user is still recognised (a send on it fails
 * like Motr's assertion, the other calls ignore it). The graveyard keeps the hi->grave_max
 * most recent dead links and frees older ones: memory stays bounded however many processes
 * come and go. A pointer to a freed link is just unknown (or, if its memory was reused for a
 * new link, that link): the user has held on to it for grave_max link lifetimes.
 */
static void link_bury(struct m0_halon_interface *hi, struct m0_ha_link *l)
{
	if (l->hl_prev == NULL)
		hi->links = l->hl_next;
	else
		l->hl_prev->hl_next = l->hl_next;
	if (l->hl_next == NULL)
		hi->links_tail = l->hl_prev;
	else
		l->hl_next->hl_prev = l->hl_prev;
	l->hl_prev = NULL;
	l->hl_next = NULL;
	l->hl_buried = true;
	if (hi->grave_tail == NULL)
		hi->grave = l;
	else
		hi->grave_tail->hl_next = l;
	hi->grave_tail = l;
	hi->grave_nr++;
	while (hi->grave_nr > hi->grave_max) {
		struct m0_ha_link *old = hi->grave;

		hi->grave = old->hl_next;
		if (hi->grave == NULL)
			hi->grave_tail = NULL;
		hi->grave_nr--;
		ptrset_del(&hi->known, old);
		if (hi->self_link == old)
			hi->self_link = NULL;
		link_free(hi, old);
	}
}

/* ------------------------------------------------------------------ own events (locked) */

static void self_event(struct m0_halon_interface *hi, bool process, uint64_t event,
		       uint64_t type, const struct m0_fid *svc)
{
	struct m0_ha_link *l = hi->self_link;
	struct rcv *r = rcv_new();
	struct m0_ha_msg *m = &r->r_msg;

	m->hm_time = real_ns();
	if (process) {
		m->hm_fid = hi->process;
		m->hm_data.hed_type = M0_HA_MSG_EVENT_PROCESS;
		m->hm_data.u.hed_event_process.chp_event = event;
		m->hm_data.u.hed_event_process.chp_type = type;
		m->hm_data.u.hed_event_process.chp_pid = (uint64_t)getpid();
	} else {
		m->hm_fid = *svc;
		m->hm_source_process = hi->process;
		m->hm_data.hed_type = M0_HA_MSG_EVENT_SERVICE;
		m->hm_data.u.hed_event_service.chs_event = event;
		m->hm_data.u.hed_event_service.chs_type = type;
		m->hm_data.u.hed_event_service.chs_pid = (uint64_t)getpid();
	}
	l->hl_rx_tag += 2;
	r->r_tag = l->hl_rx_tag;
	link_receive(hi, l, r);
}

enum { SVC_TYPE_RMS = 4, SVC_TYPE_HA = 6 };

static void self_events_start(struct m0_halon_interface *hi)
{
	self_event(hi, true, M0_CONF_HA_PROCESS_STARTING, M0_CONF_HA_PROCESS_M0D, NULL);
	self_event(hi, false, M0_CONF_HA_SERVICE_STARTING, SVC_TYPE_HA, &hi->ha_svc);
	self_event(hi, false, M0_CONF_HA_SERVICE_STARTED, SVC_TYPE_HA, &hi->ha_svc);
	self_event(hi, false, M0_CONF_HA_SERVICE_STARTING, SVC_TYPE_RMS, &hi->rm_svc);
	self_event(hi, false, M0_CONF_HA_SERVICE_STARTED, SVC_TYPE_RMS, &hi->rm_svc);
	self_event(hi, true, M0_CONF_HA_PROCESS_STARTED, M0_CONF_HA_PROCESS_M0D, NULL);
}

static void self_events_stop(struct m0_halon_interface *hi)
{
	self_event(hi, true, M0_CONF_HA_PROCESS_STOPPING, M0_CONF_HA_PROCESS_M0D, NULL);
	self_event(hi, false, M0_CONF_HA_SERVICE_STOPPING, SVC_TYPE_RMS, &hi->rm_svc);
	self_event(hi, false, M0_CONF_HA_SERVICE_STOPPED, SVC_TYPE_RMS, &hi->rm_svc);
	self_event(hi, false, M0_CONF_HA_SERVICE_STOPPING, SVC_TYPE_HA, &hi->ha_svc);
	self_event(hi, false, M0_CONF_HA_SERVICE_STOPPED, SVC_TYPE_HA, &hi->ha_svc);
	self_event(hi, true, M0_CONF_HA_PROCESS_STOPPED, M0_CONF_HA_PROCESS_M0D, NULL);
}

/* An HA message sent on the self link: NVEC SET notes about processes drop their links. */
static void self_handle(struct m0_halon_interface *hi, const struct m0_ha_msg *msg)
{
	const struct m0_ha_msg_nvec *nv = &msg->hm_data.u.hed_nvec;

	if (msg->hm_data.hed_type != M0_HA_MSG_NVEC || nv->hmnv_type != M0_HA_NVEC_SET)
		return;
	for (uint64_t i = 0; i < nv->hmnv_nr; i++) {
		const struct m0_ha_note *n = &nv->hmnv_arr.hmna_arr[i];
		struct note_state *ns;

		if ((n->no_id.f_container >> 56) != PROCESS_FID_TYPE)
			continue;
		for (ns = hi->notes; ns != NULL; ns = ns->ns_next) {
			if (fid_eq(&ns->ns_fid, &n->no_id))
				break;
		}
		if (ns == NULL) {
			if (hi->notes_nr >= NOTES_MAX)
				assert_info("hii->hii_nvec_size < ARRAY_SIZE(hii->hii_nvec)",
					    "halon_interface_process_failure_check",
					    "Currently we don't support more than 4096 processes "
					    "connected to a single m0_halon_interface.");
			hi->notes_nr++;
			ns = xcalloc(1, sizeof *ns);
			ns->ns_fid = n->no_id;
			ns->ns_state = n->no_state;
			ns->ns_next = hi->notes;
			hi->notes = ns;
			if (hi->log_link)
				slog("first note for process " FID_F " (state %u): recorded only",
				     FID_P(&n->no_id), n->no_state);
			continue;
		}
		if (nv->hmnv_ignore_same_state && ns->ns_state == n->no_state)
			continue;
		ns->ns_state = n->no_state;
		if (n->no_state != M0_NC_FAILED)
			continue;
		/* m0_ha_process_failed(): every link of that process, the self link included */
		if (fid_eq(&n->no_id, &hi->process)) {
			slog("m0_ha_process_failed: disconnecting local link");
			hi->self_failed = true;
		}
		for (struct m0_ha_link *l = hi->links; l != NULL; l = l->hl_next) {
			if (l->hl_state == LS_ALIVE && fid_eq(&l->hl_process, &n->no_id))
				link_start_disconnect(hi, l);
		}
	}
}

/*
 * The local link's entrypoint re-request after HA noted its own process FAILED: Motr answers
 * it "disconnected previously" and the requester (HA's own side) panics.
 */
static void self_rerequest_check(struct m0_halon_interface *hi)
{
	if (hi->self_failed)
		assert_info("!rep->hae_disconnected_previously", "ha_entrypoint_state_cb",
			    "HA has already decided that this process has failed (ha/ha.c:304; "
			    "HA noted its own process FAILED on the self link)");
}

/* ------------------------------------------------------------------ entrypoint (locked) */

static void ep_task_queue(struct m0_halon_interface *hi, const struct epreq *r,
			  const char *git, uint64_t pid)
{
	struct ep_task *t = xcalloc(1, sizeof *t);

	t->et_task.t_ep = t;
	t->et_id = r->r_id;
	t->et_ep = xstrdup(r->r_ep);
	t->et_process = r->r_process;
	t->et_git = xstrdup(git);
	t->et_pid = pid;
	t->et_first = r->r_first;
	runq_push(hi, &t->et_task);
}

static struct epreq *epreq_new(struct m0_halon_interface *hi, struct conn *c, bool self,
			       bool first, uint64_t seq, const struct m0_fid *process,
			       const char *ep)
{
	struct epreq *r = xcalloc(1, sizeof *r);

	r->r_id.u_hi = 0;
	r->r_id.u_lo = ++hi->req_seq;
	r->r_conn = c;
	if (c != NULL)
		c->c_nreqs++;
	r->r_self = self;
	r->r_first = first;
	r->r_seq = seq;
	r->r_process = *process;
	r->r_ep = xstrdup(ep);
	r->r_next = hi->reqs;
	hi->reqs = r;
	return r;
}

static void epreq_free(struct epreq *r)
{
	free(r->r_ep);
	free(r);
}

static void self_request_issue(struct m0_halon_interface *hi, bool first)
{
	struct epreq *r = epreq_new(hi, NULL, true, first, 0, &hi->process, hi->endpoint);

	ep_task_queue(hi, r, STANDIN_GIT_REV, (uint64_t)getpid());
}

/* ------------------------------------------------------------------ locality threads */

static void run_item(struct m0_halon_interface *hi, struct m0_ha_link *l, struct item *it)
{
	uint64_t from;
	uint64_t to;

	switch (it->i_kind) {
	case IT_MSG:
		if (hi->log_msg)
			slog("link %p msg_received tag=%" PRIu64 " type=%" PRIu64 " fid=" FID_F,
			     (void *)l, it->i_rcv->r_tag, it->i_rcv->r_msg.hm_data.hed_type,
			     FID_P(&it->i_rcv->r_msg.hm_fid));
		/* it->i_rcv may be freed by delivered() from now on: do not touch it after. */
		hi->cb.msg_received(hi, l, &it->i_rcv->r_msg, it->i_tag);
		break;
	case IT_CONFIRM:
		pthread_mutex_lock(&hi->lock);
		from = l->hl_confirm_next;
		to = it->i_tag;
		if (to >= from)
			l->hl_confirm_next = to + 2;
		pthread_mutex_unlock(&hi->lock);
		for (uint64_t t = from; t <= to; t += 2) {
			if (hi->log_msg)
				slog("link %p msg_is_delivered tag=%" PRIu64, (void *)l, t);
			hi->cb.msg_is_delivered(hi, l, t);
		}
		break;
	case IT_IS_DISCONNECTING:
		if (hi->log_link)
			slog("link %p link_is_disconnecting", (void *)l);
		hi->cb.link_is_disconnecting(hi, l);
		break;
	case IT_FINISH: {
		struct rcv *rcvs;

		pthread_mutex_lock(&hi->lock);
		from = l->hl_confirm_next;
		to = l->hl_next_tag; /* exclusive */
		l->hl_confirm_next = to;
		pthread_mutex_unlock(&hi->lock);
		for (uint64_t t = from; t < to; t += 2) {
			if (hi->log_msg)
				slog("link %p msg_is_not_delivered tag=%" PRIu64, (void *)l, t);
			hi->cb.msg_is_not_delivered(hi, l, t);
		}
		pthread_mutex_lock(&hi->lock);
		if (l->hl_conn != NULL) {
			struct wire_buf b = { 0 };

			if (wire_enc_drop(&b) == 0)
				conn_send(hi, l->hl_conn, b.data, b.len);
			wire_buf_fini(&b);
			link_bind(hi, l, NULL);
		}
		l->hl_state = LS_DEAD;
		cq_remove(hi, l);
		rcvs = l->hl_rcvs;
		l->hl_rcvs = NULL;
		l->hl_rcvs_tail = NULL;
		pthread_mutex_unlock(&hi->lock);
		while (rcvs != NULL) {
			struct rcv *n = rcvs->r_next;

			free(rcvs);
			rcvs = n;
		}
		if (hi->log_link)
			slog("link %p link_disconnected", (void *)l);
		hi->cb.link_disconnected(hi, l);
		pthread_mutex_lock(&hi->lock);
		l->hl_gone = true;
		hi->links_live--;
		pthread_cond_broadcast(&hi->state_cv);
		pthread_mutex_unlock(&hi->lock);
		break;
	}
	}
}

static void run_ep(struct m0_halon_interface *hi, struct ep_task *t)
{
	if (hi->log_ep)
		slog("entrypoint_request req_id=%" PRIx64 ":%" PRIx64 " ep=%s proc=" FID_F
		     " pid=%" PRIu64 " first=%d",
		     t->et_id.u_hi, t->et_id.u_lo, t->et_ep, FID_P(&t->et_process), t->et_pid,
		     t->et_first ? 1 : 0);
	hi->cb.entrypoint_request(hi, &t->et_id, t->et_ep, &t->et_process, t->et_git, t->et_pid,
				  t->et_first);
}

static void ep_task_free(struct ep_task *t)
{
	free(t->et_ep);
	free(t->et_git);
	free(t);
}

static void *locality_main(void *arg)
{
	struct m0_halon_interface *hi = arg;

	tls_locality = true;
	pthread_mutex_lock(&hi->lock);
	while (!hi->loc_quit) {
		struct task *t;

		timers_fire(hi);
		t = runq_pop(hi);
		if (t == NULL) {
			if (hi->timers != NULL) {
				struct timespec ts = abs_mono(hi->timers->tm_due);

				pthread_cond_timedwait(&hi->loc_cv, &hi->lock, &ts);
			} else {
				pthread_cond_wait(&hi->loc_cv, &hi->lock);
			}
			continue;
		}
		if (t->t_link != NULL) {
			struct m0_ha_link *l = t->t_link;
			struct item *it = l->hl_qhead;

			if (it == NULL) { /* cannot happen: scheduled links have work */
				l->hl_scheduled = false;
				continue;
			}
			l->hl_qhead = it->i_next;
			if (l->hl_qhead == NULL)
				l->hl_qtail = NULL;
			if (it->i_kind == IT_MSG && l->hl_rx_queued-- == RX_BACKLOG)
				conn_dirty(hi, l->hl_conn); /* it may be read again */
			if (it->i_kind == IT_MSG && --hi->rx_total <= RX_TOTAL_MAX / 2 &&
			    hi->rx_held) {
				hi->rx_held = false; /* every connection may be read again */
				for (struct conn *c = hi->conns; c != NULL; c = c->c_next)
					conn_dirty(hi, c);
			}
			pthread_mutex_unlock(&hi->lock);
			run_item(hi, l, it);
			free(it);
			pthread_mutex_lock(&hi->lock);
			if (l->hl_gone) { /* that was IT_FINISH, the last item ever */
				l->hl_scheduled = false;
				link_bury(hi, l);
			} else if (l->hl_qhead != NULL && l->hl_ready) {
				runq_push(hi, &l->hl_task);
			} else {
				l->hl_scheduled = false;
			}
		} else {
			pthread_mutex_unlock(&hi->lock);
			run_ep(hi, t->t_ep);
			ep_task_free(t->t_ep);
			pthread_mutex_lock(&hi->lock);
		}
	}
	pthread_mutex_unlock(&hi->lock);
	return NULL;
}

/* ------------------------------------------------------------------ I/O thread (locked) */

static void conn_close(struct m0_halon_interface *hi, struct conn *c)
{
	if (c->c_close_error)
		slog("closing connection %" PRIu64 ": %s", c->c_id, c->c_why);
	else if (hi->log_link)
		slog("connection %" PRIu64 " closed: %s", c->c_id, c->c_why);
	if (c->c_prev == NULL)
		hi->conns = c->c_next;
	else
		c->c_prev->c_next = c->c_next;
	if (c->c_next != NULL)
		c->c_next->c_prev = c->c_prev;
	conn_unbind(c); /* the only link pointing at c is c->c_link */
	for (struct epreq *r = hi->reqs; c->c_nreqs > 0 && r != NULL; r = r->r_next) {
		if (r->r_conn == c) {
			r->r_conn = NULL;
			c->c_nreqs--;
		}
	}
	/* Not on hi->dirty: the callers took it off (or emptied the list). */
	(void)epoll_ctl(hi->epoll_fd, EPOLL_CTL_DEL, c->c_fd, NULL);
	close(c->c_fd);
	free(c->c_in);
	wire_buf_fini(&c->c_out);
	wire_buf_fini(&c->c_side);
	free(c);
}

/*
 * Writes what c has to send. With `unlocked` (the I/O thread's rounds), each send() runs
 * without hi->lock, so that senders (a broadcast to every link) are not held up by the I/O
 * thread's writes to a thousand sockets; what they add meanwhile goes to c_side and is moved
 * behind c_out afterwards. Only the I/O thread frees connections or closes their sockets, so
 * c stays valid while the lock is dropped.
 */
static void conn_flush_io(struct m0_halon_interface *hi, struct conn *c, bool unlocked)
{
	while (!c->c_close && c->c_out_off < c->c_out.len) {
		const uint8_t *p = c->c_out.data + c->c_out_off;
		size_t len = c->c_out.len - c->c_out_off;
		ssize_t n;
		int err;

		if (unlocked) {
			c->c_writing = true;
			pthread_mutex_unlock(&hi->lock);
		}
		n = send(c->c_fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
		err = errno;
		if (unlocked) {
			pthread_mutex_lock(&hi->lock);
			c->c_writing = false;
			if (c->c_side.len > 0) {
				if (wire_buf_append(&c->c_out, c->c_side.data, c->c_side.len) != 0)
					conn_mark_close(hi, c, true, "out of memory for output");
				c->c_side.len = 0;
			}
		}
		errno = err;

		if (n > 0) {
			c->c_out_off += (size_t)n;
		} else if (n < 0 && errno == EINTR) {
			continue;
		} else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
			break;
		} else {
			char why[128];

			snprintf(why, sizeof why, "send: %s", n < 0 ? strerror(errno) : "0 bytes");
			conn_mark_close(hi, c, false, why);
		}
	}
	if (c->c_out_off == c->c_out.len) {
		c->c_out.len = 0;
		c->c_out_off = 0;
	} else if (c->c_out_off > (1u << 20)) {
		memmove(c->c_out.data, c->c_out.data + c->c_out_off, c->c_out.len - c->c_out_off);
		c->c_out.len -= c->c_out_off;
		c->c_out_off = 0;
	}
}

static void conn_flush(struct m0_halon_interface *hi, struct conn *c)
{
	conn_flush_io(hi, c, false);
}

static int frame_ep_req(struct m0_halon_interface *hi, struct conn *c, const uint8_t *body,
			size_t n, const char **why)
{
	struct wire_ep_req *q = malloc(sizeof *q);
	struct epreq *r;

	if (q == NULL) {
		*why = "out of memory";
		return -ENOMEM;
	}
	if (wire_dec_ep_req(body, n, q, why) != 0) {
		free(q);
		return -EPROTO;
	}
	if (hi->state != HI_STARTING && hi->state != HI_STARTED) {
		slog("entrypoint request from %s ignored: the interface is stopping", q->endpoint);
		free(q);
		return 0;
	}
	r = epreq_new(hi, c, false, q->first_request, q->seq, &q->process, q->endpoint);
	r->r_cookie = q->cookie_expected;
	ep_task_queue(hi, r, q->git_rev, q->pid);
	free(q);
	return 0;
}

static int frame_msg(struct m0_halon_interface *hi, struct conn *c, const uint8_t *body,
		     size_t n, const char **why)
{
	struct rcv *r = rcv_new();
	struct m0_ha_link *l;
	uint64_t tag;

	if (wire_dec_msg(body, n, &tag, &r->r_msg, why) != 0) {
		free(r);
		return -EPROTO;
	}
	if (tag == 0 || (tag & 1) != 0 || tag <= c->c_last_rx_tag) {
		free(r);
		*why = "MSG tag is not even and increasing";
		return -EPROTO;
	}
	c->c_last_rx_tag = tag;
	l = c->c_link;
	if (l == NULL) {
		free(r);
		if (!c->c_ever_linked) {
			*why = "MSG before the entrypoint reply made a link";
			return -EPROTO;
		}
		slog("connection %" PRIu64 ": MSG tag %" PRIu64 " dropped: its link is gone",
		     c->c_id, tag);
		return 0;
	}
	if (l->hl_state != LS_ALIVE) {
		free(r);
		slog("link %p: MSG tag %" PRIu64 " dropped: the link is disconnecting", (void *)l,
		     tag);
		return 0;
	}
	r->r_tag = tag;
	link_receive(hi, l, r);
	return 0;
}

static int frame_ack(struct m0_halon_interface *hi, struct conn *c, const uint8_t *body,
		     size_t n, const char **why)
{
	struct m0_ha_link *l = c->c_link;
	uint64_t tag;

	if (wire_dec_ack(body, n, &tag, why) != 0)
		return -EPROTO;
	if (l == NULL || l->hl_state != LS_ALIVE) {
		if (hi->log_link)
			slog("connection %" PRIu64 ": ACK %" PRIu64 " ignored: no live link", c->c_id,
			     tag);
		return 0;
	}
	if ((tag & 1) == 0 || tag >= l->hl_next_tag) {
		slog("link %p: ACK for tag %" PRIu64 " ignored: no such HA message", (void *)l, tag);
		return 0;
	}
	if (tag <= l->hl_ack_hwm)
		return 0; /* already confirmed (a later ACK confirmed it) */
	l->hl_ack_hwm = tag;
	link_enqueue(hi, l, item_new(IT_CONFIRM, tag));
	return 0;
}

/* One whole frame (kind byte + body). 0, or -errno and *why (the connection is closed). */
static int frame_handle(struct m0_halon_interface *hi, struct conn *c, const uint8_t *p,
			size_t n, const char **why)
{
	switch (p[0]) {
	case WIRE_EP_REQ:
		return frame_ep_req(hi, c, p + 1, n - 1, why);
	case WIRE_MSG:
		return frame_msg(hi, c, p + 1, n - 1, why);
	case WIRE_ACK:
		return frame_ack(hi, c, p + 1, n - 1, why);
	default:
		*why = "unknown frame kind";
		return -EPROTO;
	}
}

static void conn_read(struct m0_halon_interface *hi, struct conn *c)
{
	size_t off = 0;
	ssize_t n;

	if (c->c_in_cap - c->c_in_len < READ_CHUNK && c->c_in_cap < IN_CAP_MAX) {
		size_t cap = c->c_in_cap == 0 ? 2 * READ_CHUNK : 2 * c->c_in_cap;
		uint8_t *p;

		if (cap > IN_CAP_MAX)
			cap = IN_CAP_MAX;
		p = realloc(c->c_in, cap);
		if (p == NULL) {
			conn_mark_close(hi, c, true, "out of memory for input");
			return;
		}
		c->c_in = p;
		c->c_in_cap = cap;
	}
	n = recv(c->c_fd, c->c_in + c->c_in_len, c->c_in_cap - c->c_in_len, MSG_DONTWAIT);
	if (n < 0) {
		char why[128];

		if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)
			return;
		snprintf(why, sizeof why, "recv: %s", strerror(errno));
		conn_mark_close(hi, c, false, why);
		return;
	}
	if (n == 0) {
		conn_mark_close(hi, c, false,
				c->c_in_len > 0 ? "peer closed mid-frame" : "peer closed");
		return;
	}
	c->c_in_len += (size_t)n;
	while (!c->c_close) {
		const char *why = NULL;
		size_t flen;
		int rc = wire_frame_peek(c->c_in + off, c->c_in_len - off, &flen, &why);

		if (rc < 0) {
			conn_mark_close(hi, c, true, why);
			break;
		}
		if (rc == 0)
			break;
		if (frame_handle(hi, c, c->c_in + off + WIRE_HDR, flen - WIRE_HDR, &why) != 0) {
			char buf[140];

			snprintf(buf, sizeof buf, "bad frame 0x%02x: %s", c->c_in[off + WIRE_HDR],
				 why == NULL ? "?" : why);
			conn_mark_close(hi, c, true, buf);
			break;
		}
		off += flen;
	}
	if (off > 0) {
		memmove(c->c_in, c->c_in + off, c->c_in_len - off);
		c->c_in_len -= off;
	}
}

static void listener_accept(struct m0_halon_interface *hi)
{
	for (;;) {
		int fd = accept4(hi->listen_fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
		struct conn *c;

		if (fd < 0) {
			if (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR &&
			    errno != ECONNABORTED)
				slog("accept: %s", strerror(errno));
			return;
		}
		/* Small request/reply frames: do not let Nagle hold them back. */
		(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &(int){1}, sizeof(int));
		c = xcalloc(1, sizeof *c);
		c->c_fd = fd;
		c->c_id = ++hi->conn_seq;
		c->c_ev = EPOLLIN;
		if (epoll_ctl(hi->epoll_fd, EPOLL_CTL_ADD, fd,
			      &(struct epoll_event){ .events = c->c_ev, .data.ptr = c }) != 0) {
			slog("connection %" PRIu64 " refused: epoll_ctl: %s", c->c_id,
			     strerror(errno));
			close(fd);
			free(c);
			continue;
		}
		c->c_next = hi->conns;
		if (hi->conns != NULL)
			hi->conns->c_prev = c;
		hi->conns = c;
		if (hi->log_link)
			slog("connection %" PRIu64 " accepted", c->c_id);
	}
}

/* Sets c's epoll events to what it needs now. I/O thread. */
static void conn_rearm(struct m0_halon_interface *hi, struct conn *c)
{
	uint32_t ev = 0;

	if (!hi->rx_held && (c->c_link == NULL || c->c_link->hl_rx_queued < RX_BACKLOG))
		ev |= EPOLLIN;
	if (c->c_out_off < c->c_out.len)
		ev |= EPOLLOUT;
	if (ev == c->c_ev)
		return;
	/* With no events, epoll still reports EPOLLHUP / EPOLLERR, as poll() did. */
	if (epoll_ctl(hi->epoll_fd, EPOLL_CTL_MOD, c->c_fd,
		      &(struct epoll_event){ .events = ev, .data.ptr = c }) != 0) {
		char why[128];

		snprintf(why, sizeof why, "epoll_ctl: %s", strerror(errno));
		conn_mark_close(hi, c, true, why);
		return;
	}
	c->c_ev = ev;
}

/* Flushes, re-arms or closes the connections on hi->dirty. I/O thread. */
static void dirty_service(struct m0_halon_interface *hi)
{
	struct conn *c;

	while ((c = hi->dirty) != NULL) {
		hi->dirty = c->c_dnext;
		c->c_dnext = NULL;
		/* c_dirty stays set meanwhile: a close marked below must not queue c again */
		if (!c->c_close)
			conn_flush_io(hi, c, true);
		if (!c->c_close)
			conn_rearm(hi, c);
		if (c->c_close) {
			conn_close(hi, c);
			continue;
		}
		c->c_dirty = false;
	}
}

/*
 * The I/O thread. epoll (level-triggered) over the wake-up pipe, the listener and every
 * connection; a connection's events are changed only when what it needs changes (EPOLLOUT
 * while output is pending, EPOLLIN unless its link has RX_BACKLOG received messages queued or
 * all links together RX_TOTAL_MAX).
 * An iteration costs the connections epoll reports plus those on hi->dirty, not all of them.
 */
static void *io_main(void *arg)
{
	struct m0_halon_interface *hi = arg;
	struct epoll_event ev[IO_EVENTS];

	tls_io = true;
	pthread_mutex_lock(&hi->lock);
	while (!hi->io_quit) {
		int nr;

		int timeout = confirm_service(hi);

		dirty_service(hi);
		pthread_mutex_unlock(&hi->lock);
		nr = epoll_wait(hi->epoll_fd, ev, IO_EVENTS, timeout);
		if (nr < 0 && errno != EINTR)
			slog("epoll_wait: %s", strerror(errno));
		pthread_mutex_lock(&hi->lock);
		/* The connections reported are still valid: only dirty_service (this thread, and
		 * never between epoll_wait and here) frees connections, and it deletes them from
		 * the epoll set first. */
		for (int i = 0; i < nr; i++) {
			void *p = ev[i].data.ptr;
			struct conn *c;

			if (p == &hi->wake_rd) {
				char buf[64];

				while (read(hi->wake_rd, buf, sizeof buf) > 0) {
				}
				hi->wake_pending = false;
				continue;
			}
			if (p == &hi->listen_fd) {
				listener_accept(hi);
				continue;
			}
			c = p;
			/* While held, only a hang-up or an error is read (to see the close). */
			if ((ev[i].events & (hi->rx_held ? 0 : EPOLLIN)) != 0 ||
			    ((ev[i].events & (EPOLLHUP | EPOLLERR)) != 0 && !c->c_close))
				if (!c->c_close)
					conn_read(hi, c);
			if ((ev[i].events & EPOLLOUT) != 0 && !c->c_close)
				conn_flush_io(hi, c, true);
			if (!c->c_close)
				conn_rearm(hi, c);
		}
	}
	/* Last chance for queued frames (DROPs), then close everything. */
	for (struct conn *c = hi->conns; c != NULL; c = c->c_next)
		c->c_dirty = true; /* so that a close marked by conn_flush does not queue it */
	hi->dirty = NULL;
	while (hi->conns != NULL) {
		struct conn *c = hi->conns;

		conn_flush(hi, c);
		if (!c->c_close)
			snprintf(c->c_why, sizeof c->c_why, "interface stopped");
		c->c_close_error = false;
		conn_close(hi, c);
	}
	pthread_mutex_unlock(&hi->lock);
	return NULL;
}

/* ------------------------------------------------------------------ init / fini */

/*
 * The node UUID, as Motr keeps it (lib/user_space/uuuid.c): a static string, the nil UUID at
 * first; init copies at most 36 characters of a non-NULL node_uuid into it (NULL leaves the
 * previous string), and Motr's m0_init() must parse it (lib/uuid.c m0_uuid_parse): 8-4-4-4-12
 * hex digits with dashes, or 32 hex digits, nothing after.
 */
enum { UUID_STRLEN = 36 };
static char g_node_uuid[UUID_STRLEN + 1] = "00000000-0000-0000-0000-000000000000";

/* n hex digits at s (stops at the NUL, so never reads past the string). */
static bool hex_run(const char *s, int n)
{
	for (int i = 0; i < n; i++) {
		if (s[i] == '\0' || !isxdigit((unsigned char)s[i]))
			return false;
	}
	return true;
}

static bool uuid_parses(const char *s)
{
	return (hex_run(s, 8) && s[8] == '-' && hex_run(s + 9, 4) && s[13] == '-' &&
		hex_run(s + 14, 4) && s[18] == '-' && hex_run(s + 19, 4) && s[23] == '-' &&
		hex_run(s + 24, 12) && s[36] == '\0') ||
	       (hex_run(s, 8) && hex_run(s + 8, 4) && hex_run(s + 12, 4) && hex_run(s + 16, 4) &&
		hex_run(s + 20, 12) && s[32] == '\0');
}

int m0_halon_interface_init(struct m0_halon_interface **hi_out, const char *build_git_rev_id,
			    const char *build_configure_opts, const char *debug_options,
			    const char *node_uuid)
{
	struct m0_halon_interface *hi;
	const char *dbg = debug_options == NULL ? "" : debug_options;
	const char *env = getenv("HAX_STANDIN_LOG");
	bool all = env != NULL && env[0] != '\0' && strcmp(env, "0") != 0;
	pthread_condattr_t ca;

	if (hi_out == NULL)
		return -EINVAL;
	*hi_out = NULL;
	if (strstr(dbg, "disable-compatibility-check") == NULL &&
	    (build_git_rev_id == NULL || strcmp(build_git_rev_id, STANDIN_GIT_REV) != 0 ||
	     strcmp(build_configure_opts == NULL ? "" : build_configure_opts,
		    STANDIN_CONFIGURE_OPTS) != 0)) {
		slog("init: build strings (git rev '%s', configure options '%s') do not match the "
		     "stand-in's ('%s', '%s'); pass disable-compatibility-check to skip the check",
		     build_git_rev_id == NULL ? "(null)" : build_git_rev_id,
		     build_configure_opts == NULL ? "(null)" : build_configure_opts,
		     STANDIN_GIT_REV, STANDIN_CONFIGURE_OPTS);
		return -EINVAL;
	}
	pthread_mutex_lock(&g_lock);
	if (g_hi != NULL) {
		pthread_mutex_unlock(&g_lock);
		slog("init: an interface already exists in this process");
		return -EEXIST;
	}
	if (node_uuid != NULL) {
		strncpy(g_node_uuid, node_uuid, UUID_STRLEN);
		g_node_uuid[UUID_STRLEN] = '\0';
	}
	if (!uuid_parses(g_node_uuid)) {
		pthread_mutex_unlock(&g_lock);
		slog("init: Unable to parse node UUID string '%s' (node_uuid %s%s%s)", g_node_uuid,
		     node_uuid == NULL ? "NULL: the last one given" : "'",
		     node_uuid == NULL ? "" : node_uuid, node_uuid == NULL ? "" : "'");
		return -EINVAL;
	}
	hi = calloc(1, sizeof *hi);
	if (hi == NULL) {
		pthread_mutex_unlock(&g_lock);
		return -ENOMEM;
	}
	pthread_mutex_init(&hi->lock, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&hi->loc_cv, &ca);
	pthread_cond_init(&hi->state_cv, &ca);
	pthread_condattr_destroy(&ca);
	hi->state = HI_INIT;
	hi->main_thread = pthread_self();
	hi->log_ep = all || strstr(dbg, "log-entrypoint") != NULL;
	hi->log_link = all || strstr(dbg, "log-link") != NULL;
	hi->log_msg = all || strstr(dbg, "log-msg") != NULL;
	hi->listen_fd = -1;
	hi->wake_rd = -1;
	hi->wake_wr = -1;
	hi->epoll_fd = -1;
	__atomic_store_n(&g_hi, hi, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&g_lock);
	*hi_out = hi;
	if (hi->log_ep || hi->log_link || hi->log_msg)
		slog("init done (debug options '%s')", dbg);
	return 0;
}

static void threads_stop(struct m0_halon_interface *hi)
{
	pthread_mutex_lock(&hi->lock);
	hi->io_quit = true;
	io_wake(hi);
	pthread_mutex_unlock(&hi->lock);
	if (hi->io_running)
		pthread_join(hi->io_thread, NULL);
	hi->io_running = false;
	pthread_mutex_lock(&hi->lock);
	hi->loc_quit = true;
	pthread_cond_broadcast(&hi->loc_cv);
	pthread_mutex_unlock(&hi->lock);
	for (int i = 0; i < hi->loc_nr; i++)
		pthread_join(hi->loc[i], NULL);
	hi->loc_nr = 0;
}

static void fds_close(struct m0_halon_interface *hi)
{
	if (hi->listen_fd >= 0)
		close(hi->listen_fd);
	if (hi->wake_rd >= 0)
		close(hi->wake_rd);
	if (hi->wake_wr >= 0)
		close(hi->wake_wr);
	if (hi->epoll_fd >= 0)
		close(hi->epoll_fd);
	hi->listen_fd = hi->wake_rd = hi->wake_wr = hi->epoll_fd = -1;
}

static void hi_free_state(struct m0_halon_interface *hi)
{
	struct task *t;

	while ((t = runq_pop(hi)) != NULL) {
		if (t->t_ep != NULL)
			ep_task_free(t->t_ep);
	}
	while (hi->timers != NULL) {
		struct timer *tm = hi->timers;

		hi->timers = tm->tm_next;
		free(tm->tm_item);
		free(tm);
	}
	while (hi->links != NULL) {
		struct m0_ha_link *l = hi->links;

		hi->links = l->hl_next;
		link_free(hi, l);
	}
	while (hi->grave != NULL) {
		struct m0_ha_link *l = hi->grave;

		hi->grave = l->hl_next;
		link_free(hi, l);
	}
	hi->links_tail = NULL;
	hi->cq_head = hi->cq_tail = NULL;
	hi->grave_tail = NULL;
	hi->grave_nr = 0;
	ptrset_fini(&hi->known);
	hi->self_link = NULL;
	while (hi->reqs != NULL) {
		struct epreq *r = hi->reqs;

		hi->reqs = r->r_next;
		epreq_free(r);
	}
	while (hi->notes != NULL) {
		struct note_state *ns = hi->notes;

		hi->notes = ns->ns_next;
		free(ns);
	}
	hi->notes_nr = 0;
	hi->dirty = NULL;
	while (hi->conns != NULL) { /* only if the I/O thread never ran */
		struct conn *c = hi->conns;

		hi->conns = c->c_next;
		close(c->c_fd);
		free(c->c_in);
		wire_buf_fini(&c->c_out);
		wire_buf_fini(&c->c_side);
		free(c);
	}
	free(hi->endpoint);
	hi->endpoint = NULL;
}

void m0_halon_interface_fini(struct m0_halon_interface *hi)
{
	enum hi_state st;

	if (!hi_valid(hi)) {
		slog("fini: not the current interface (%p); ignored", (void *)hi);
		return;
	}
	if (tls_locality) {
		slog("fini called from a callback: refused (it would deadlock)");
		return;
	}
	if (!pthread_equal(pthread_self(), hi->main_thread))
		slog("fini: called on a thread other than the init thread");
	pthread_mutex_lock(&hi->lock);
	st = hi->state;
	pthread_mutex_unlock(&hi->lock);
	if (st == HI_STARTED) {
		slog("fini without stop: stopping first");
		m0_halon_interface_stop(hi);
	} else if (st == HI_STARTING || st == HI_STOPPING) {
		slog("fini while start or stop is running: refused");
		return;
	}
	if (__atomic_load_n(&hi->main_adopted, __ATOMIC_SEQ_CST) ||
	    __atomic_load_n(&hi->adopted_live, __ATOMIC_SEQ_CST) > 0) {
		slog("fini: %s: Motr's addb2 machines are still out",
		     hi->main_adopted ? "the init thread was adopted" :
					"an adopted thread was not shunned");
		assert_fail("sys->sy_total == 0", "m0_addb2_sys_fini");
	}
	pthread_mutex_lock(&g_lock);
	__atomic_store_n(&g_hi, NULL, __ATOMIC_RELEASE);
	pthread_mutex_unlock(&g_lock);
	threads_stop(hi); /* no-op unless stop could not run */
	fds_close(hi);
	hi_free_state(hi);
	pthread_cond_destroy(&hi->loc_cv);
	pthread_cond_destroy(&hi->state_cv);
	pthread_mutex_destroy(&hi->lock);
	free(hi);
}

/* ------------------------------------------------------------------ start / stop */

/*
 * A new HA cookie, as Motr's m0_ha_cookie_record() (pid, start time, a UUID) folded into 64
 * bits: never 0 (0 means "no cookie" on the wire), different for every interface instance.
 */
static uint64_t cookie_new(void)
{
	static uint64_t counter;
	uint64_t x = real_ns() ^ ((uint64_t)getpid() << 40) ^
		     (__atomic_add_fetch(&counter, 1, __ATOMIC_SEQ_CST) << 56) ^ mono_ns();

	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return x == 0 ? 1 : x;
}

/* "inet:tcp:127.0.0.1@PORT" -> PORT (1..65535), else -EINVAL. */
static int endpoint_port(const char *ep)
{
	static const char prefix[] = "inet:tcp:127.0.0.1@";
	const char *p;
	long port = 0;

	if (ep == NULL || strncmp(ep, prefix, sizeof prefix - 1) != 0)
		return -EINVAL;
	p = ep + sizeof prefix - 1;
	if (*p == '\0' || strlen(p) > 5)
		return -EINVAL;
	for (; *p != '\0'; p++) {
		if (*p < '0' || *p > '9')
			return -EINVAL;
		port = port * 10 + (*p - '0');
	}
	return port >= 1 && port <= 65535 ? (int)port : -EINVAL;
}

static int listen_on(int port, int *fd_out)
{
	struct sockaddr_in sa = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	int one = 1;
	int fd;
	int rc;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) != 0 ||
	    bind(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || listen(fd, 128) != 0) {
		rc = -errno;
		close(fd);
		return rc;
	}
	*fd_out = fd;
	return 0;
}

int m0_halon_interface_start(
	struct m0_halon_interface *hi, const char *local_rpc_endpoint,
	const struct m0_fid *process_fid, const struct m0_fid *ha_service_fid,
	const struct m0_fid *rm_service_fid,
	void (*entrypoint_request_cb)(struct m0_halon_interface *hi,
				      const struct m0_uint128 *req_id,
				      const char *remote_rpc_endpoint,
				      const struct m0_fid *process_fid, const char *git_rev_id,
				      uint64_t pid, bool first_request),
	void (*msg_received_cb)(struct m0_halon_interface *hi, struct m0_ha_link *hl,
				const struct m0_ha_msg *msg, uint64_t tag),
	void (*msg_is_delivered_cb)(struct m0_halon_interface *hi, struct m0_ha_link *hl,
				    uint64_t tag),
	void (*msg_is_not_delivered_cb)(struct m0_halon_interface *hi, struct m0_ha_link *hl,
					uint64_t tag),
	void (*link_connected_cb)(struct m0_halon_interface *hi, const struct m0_uint128 *req_id,
				  struct m0_ha_link *link),
	void (*link_reused_cb)(struct m0_halon_interface *hi, const struct m0_uint128 *req_id,
			       struct m0_ha_link *link),
	void (*link_absent_cb)(struct m0_halon_interface *hi, const struct m0_uint128 *req_id),
	void (*link_is_disconnecting_cb)(struct m0_halon_interface *hi, struct m0_ha_link *hl),
	void (*link_disconnected_cb)(struct m0_halon_interface *hi, struct m0_ha_link *link))
{
	const char *env = getenv("HAX_STANDIN_RPC_TIMEOUT_MS");
	const char *graves = getenv("HAX_STANDIN_LINK_GRAVEYARD");
	const char *cdelay = getenv("HAX_STANDIN_CONFIRM_DELAY_MS");
	int fds[2];
	int port;
	int rc;

	if (!hi_valid(hi)) {
		slog("start: not the current interface");
		return -EINVAL;
	}
	if (process_fid == NULL || ha_service_fid == NULL || rm_service_fid == NULL ||
	    entrypoint_request_cb == NULL || msg_received_cb == NULL ||
	    msg_is_delivered_cb == NULL || msg_is_not_delivered_cb == NULL ||
	    link_connected_cb == NULL || link_reused_cb == NULL || link_absent_cb == NULL ||
	    link_is_disconnecting_cb == NULL || link_disconnected_cb == NULL) {
		slog("start: a fid or a callback is NULL");
		return -EINVAL;
	}
	port = endpoint_port(local_rpc_endpoint);
	if (port < 0) {
		slog("start: unsupported endpoint '%s' (want inet:tcp:127.0.0.1@PORT)",
		     local_rpc_endpoint == NULL ? "(null)" : local_rpc_endpoint);
		return port;
	}
	if (tls_locality) {
		slog("start called from a callback: refused");
		return -EDEADLK;
	}
	pthread_mutex_lock(&hi->lock);
	if (hi->state != HI_INIT) {
		pthread_mutex_unlock(&hi->lock);
		slog("start: the interface was already started");
		return -EALREADY;
	}
	hi->state = HI_STARTING;
	pthread_mutex_unlock(&hi->lock);
	if (!pthread_equal(pthread_self(), hi->main_thread))
		slog("start: called on a thread other than the init thread");

	rc = listen_on(port, &hi->listen_fd);
	if (rc != 0) {
		slog("start: cannot listen on 127.0.0.1:%d: %s", port, strerror(-rc));
		goto fail;
	}
	if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) != 0) {
		rc = -errno;
		goto fail;
	}
	hi->wake_rd = fds[0];
	hi->wake_wr = fds[1];
	hi->epoll_fd = epoll_create1(EPOLL_CLOEXEC);
	/* data.ptr tells the pipe and the listener from connections */
	if (hi->epoll_fd < 0 ||
	    epoll_ctl(hi->epoll_fd, EPOLL_CTL_ADD, hi->wake_rd,
		      &(struct epoll_event){ .events = EPOLLIN, .data.ptr = &hi->wake_rd }) != 0 ||
	    epoll_ctl(hi->epoll_fd, EPOLL_CTL_ADD, hi->listen_fd,
		      &(struct epoll_event){ .events = EPOLLIN,
					     .data.ptr = &hi->listen_fd }) != 0) {
		rc = -errno;
		slog("start: epoll: %s", strerror(errno));
		goto fail;
	}
	hi->endpoint = xstrdup(local_rpc_endpoint);
	hi->process = *process_fid;
	hi->ha_svc = *ha_service_fid;
	hi->rm_svc = *rm_service_fid;
	hi->cookie = cookie_new();
	hi->rpc_timeout_ns = (uint64_t)DEFAULT_RPC_TIMEOUT_MS * 1000000ULL;
	if (env != NULL && env[0] != '\0')
		hi->rpc_timeout_ns = strtoull(env, NULL, 10) * 1000000ULL;
	hi->confirm_delay_ns = (uint64_t)DEFAULT_CONFIRM_DELAY_MS * 1000000ULL;
	if (cdelay != NULL && cdelay[0] != '\0')
		hi->confirm_delay_ns = strtoull(cdelay, NULL, 10) * 1000000ULL;
	hi->grave_max = LINK_GRAVEYARD;
	if (graves != NULL && graves[0] != '\0') /* tests: a small graveyard */
		hi->grave_max = (size_t)strtoull(graves, NULL, 10);
	hi->cb = (struct callbacks){
		.entrypoint_request = entrypoint_request_cb,
		.msg_received = msg_received_cb,
		.msg_is_delivered = msg_is_delivered_cb,
		.msg_is_not_delivered = msg_is_not_delivered_cb,
		.link_connected = link_connected_cb,
		.link_reused = link_reused_cb,
		.link_absent = link_absent_cb,
		.link_is_disconnecting = link_is_disconnecting_cb,
		.link_disconnected = link_disconnected_cb,
	};
	hi->io_quit = false;
	hi->loc_quit = false;
	rc = -pthread_create(&hi->io_thread, NULL, io_main, hi);
	if (rc != 0)
		goto fail;
	hi->io_running = true;
	for (int i = 0; i < LOCALITY_NR; i++) {
		rc = -pthread_create(&hi->loc[i], NULL, locality_main, hi);
		if (rc != 0)
			goto fail;
		hi->loc_nr++;
	}
	pthread_mutex_lock(&hi->lock);
	self_request_issue(hi, true);
	while (!hi->self_connected)
		pthread_cond_wait(&hi->state_cv, &hi->lock);
	hi->state = HI_STARTED;
	pthread_mutex_unlock(&hi->lock);
	if (hi->log_ep)
		slog("start done: %s process " FID_F, hi->endpoint, FID_P(&hi->process));
	return 0;
fail:
	threads_stop(hi);
	fds_close(hi);
	pthread_mutex_lock(&hi->lock);
	hi_free_state(hi);
	hi->state = HI_INIT;
	pthread_mutex_unlock(&hi->lock);
	return rc;
}

/* Waits on state_cv until pred(hi) or the deadline; false on timeout. Under the lock. */
static bool wait_until(struct m0_halon_interface *hi, bool (*pred)(struct m0_halon_interface *),
		       uint64_t deadline)
{
	while (!pred(hi)) {
		struct timespec ts = abs_mono(deadline);

		if (mono_ns() >= deadline)
			return false;
		pthread_cond_timedwait(&hi->state_cv, &hi->lock, &ts);
	}
	return true;
}

static bool self_events_delivered(struct m0_halon_interface *hi)
{
	return hi->self_link == NULL || hi->self_link->hl_rcvs == NULL;
}

static bool all_links_gone(struct m0_halon_interface *hi)
{
	return hi->links_live == 0;
}

void m0_halon_interface_stop(struct m0_halon_interface *hi)
{
	struct m0_ha_link *self;

	if (!hi_valid(hi)) {
		slog("stop: not the current interface; ignored");
		return;
	}
	if (tls_locality) {
		slog("stop called from a callback: refused (it would deadlock)");
		return;
	}
	pthread_mutex_lock(&hi->lock);
	if (hi->state != HI_STARTED) {
		pthread_mutex_unlock(&hi->lock);
		slog("stop: the interface is not started (or already stopped); ignored");
		return;
	}
	self_rerequest_check(hi);
	hi->state = HI_STOPPING;
	if (hi->log_ep)
		slog("stopping");
	self = hi->self_link;
	if (self != NULL && self->hl_state == LS_ALIVE) {
		self_events_stop(hi);
		if (!wait_until(hi, self_events_delivered,
				mono_ns() + (uint64_t)STOP_EVENTS_WAIT_MS * 1000000ULL))
			slog("stop: own STOP events not all confirmed with delivered() in %d ms",
			     STOP_EVENTS_WAIT_MS);
	}
	if (self != NULL)
		link_start_disconnect(hi, self);
	for (struct m0_ha_link *l = hi->links; l != NULL; l = l->hl_next)
		link_start_disconnect(hi, l);
	if (!wait_until(hi, all_links_gone,
			mono_ns() + hi->rpc_timeout_ns +
				(uint64_t)STOP_LINKS_EXTRA_MS * 1000000ULL))
		slog("stop: %u link(s) did not finish disconnecting (was disconnect() called?)",
		     hi->links_live);
	pthread_mutex_unlock(&hi->lock);
	threads_stop(hi);
	pthread_mutex_lock(&hi->lock);
	hi->state = HI_STOPPED;
	pthread_mutex_unlock(&hi->lock);
	fds_close(hi);
	if (hi->log_ep)
		slog("stopped");
}

/* ------------------------------------------------------------------ entrypoint reply */

/* HA's own request was answered rc 0: its own events flow and start returns. Locked. */
static void self_link_up(struct m0_halon_interface *hi)
{
	if (hi->self_connected)
		return;
	self_events_start(hi);
	hi->self_connected = true;
	pthread_cond_broadcast(&hi->state_cv);
}

void m0_halon_interface_entrypoint_reply(struct m0_halon_interface *hi,
					 const struct m0_uint128 *req_id, int rc,
					 uint32_t confd_nr, const struct m0_fid *confd_fid_data,
					 const char **confd_eps_data, uint32_t confd_quorum,
					 const struct m0_fid *rm_fid, const char *rm_eps)
{
	struct wire_buf b = { 0 };
	struct epreq **pp;
	struct epreq *r;
	struct m0_ha_link *l = NULL;
	struct m0_uint128 id;
	uint8_t decision = WIRE_LINK_NONE;
	bool stopping;
	int erc;

	if (!hi_valid(hi) || req_id == NULL) {
		slog("entrypoint_reply: bad interface or NULL req_id; ignored");
		return;
	}
	id = *req_id;
	/* Encode first (no lock); seq and link decision are patched in below. */
	erc = wire_enc_ep_rep(&b, 0, rc, WIRE_LINK_NONE, hi->cookie, confd_nr, confd_fid_data,
			      (const char *const *)confd_eps_data, confd_quorum, rm_fid, rm_eps);
	if (erc != 0) {
		slog("entrypoint_reply %" PRIx64 ":%" PRIx64 ": the reply cannot be encoded (%s: "
		     "confd_nr %u, strings up to 4096 bytes, 1 MiB in all); replying rc=%d instead",
		     id.u_hi, id.u_lo, strerror(-erc), confd_nr, erc);
		rc = erc;
		erc = wire_enc_ep_rep(&b, 0, rc, WIRE_LINK_NONE, hi->cookie, 0, NULL, NULL, 0, NULL,
				      NULL);
		STANDIN_ASSERT(erc == 0);
	}
	pthread_mutex_lock(&hi->lock);
	for (pp = &hi->reqs; *pp != NULL; pp = &(*pp)->r_next) {
		if ((*pp)->r_id.u_hi == id.u_hi && (*pp)->r_id.u_lo == id.u_lo)
			break;
	}
	r = *pp;
	if (r == NULL) {
		bool old = id.u_hi == 0 && id.u_lo >= 1 && id.u_lo <= hi->req_seq;

		pthread_mutex_unlock(&hi->lock);
		wire_buf_fini(&b);
		slog("entrypoint_reply for %s request %" PRIx64 ":%" PRIx64 " ignored",
		     old ? "an already answered" : "an unknown", id.u_hi, id.u_lo);
		return;
	}
	*pp = r->r_next;
	if (r->r_conn != NULL)
		r->r_conn->c_nreqs--;
	stopping = !r->r_self && hi->state != HI_STARTING && hi->state != HI_STARTED;
	if (rc == 0 && stopping) {
		slog("entrypoint_reply %" PRIx64 ":%" PRIx64 ": the interface is stopping; "
		     "replying -ESHUTDOWN", id.u_hi, id.u_lo);
		rc = -ESHUTDOWN;
		wire_buf_fini(&b);
		erc = wire_enc_ep_rep(&b, 0, rc, WIRE_LINK_NONE, hi->cookie, 0, NULL, NULL, 0, NULL,
				      NULL);
		STANDIN_ASSERT(erc == 0);
	}
	if (r->r_self) {
		if (hi->self_link == NULL) {
			l = link_new(hi, true, &r->r_process, r->r_ep);
			hi->self_link = l;
			decision = WIRE_LINK_CONNECTED;
		} else {
			l = hi->self_link;
			decision = WIRE_LINK_REUSED;
		}
	} else if (!stopping) {
		/* Motr's ha_link_handle(): decided whatever the rc */
		struct m0_ha_link *live = NULL;

		for (struct m0_ha_link *k = hi->links; k != NULL; k = k->hl_next) {
			if (!k->hl_self && k->hl_state == LS_ALIVE &&
			    fid_eq(&k->hl_process, &r->r_process))
				live = k; /* the newest one */
		}
		if (r->r_first) {
			l = link_new(hi, false, &r->r_process, r->r_ep);
			link_bind(hi, l, r->r_conn);
			decision = WIRE_LINK_CONNECTED;
		} else if (live != NULL) {
			l = live;
			link_bind(hi, l, r->r_conn);
			free(l->hl_ep);
			l->hl_ep = xstrdup(r->r_ep);
			decision = WIRE_LINK_REUSED;
		} else if (r->r_cookie == hi->cookie) {
			/* "link had been disconnected previously": the process must die */
			decision = WIRE_LINK_ABSENT;
		} else {
			/* another HA's cookie (HA restarted): Motr's "reconnect case", a new link */
			l = link_new(hi, false, &r->r_process, r->r_ep);
			link_bind(hi, l, r->r_conn);
			decision = WIRE_LINK_CONNECTED;
		}
	}
	if (!r->r_self) {
		wire_ep_rep_patch(b.data, r->r_seq, decision);
		if (r->r_conn != NULL)
			conn_send(hi, r->r_conn, b.data, b.len);
		else
			slog("entrypoint_reply %" PRIx64 ":%" PRIx64 ": the requesting connection "
			     "is closed", id.u_hi, id.u_lo);
	} else if (rc != 0) {
		/* Like Motr, ask again at once (not first: the link exists); pacing is the
		 * replier's business. */
		self_request_issue(hi, false);
	}
	pthread_mutex_unlock(&hi->lock);
	wire_buf_fini(&b);
	if (hi->log_ep)
		slog("entrypoint_reply %" PRIx64 ":%" PRIx64 " rc=%d decision=%s link=%p", id.u_hi,
		     id.u_lo, rc,
		     (const char *[]){ "connected", "reused", "absent", "none" }[decision],
		     (void *)l);

	/* The link callbacks run here, on the caller's thread, without the lock. */
	switch (decision) {
	case WIRE_LINK_CONNECTED:
		hi->cb.link_connected(hi, &id, l);
		pthread_mutex_lock(&hi->lock);
		l->hl_ready = true;
		if (r->r_self && rc == 0)
			self_link_up(hi);
		link_kick(hi, l);
		pthread_mutex_unlock(&hi->lock);
		break;
	case WIRE_LINK_REUSED:
		hi->cb.link_reused(hi, &id, l);
		if (r->r_self && rc == 0) {
			pthread_mutex_lock(&hi->lock);
			self_link_up(hi);
			link_kick(hi, l);
			pthread_mutex_unlock(&hi->lock);
		}
		break;
	case WIRE_LINK_ABSENT:
		hi->cb.link_absent(hi, &id);
		break;
	default:
		break;
	}
	epreq_free(r);
}

/* ------------------------------------------------------------------ send / delivered */

void m0_halon_interface_send(struct m0_halon_interface *hi, struct m0_ha_link *hl,
			     const struct m0_ha_msg *msg, uint64_t *tag)
{
	struct wire_buf b = { 0 };
	const char *why = NULL;
	uint64_t t;

	STANDIN_ASSERT(hi_valid(hi));
	STANDIN_ASSERT(msg != NULL);
	STANDIN_ASSERT(tag != NULL);
	STANDIN_ASSERT(msg->hm_tag == 0);
	if (msg->hm_data.hed_type == M0_HA_MSG_NVEC)
		STANDIN_ASSERT(msg->hm_data.u.hed_nvec.hmnv_nr <= M0_HA_STATE_UPDATE_LIMIT);
	if (msg->hm_data.hed_type == M0_HA_MSG_FAILURE_VEC_REP)
		STANDIN_ASSERT(msg->hm_data.u.hed_fvec_rep.mfp_nr <= M0_HA_STATE_UPDATE_LIMIT);
	if (wire_msg_check(msg, &why) != 0) {
		slog("send: message type %" PRIu64 ": %s", msg->hm_data.hed_type, why);
		assert_fail("the message can be encoded", __func__);
	}
	if (wire_enc_msg(&b, WIRE_HA_MSG, 0, msg) != 0)
		assert_fail("the message can be encoded", __func__);
	pthread_mutex_lock(&hi->lock);
	if (!link_known(hi, hl))
		assert_fail("hl is a link of this interface", __func__);
	if (hl->hl_self)
		self_rerequest_check(hi);
	if (hl->hl_state == LS_DEAD || hl->hl_disconnect_called) {
		slog("send on link %p (%s) after %s", (void *)hl, hl->hl_ep,
		     hl->hl_state == LS_DEAD ? "link_disconnected" : "disconnect()");
		assert_fail("the link is not disconnected", __func__);
	}
	t = hl->hl_next_tag;
	hl->hl_next_tag += 2;
	*tag = t;
	if (hi->log_msg)
		slog("link %p send tag=%" PRIu64 " type=%" PRIu64, (void *)hl, t,
		     msg->hm_data.hed_type);
	if (hl->hl_self) {
		/* Motr handles messages to itself and confirms them (later, on a locality). */
		self_handle(hi, msg);
		hl->hl_ack_hwm = t;
		link_enqueue(hi, hl, item_new(IT_CONFIRM, t));
	} else if (hl->hl_conn != NULL) {
		confirm_write(hi, hl); /* pending confirmations go just before the message */
		wire_msg_patch_tag(b.data, t);
		conn_send(hi, hl->hl_conn, b.data, b.len);
	}
	/* else: the peer is gone; the message stays unconfirmed, as with Motr. */
	pthread_mutex_unlock(&hi->lock);
	wire_buf_fini(&b);
}

/*
 * As Motr's m0_ha_link_delivered() (ha/link.c, ha/lq.c m0_ha_lq_mark_delivered): the message
 * is marked delivered; the link's delivered mark advances over every contiguous delivered
 * message (out-of-order calls only mark), and the peer learns the mark later (confirm_write).
 * A message that msg_received did not give on hl (or is below the mark already: delivered
 * twice), or a link that is disconnected (disconnect() called) or gone, fails Motr's lq
 * assertions: the stand-in aborts.
 */
void m0_halon_interface_delivered(struct m0_halon_interface *hi, struct m0_ha_link *hl,
				  const struct m0_ha_msg *msg)
{
	struct rcv *r;
	uint64_t mark;
	uint64_t tag;

	STANDIN_ASSERT(hi_valid(hi));
	pthread_mutex_lock(&hi->lock);
	if (!link_known(hi, hl))
		assert_fail("hl is a link of this interface", __func__);
	if (hl->hl_state == LS_DEAD || hl->hl_disconnect_called) {
		slog("delivered on link %p (%s) after %s", (void *)hl, hl->hl_ep,
		     hl->hl_state == LS_DEAD ? "link_disconnected" : "disconnect()");
		assert_fail("msg != NULL", "m0_ha_lq_mark_delivered");
	}
	for (r = hl->hl_rcvs; r != NULL && &r->r_msg != msg; r = r->r_next) {
	}
	if (r == NULL) {
		slog("delivered: link %p: not a message msg_received gave on this link, or one "
		     "delivered already", (void *)hl);
		assert_fail("msg != NULL && lq->hlq_tags.hlt_delivered <= msg->hm_tag",
			    "m0_ha_lq_mark_delivered");
	}
	r->r_delivered = true; /* again if it was: Motr only marks it again */
	tag = r->r_tag;
	mark = hl->hl_rx_mark;
	while (hl->hl_rcvs != NULL && hl->hl_rcvs->r_delivered) {
		r = hl->hl_rcvs;
		hl->hl_rcvs = r->r_next;
		if (hl->hl_rcvs == NULL)
			hl->hl_rcvs_tail = NULL;
		if (r->r_tag > hl->hl_rx_mark)
			hl->hl_rx_mark = r->r_tag;
		free(r);
	}
	if (hi->log_msg)
		slog("link %p delivered tag=%" PRIu64 " (mark %" PRIu64 ")", (void *)hl, tag,
		     hl->hl_rx_mark);
	if (hl->hl_self) {
		if (hl->hl_rcvs == NULL)
			pthread_cond_broadcast(&hi->state_cv);
	} else if (hl->hl_rx_mark > mark && hl->hl_state == LS_ALIVE) {
		confirm_later(hi, hl);
	}
	pthread_mutex_unlock(&hi->lock);
}

void m0_halon_interface_disconnect(struct m0_halon_interface *hi, struct m0_ha_link *hl)
{
	struct item *it;

	if (!hi_valid(hi)) {
		slog("disconnect: not the current interface; ignored");
		return;
	}
	pthread_mutex_lock(&hi->lock);
	if (!link_known(hi, hl)) {
		pthread_mutex_unlock(&hi->lock);
		slog("disconnect: unknown link %p; ignored", (void *)hl);
		return;
	}
	if (hl->hl_state != LS_DISCONNECTING || hl->hl_disconnect_called) {
		pthread_mutex_unlock(&hi->lock);
		slog("disconnect: link %p is %s; ignored (call it from link_is_disconnecting)",
		     (void *)hl,
		     hl->hl_state == LS_ALIVE ? "not disconnecting" : "already disconnected");
		return;
	}
	hl->hl_disconnect_called = true;
	it = item_new(IT_FINISH, 0);
	if (!hl->hl_self && hl->hl_conn == NULL) {
		/* The peer is gone: Motr waits for its RPC timeout before giving up. */
		if (hi->log_link)
			slog("link %p: peer gone, waiting %" PRIu64 " ms", (void *)hl,
			     hi->rpc_timeout_ns / 1000000);
		timer_add(hi, mono_ns() + hi->rpc_timeout_ns, hl, it);
	} else {
		link_enqueue(hi, hl, it);
	}
	pthread_mutex_unlock(&hi->lock);
}

/* ------------------------------------------------------------------ threads, endpoint */

/*
 * Adoption as Motr does it (lib/thread.c, lib/user_space/uthread.c, addb2/global.c): the
 * thread descriptor must be all zero (M0_PRE(M0_IS0(thread))); adopting makes it the thread's
 * descriptor and gives the thread an addb2 machine of the interface's Motr instance, which
 * m0_halon_interface_thread_shun() gives back (one: adopting twice without shunning loses
 * one). fini asserts that no machine is still out (sys->sy_total == 0 in m0_addb2_sys_fini()):
 * it aborts if an adopted thread was not shunned, or if the thread that called init was ever
 * adopted (its adoption replaces the descriptor holding the machine init gave it, which is
 * then lost for good, shunned or not). Threads never adopted may call everything: Motr gives
 * them the main instance automatically ("anon" threads).
 */
int m0_halon_interface_thread_adopt(struct m0_halon_interface *hi, struct m0_thread *thread)
{
	static const struct m0_thread zero;

	STANDIN_ASSERT(hi_valid(hi));
	STANDIN_ASSERT(thread != NULL);
	if (memcmp(thread, &zero, sizeof zero) != 0)
		assert_fail("M0_IS0(thread)", "m0_thread_adopt");
	thread->t_opaque[0] = (uint64_t)(uintptr_t)thread; /* Motr sets tls_self */
	if (pthread_equal(pthread_self(), hi->main_thread)) {
		slog("thread_adopt: the thread that called init is adopted: fini will fail");
		__atomic_store_n(&hi->main_adopted, true, __ATOMIC_SEQ_CST);
	}
	if (tls_adopted == 0)
		tls_adopted_hi = hi;
	tls_adopted++;
	__atomic_add_fetch(&hi->adopted_live, 1, __ATOMIC_SEQ_CST);
	return 0;
}

void m0_halon_interface_thread_shun(void)
{
	if (tls_adopted > 0) {
		if (tls_adopted_hi == current_hi())
			__atomic_sub_fetch(&tls_adopted_hi->adopted_live, 1, __ATOMIC_SEQ_CST);
		tls_adopted = 0;
		tls_adopted_hi = NULL;
	}
}

/*
 * Motr's version (ha/link.c) copies at most buf_len - 1 bytes under the link's lock and writes
 * buf[buf_len - 1] = 0: buf_len 0 writes before the buffer, and a link that is not a live link
 * of the interface (never one, or freed after link_disconnected) is a use of freed memory. The
 * stand-in aborts in those cases. A link stays valid until its link_disconnected has returned.
 */
void m0_ha_link_rpc_endpoint(struct m0_ha_link *hl, char *buf, m0_bcount_t buf_len)
{
	struct m0_halon_interface *hi = current_hi();
	size_t n;

	STANDIN_ASSERT(buf_len > 0);
	STANDIN_ASSERT(buf != NULL);
	STANDIN_ASSERT(hi != NULL);
	pthread_mutex_lock(&hi->lock);
	if (!link_known(hi, hl))
		assert_fail("hl is a link of this interface", __func__);
	if (hl->hl_gone) {
		slog("rpc_endpoint on link %p after its link_disconnected returned", (void *)hl);
		assert_fail("the link is not disconnected", __func__);
	}
	n = strlen(hl->hl_ep);
	if (n > buf_len - 1)
		n = (size_t)(buf_len - 1);
	memcpy(buf, hl->hl_ep, n);
	buf[n] = '\0';
	pthread_mutex_unlock(&hi->lock);
}

/* ------------------------------------------------------------------ test hook */

/*
 * Not part of Motr's interface: the stand-in's link bookkeeping, for its tests. live: links
 * not yet buried; dead: buried links kept (at most dead_max); allocated: link structs not freed.
 */
int hax_standin_rx_stats(struct m0_halon_interface *hi, unsigned *queued, unsigned *peak,
			 unsigned *cap);
/* Test-only, like hax_standin_link_stats: received messages queued now, at most, and the cap. */
int hax_standin_rx_stats(struct m0_halon_interface *hi, unsigned *queued, unsigned *peak,
			 unsigned *cap)
{
	if (!hi_valid(hi))
		return -EINVAL;
	pthread_mutex_lock(&hi->lock);
	*queued = hi->rx_total;
	*peak = hi->rx_peak;
	*cap = RX_TOTAL_MAX;
	pthread_mutex_unlock(&hi->lock);
	return 0;
}

/*
 * Test-only: -ENOENT for a pointer that is not a link of hi (never one, or freed from the
 * graveyard), else 0 alive, 1 disconnecting, 2 dead (its link_disconnected has returned).
 */
int hax_standin_link_state(struct m0_halon_interface *hi, const struct m0_ha_link *hl);
int hax_standin_link_state(struct m0_halon_interface *hi, const struct m0_ha_link *hl)
{
	int rc;

	if (!hi_valid(hi))
		return -EINVAL;
	pthread_mutex_lock(&hi->lock);
	if (!link_known(hi, hl))
		rc = -ENOENT;
	else
		rc = hl->hl_gone ? 2 : hl->hl_state == LS_ALIVE ? 0 : 1;
	pthread_mutex_unlock(&hi->lock);
	return rc;
}

int hax_standin_link_stats(struct m0_halon_interface *hi, uint64_t *live, uint64_t *dead,
			   uint64_t *dead_max, uint64_t *allocated);
int hax_standin_link_stats(struct m0_halon_interface *hi, uint64_t *live, uint64_t *dead,
			   uint64_t *dead_max, uint64_t *allocated)
{
	uint64_t n = 0;

	if (!hi_valid(hi))
		return -EINVAL;
	pthread_mutex_lock(&hi->lock);
	for (struct m0_ha_link *l = hi->links; l != NULL; l = l->hl_next)
		n++;
	*live = n;
	*dead = hi->grave_nr;
	*dead_max = hi->grave_max;
	*allocated = hi->links_allocated;
	pthread_mutex_unlock(&hi->lock);
	return 0;
}
