/* Stand-in for Motr's sns/cm/ha.h: the payload of M0_HA_MSG_SNS_ERR. */
#ifndef __MOTR_SNS_CM_HA_H__
#define __MOTR_SNS_CM_HA_H__
#include "lib/types.h"

struct m0_ha_sns_err {
	uint32_t hse_errcode;
	uint8_t hse_opcode;
};
#endif
