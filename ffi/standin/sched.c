/*
 * sched.c: the run queue, per-link work items, timers and the locality threads that run the
 * callbacks. See standin.h.
 */
#include "standin.h"

/* ------------------------------------------------------------------ scheduling (locked) */

void runq_push(struct m0_halon_interface *hi, struct task *t)
{
	t->t_next = NULL;
	if (hi->runq_tail == NULL)
		hi->runq_head = t;
	else
		hi->runq_tail->t_next = t;
	hi->runq_tail = t;
	pthread_cond_signal(&hi->loc_cv);
}

struct task *runq_pop(struct m0_halon_interface *hi)
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

void link_kick(struct m0_halon_interface *hi, struct m0_ha_link *l)
{
	if (!l->hl_scheduled && l->hl_ready && l->hl_qhead != NULL) {
		l->hl_scheduled = true;
		runq_push(hi, &l->hl_task);
	}
}

struct item *item_new(enum item_kind kind, uint64_t tag)
{
	struct item *it = xcalloc(1, sizeof *it);

	it->i_kind = kind;
	it->i_tag = tag;
	return it;
}

void link_enqueue(struct m0_halon_interface *hi, struct m0_ha_link *l, struct item *it)
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

void timer_add(struct m0_halon_interface *hi, uint64_t due, struct m0_ha_link *l,
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

void ep_task_free(struct ep_task *t)
{
	free(t->et_ep);
	free(t->et_git);
	free(t);
}

void *locality_main(void *arg)
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
