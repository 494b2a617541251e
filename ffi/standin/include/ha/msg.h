/* Stand-in for Motr's ha/msg.h: the HA message (24696 bytes, as in Motr). */
#ifndef __MOTR_HA_MSG_H__
#define __MOTR_HA_MSG_H__
#include "be/ha.h"
#include "conf/ha.h"
#include "fid/fid.h"
#include "ha/failvec.h"
#include "ha/note.h"
#include "lib/cookie.h"
#include "lib/types.h"
#include "motr/keepalive.h"
#include "rpc/ha.h"
#include "sns/cm/ha.h"
#include "stob/ioq_error.h"

enum {
	M0_HA_MSG_FAILURE_VEC_LIMIT = 1024,
};

enum {
	M0_HA_MSG_TAG_UNKNOWN = 0,
	M0_HA_MSG_TAG_INVALID = UINT64_MAX,
};

enum m0_ha_msg_type {
	M0_HA_MSG_INVALID = 0,
	M0_HA_MSG_STOB_IOQ = 1,
	M0_HA_MSG_NVEC = 2,
	M0_HA_MSG_FAILURE_VEC_REQ = 3,
	M0_HA_MSG_FAILURE_VEC_REP = 4,
	M0_HA_MSG_KEEPALIVE_REQ = 5,
	M0_HA_MSG_KEEPALIVE_REP = 6,
	M0_HA_MSG_EVENT_PROCESS = 7,
	M0_HA_MSG_EVENT_SERVICE = 8,
	M0_HA_MSG_EVENT_RPC = 9,
	M0_HA_MSG_BE_IO_ERR = 10,
	M0_HA_MSG_SNS_ERR = 11,
};

struct m0_ha_msg_data {
	uint64_t hed_type; /* enum m0_ha_msg_type */
	union {
		struct m0_stob_ioq_error hed_stob_ioq;
		struct m0_ha_msg_nvec hed_nvec;
		struct m0_ha_msg_failure_vec_req hed_fvec_req;
		struct m0_ha_msg_failure_vec_rep hed_fvec_rep;
		struct m0_ha_msg_keepalive_req hed_keepalive_req;
		struct m0_ha_msg_keepalive_rep hed_keepalive_rep;
		struct m0_conf_ha_process hed_event_process;
		struct m0_conf_ha_service hed_event_service;
		struct m0_ha_msg_rpc hed_event_rpc;
		struct m0_be_io_err hed_be_io_err;
		struct m0_ha_sns_err hed_ha_sns_err;
	} u;
};

struct m0_ha_msg {
	struct m0_fid hm_fid;
	struct m0_fid hm_source_process;
	struct m0_fid hm_source_service;
	m0_time_t hm_time;
	uint64_t hm_epoch;
	struct m0_ha_msg_data hm_data;
	/* Private to Motr: must be 0 when the message is given to m0_halon_interface_send(). */
	uint64_t hm_tag;
};
#endif
