/* Stand-in for Motr's ha/msg.h: the HA message (24696 bytes, as in Motr). */
#ifndef __MOTR_HA_MSG_H__
#define __MOTR_HA_MSG_H__
#include "fid/fid.h"
#include "ha/note.h"
#include "lib/cookie.h"
#include "stob/ioq_error.h"

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
	M0_HA_MSG_NR
};

enum m0_ha_msg_nvec_type {
	M0_HA_NVEC_SET = 0,
	M0_HA_NVEC_GET = 1,
};

struct m0_ha_msg_nvec_array {
	struct m0_ha_note hmna_arr[M0_HA_STATE_UPDATE_LIMIT];
};

struct m0_ha_msg_nvec {
	uint64_t hmnv_type;
	uint64_t hmnv_id_of_get;
	uint64_t hmnv_ignore_same_state;
	uint64_t hmnv_nr;
	struct m0_ha_msg_nvec_array hmnv_arr;
};

struct m0_ha_msg_failure_vec_req {
	struct m0_fid mfq_pool;
	struct m0_cookie mfq_cookie;
};

struct m0_ha_msg_failure_vec_rep {
	struct m0_fid mfp_pool;
	struct m0_cookie mfp_cookie;
	uint64_t mfp_nr;
	struct m0_ha_msg_nvec_array mfp_vec;
};

struct m0_ha_msg_keepalive_req { struct m0_uint128 kaq_id; };
struct m0_ha_msg_keepalive_rep { struct m0_uint128 kap_id; uint64_t kap_counter; };

struct m0_ha_msg_event_process {
	uint64_t chp_event; /* enum m0_conf_ha_process_event */
	uint64_t chp_type;  /* enum m0_conf_ha_process_type */
	uint64_t chp_pid;
};

struct m0_ha_msg_event_service {
	uint64_t chs_event; /* enum m0_conf_ha_service_event */
	uint64_t chs_type;  /* enum m0_conf_service_type */
	uint64_t chs_pid;
};

struct m0_ha_msg_event_rpc {
	uint64_t hmr_state;
	uint64_t hmr_attempts;
};

struct m0_be_io_err {
	uint32_t ber_errcode;
	uint8_t ber_location;
	uint8_t ber_io_opcode;
};

struct m0_ha_sns_err {
	uint32_t hse_errcode;
	uint8_t hse_opcode;
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
		struct m0_ha_msg_event_process hed_event_process;
		struct m0_ha_msg_event_service hed_event_service;
		struct m0_ha_msg_event_rpc hed_event_rpc;
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
