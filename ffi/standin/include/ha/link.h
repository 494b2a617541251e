/* Stand-in for Motr's ha/link.h: the HA link handle is opaque to its users. */
#ifndef __MOTR_HA_LINK_H__
#define __MOTR_HA_LINK_H__
#include "lib/types.h"

struct m0_ha_link;

/**
 * Copies the peer's endpoint into buf: at most buf_len - 1 bytes, then a NUL. Returns nothing,
 * as in Motr; a link that is not a live link of the interface, or buf_len 0, is a crash there
 * (the stand-in aborts).
 */
M0_INTERNAL void m0_ha_link_rpc_endpoint(struct m0_ha_link *hl, char *buf, m0_bcount_t buf_len);
#endif
