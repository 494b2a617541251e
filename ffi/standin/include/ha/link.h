/* Stand-in for Motr's ha/link.h: the HA link handle is opaque to its users. */
#ifndef __MOTR_HA_LINK_H__
#define __MOTR_HA_LINK_H__
#include "lib/types.h"

struct m0_ha_link;

/** Copies the peer's endpoint into buf (NUL-terminated, truncated to len). 0 or -errno. */
int m0_ha_link_rpc_endpoint(struct m0_ha_link *hl, char *buf, m0_bcount_t buf_len);
#endif
