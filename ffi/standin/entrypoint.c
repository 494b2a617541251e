/*
 * entrypoint.c: entrypoint requests and m0_halon_interface_entrypoint_reply() (link decisions).
 * See standin.h.
 */
#include "standin.h"

/* ------------------------------------------------------------------ entrypoint (locked) */

void ep_task_queue(struct m0_halon_interface *hi, const struct epreq *r,
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

struct epreq *epreq_new(struct m0_halon_interface *hi, struct conn *c, bool self,
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

void epreq_free(struct epreq *r)
{
	free(r->r_ep);
	free(r);
}

void self_request_issue(struct m0_halon_interface *hi, bool first)
{
	struct epreq *r = epreq_new(hi, NULL, true, first, 0, &hi->process, hi->endpoint);

	ep_task_queue(hi, r, STANDIN_GIT_REV, (uint64_t)getpid());
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
