/*
 * send.c: confirmations (the delivered mark, written late) and send / delivered / disconnect.
 * See standin.h.
 */
#include "standin.h"

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

void cq_remove(struct m0_halon_interface *hi, struct m0_ha_link *l)
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
int confirm_service(struct m0_halon_interface *hi)
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
