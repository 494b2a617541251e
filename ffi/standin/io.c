/*
 * io.c: the I/O thread and the connections: accept, read and decode frames, write, close. See
 * standin.h.
 */
#include "standin.h"

/* ------------------------------------------------------------------ I/O helpers (locked) */

void io_wake(struct m0_halon_interface *hi)
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
void conn_dirty(struct m0_halon_interface *hi, struct conn *c)
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
void conn_send(struct m0_halon_interface *hi, struct conn *c, const void *p, size_t n)
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
void link_bind(struct m0_halon_interface *hi, struct m0_ha_link *l, struct conn *c)
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
	struct rcv *r;
	struct m0_ha_link *l;
	uint64_t tag;
	int rc;

	/* The costly part (a whole zeroed m0_ha_msg, often fresh pages, and the decoding) is done
	 * without the interface lock: held throughout a flood, it starved the threads that hand
	 * messages to hax and confirm them, and messages piled up. Only this thread reads c's
	 * input and frees connections, so c and body stay valid; the caller checks c_close and
	 * the backlog again after each frame. */
	pthread_mutex_unlock(&hi->lock);
	r = rcv_new();
	rc = wire_dec_msg(body, n, &tag, &r->r_msg, why);
	pthread_mutex_lock(&hi->lock);
	if (rc != 0) {
		free(r);
		return -EPROTO;
	}
	if (c->c_close) {
		free(r);
		return 0;
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

/* May c's buffered frames be handled now: not while its link has RX_BACKLOG received messages
 * queued or all links RX_TOTAL_MAX (the bytes wait in c_in, and TCP holds the sender back). */
static bool conn_may_take(const struct m0_halon_interface *hi, const struct conn *c)
{
	return !hi->rx_held && (c->c_link == NULL || c->c_link->hl_rx_queued < RX_BACKLOG);
}

/* Handles the whole frames buffered in c_in, each only while conn_may_take(): the limits hold
 * frame by frame, not read by read (one 64 KiB read holds about a thousand small messages, each
 * becoming a whole m0_ha_msg). I/O thread. */
static void conn_parse(struct m0_halon_interface *hi, struct conn *c)
{
	size_t off = 0;

	while (!c->c_close && conn_may_take(hi, c)) {
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

static void conn_read(struct m0_halon_interface *hi, struct conn *c)
{
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
	if (c->c_in_len == c->c_in_cap) { /* full of frames that wait: read nothing more */
		conn_parse(hi, c);
		return;
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
	conn_parse(hi, c);
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

	if (conn_may_take(hi, c) && (c->c_in_cap == 0 || c->c_in_len < c->c_in_cap))
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
		if (!c->c_close && c->c_in_len > 0 && conn_may_take(hi, c))
			conn_parse(hi, c); /* frames that waited for the backlog to shrink */
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
void *io_main(void *arg)
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
