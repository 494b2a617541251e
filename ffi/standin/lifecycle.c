/*
 * lifecycle.c: init / fini, start / stop, thread adopt / shun; the interface's globals. See
 * standin.h.
 */
#include "standin.h"

pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
struct m0_halon_interface *g_hi;
__thread bool tls_locality;
__thread unsigned tls_adopted;   /* adoptions not shunned on this thread */
__thread struct m0_halon_interface *tls_adopted_hi;
__thread bool tls_io;

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
