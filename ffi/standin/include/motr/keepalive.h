/* Stand-in for Motr's motr/keepalive.h: keepalive payloads (handled inside Motr). */
#ifndef __MOTR_MOTR_KEEPALIVE_H__
#define __MOTR_MOTR_KEEPALIVE_H__
#include "lib/types.h"

struct m0_ha_msg_keepalive_req {
	struct m0_uint128 kaq_id;
};

struct m0_ha_msg_keepalive_rep {
	struct m0_uint128 kap_id;
	uint64_t kap_counter;
};
#endif
