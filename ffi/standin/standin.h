/*
 * standin.h: the stand-in for Motr's HA interface (m0_halon_interface): the rules it keeps,
 * and the structs and functions its files share (private: not for users of the interface).
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
 * from many peers is held back by TCP instead of growing the process's memory. The caps hold
 * frame by frame (frames past a cap wait in the connection's input buffer), and the I/O thread
 * allocates and decodes a message without the interface lock, so that the threads handing
 * messages to the user and taking its confirmations are not starved during a flood.
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
 *
 * Files (one concern each; every .c file of this folder is the library):
 *   - util.c:       logging, assertions as Motr's, allocation, clocks, fids, the current
 *                   interface
 *   - links.c:      the link table: the set of known link pointers, link lifetime (new, received
 *                   messages, disconnect, the bounded graveyard), m0_ha_link_rpc_endpoint()
 *   - sched.c:      the run queue, per-link work items, timers and the locality threads that run
 *                   the callbacks
 *   - io.c:         the I/O thread and the connections: accept, read and decode frames, write,
 *                   close
 *   - send.c:       confirmations (the delivered mark, written late) and send / delivered /
 *                   disconnect
 *   - notes.c:      HA's own process and service events and the process notes on the self link
 *   - entrypoint.c: entrypoint requests and m0_halon_interface_entrypoint_reply() (link
 *                   decisions)
 *   - lifecycle.c:  init / fini, start / stop, thread adopt / shun; the interface's globals
 *   - hooks.c:      test hooks (counters the C and Rust tests read)
 */
#ifndef HAX_STANDIN_H
#define HAX_STANDIN_H

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

extern pthread_mutex_t g_lock;
extern struct m0_halon_interface *g_hi;
extern __thread bool tls_locality;
extern __thread unsigned tls_adopted;  /* adoptions not shunned on this thread */
extern __thread struct m0_halon_interface *tls_adopted_hi;
extern __thread bool tls_io;

#define STANDIN_ASSERT(cond)                                 \
	do {                                                 \
		if (!(cond))                                 \
			assert_fail(#cond, __func__);        \
	} while (0)

#define FID_F "<%" PRIx64 ":%" PRIx64 ">"

#define FID_P(f) (f)->f_container, (f)->f_key

/* util.c */
void slog(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
void assert_fail(const char *expr, const char *func) __attribute__((noreturn));
void assert_info(const char *expr, const char *func, const char *info)
	__attribute__((noreturn));
void *xcalloc(size_t n, size_t size);
char *xstrdup(const char *s);
uint64_t mono_ns(void);
uint64_t real_ns(void);
struct timespec abs_mono(uint64_t ns);
bool fid_eq(const struct m0_fid *a, const struct m0_fid *b);
struct m0_halon_interface *current_hi(void);
bool hi_valid(const struct m0_halon_interface *hi);

/* links.c */
void ptrset_fini(struct ptrset *s);
bool link_known(struct m0_halon_interface *hi, const struct m0_ha_link *hl);
struct rcv *rcv_new(void);
void link_receive(struct m0_halon_interface *hi, struct m0_ha_link *l, struct rcv *r);
void link_start_disconnect(struct m0_halon_interface *hi, struct m0_ha_link *l);
struct m0_ha_link *link_new(struct m0_halon_interface *hi, bool self,
			    const struct m0_fid *process, const char *ep);
void link_free(struct m0_halon_interface *hi, struct m0_ha_link *l);
void link_bury(struct m0_halon_interface *hi, struct m0_ha_link *l);

/* sched.c */
void runq_push(struct m0_halon_interface *hi, struct task *t);
struct task *runq_pop(struct m0_halon_interface *hi);
void link_kick(struct m0_halon_interface *hi, struct m0_ha_link *l);
struct item *item_new(enum item_kind kind, uint64_t tag);
void link_enqueue(struct m0_halon_interface *hi, struct m0_ha_link *l, struct item *it);
void timer_add(struct m0_halon_interface *hi, uint64_t due, struct m0_ha_link *l,
	       struct item *it);
void ep_task_free(struct ep_task *t);
void *locality_main(void *arg);

/* io.c */
void io_wake(struct m0_halon_interface *hi);
void conn_dirty(struct m0_halon_interface *hi, struct conn *c);
void conn_send(struct m0_halon_interface *hi, struct conn *c, const void *p, size_t n);
void link_bind(struct m0_halon_interface *hi, struct m0_ha_link *l, struct conn *c);
void *io_main(void *arg);

/* send.c */
void cq_remove(struct m0_halon_interface *hi, struct m0_ha_link *l);
int confirm_service(struct m0_halon_interface *hi);

/* notes.c */
void self_events_start(struct m0_halon_interface *hi);
void self_events_stop(struct m0_halon_interface *hi);
void self_handle(struct m0_halon_interface *hi, const struct m0_ha_msg *msg);
void self_rerequest_check(struct m0_halon_interface *hi);

/* entrypoint.c */
void ep_task_queue(struct m0_halon_interface *hi, const struct epreq *r,
		   const char *git, uint64_t pid);
struct epreq *epreq_new(struct m0_halon_interface *hi, struct conn *c, bool self,
			bool first, uint64_t seq, const struct m0_fid *process,
			const char *ep);
void epreq_free(struct epreq *r);
void self_request_issue(struct m0_halon_interface *hi, bool first);

#endif /* HAX_STANDIN_H */
