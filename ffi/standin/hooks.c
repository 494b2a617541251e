/* hooks.c: test hooks (counters the C and Rust tests read). See standin.h. */
#include "standin.h"

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
