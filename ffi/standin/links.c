/*
 * links.c: the link table: the set of known link pointers, link lifetime (new, received
 * messages, disconnect, the bounded graveyard), m0_ha_link_rpc_endpoint(). See standin.h.
 */
#include "standin.h"

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

void ptrset_fini(struct ptrset *s)
{
	free(s->ps_slot);
	*s = (struct ptrset){ 0 };
}

/* Is hl one of our links (live or recently dead)? Compares pointers only (hl may be garbage).
 * Under the lock. */
bool link_known(struct m0_halon_interface *hi, const struct m0_ha_link *hl)
{
	return ptrset_has(&hi->known, hl);
}

struct rcv *rcv_new(void)
{
	return xcalloc(1, sizeof(struct rcv));
}

/* Queues msg_received for a message; r is owned by the link from now on. */
void link_receive(struct m0_halon_interface *hi, struct m0_ha_link *l, struct rcv *r)
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

void link_start_disconnect(struct m0_halon_interface *hi, struct m0_ha_link *l)
{
	if (l->hl_state != LS_ALIVE)
		return;
	l->hl_state = LS_DISCONNECTING;
	if (hi->log_link)
		slog("link %p (%s) starts disconnecting", (void *)l, l->hl_ep);
	link_enqueue(hi, l, item_new(IT_IS_DISCONNECTING, 0));
}

struct m0_ha_link *link_new(struct m0_halon_interface *hi, bool self,
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

void link_free(struct m0_halon_interface *hi, struct m0_ha_link *l)
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
void link_bury(struct m0_halon_interface *hi, struct m0_ha_link *l)
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
