/* Stand-in for Motr's rpc/ha.h: the payload of M0_HA_MSG_EVENT_RPC. */
#ifndef __MOTR_RPC_HA_H__
#define __MOTR_RPC_HA_H__
#include "lib/types.h"

struct m0_ha_msg_rpc {
	uint64_t hmr_attempts;
	uint64_t hmr_state; /* enum m0_ha_obj_state */
};
#endif
