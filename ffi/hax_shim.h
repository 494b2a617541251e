/*
 * hax_shim.h: the plain C API between hax (Rust) and Motr's HA interface.
 *
 * The shim (hax_shim.c) is the only code that touches Motr's types. It converts every Motr
 * callback into the plain structs below and calls the matching function of the
 * `struct hax_callbacks` registered with hax_shim_init(). Bindings for Rust are generated
 * from this header by bindgen at build time.
 *
 * Links are identified by `hax_link_t`, the address of Motr's `struct m0_ha_link` as an
 * integer: valid from link_connected/link_reused until link_disconnected returns.
 *
 * Threading: callbacks arrive on Motr's locality threads (link_connected/reused/absent on the
 * thread that calls hax_shim_entrypoint_reply). Every function here except init/start/stop/
 * fini may be called from any thread, including from inside a callback, without adopting it:
 * the thread that called hax_shim_init() is Motr's main thread and must call start and fini;
 * other threads are "anon" threads to Motr, which gives them its main instance by itself.
 */
#ifndef HAX_SHIM_H
#define HAX_SHIM_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/** Largest number of notes in one HA message (M0_HA_STATE_UPDATE_LIMIT). */
#define HAX_NOTES_MAX 1024
/** Longest endpoint string hax accepts, NUL excluded. */
#define HAX_ENDPOINT_MAX 255

typedef uint64_t hax_link_t;

struct hax_fid {
	uint64_t container;
	uint64_t key;
};

struct hax_note {
	struct hax_fid fid;
	uint32_t state; /* enum m0_ha_obj_state: 0 UNKNOWN .. 7 DTM_RECOVERING */
};

/** What an incoming message carries; `raw_type` keeps Motr's hed_type value. */
enum hax_msg_kind {
	HAX_MSG_OTHER = 0,
	HAX_MSG_STOB_IOQ = 1,
	HAX_MSG_NVEC_SET = 2,
	HAX_MSG_NVEC_GET = 3,
	HAX_MSG_FAILURE_VEC_REQ = 4,
	HAX_MSG_PROCESS_EVENT = 5,
	HAX_MSG_SERVICE_EVENT = 6,
	HAX_MSG_RPC_EVENT = 7,
	HAX_MSG_BE_IO_ERR = 8,
	HAX_MSG_SNS_ERR = 9,
	HAX_MSG_KEEPALIVE = 10,
};

struct hax_entrypoint_req {
	uint64_t req_hi;
	uint64_t req_lo;
	const char *remote_ep;   /* valid during the callback only */
	struct hax_fid process;
	const char *git_rev;     /* valid during the callback only */
	uint64_t pid;
	int first_request;
};

/** A received message, flattened. Fields not used by `kind` are zero. */
struct hax_msg {
	uint32_t kind;           /* enum hax_msg_kind */
	uint64_t raw_type;       /* Motr's hed_type */
	struct hax_fid fid;      /* hm_fid */
	struct hax_fid src_process;
	struct hax_fid src_service;
	uint64_t time;
	uint64_t epoch;
	/* PROCESS_EVENT, SERVICE_EVENT */
	uint64_t event;
	uint64_t obj_type;       /* process type or service type */
	uint64_t pid;
	/* NVEC_SET, NVEC_GET, FAILURE_VEC_REQ */
	uint64_t id_of_get;
	uint32_t ignore_same_state;
	uint32_t nr;
	const struct hax_note *notes; /* nr notes, valid during the callback only */
	struct hax_fid pool;
	uint64_t cookie_hi;
	uint64_t cookie_lo;
	/* STOB_IOQ */
	struct hax_fid sdev;
	struct hax_fid stob_domain;
	struct hax_fid stob_fid;
	int64_t fd;
	uint32_t opcode;
	int32_t rc;
	uint64_t offset;
	uint64_t size;
	uint32_t bshift;
	/* RPC_EVENT */
	uint64_t rpc_attempts;
	uint64_t rpc_state;
	/* Motr's message, for hax_shim_delivered(): Motr keeps it until it is confirmed (or its
	 * link starts disconnecting), so it may be confirmed after the callback returned. */
	const void *motr_msg;
};

struct hax_callbacks {
	void (*entrypoint_request)(const struct hax_entrypoint_req *req);
	/** The receiver confirms the message with hax_shim_delivered(link, msg->motr_msg), once,
	 * when it is handled (possibly after returning; never after link_is_disconnecting). */
	void (*msg_received)(hax_link_t link, const struct hax_msg *msg, uint64_t tag);
	void (*msg_delivered)(hax_link_t link, uint64_t tag);
	void (*msg_not_delivered)(hax_link_t link, uint64_t tag);
	/** `peer_ep`: the process's endpoint, valid during the callback only. */
	void (*link_connected)(uint64_t req_hi, uint64_t req_lo, hax_link_t link, const char *peer_ep);
	void (*link_reused)(uint64_t req_hi, uint64_t req_lo, hax_link_t link);
	void (*link_absent)(uint64_t req_hi, uint64_t req_lo);
	/** The receiver must call hax_shim_disconnect(link) before returning. */
	void (*link_is_disconnecting)(hax_link_t link);
	void (*link_disconnected)(hax_link_t link);
};

/** Creates the (one) interface; the calling thread becomes Motr's main thread. 0 or -errno. */
int hax_shim_init(const struct hax_callbacks *cb, const char *node_uuid);
/** Blocks until hax's own entrypoint request is answered with rc 0 (by another thread). */
int hax_shim_start(const char *local_endpoint, const struct hax_fid *process,
		   const struct hax_fid *ha_service, const struct hax_fid *rm_service);
void hax_shim_stop(void);
void hax_shim_fini(void);

/** Answers one entrypoint request. Arguments may be freed when it returns. */
void hax_shim_entrypoint_reply(uint64_t req_hi, uint64_t req_lo, int rc, uint32_t confd_nr,
			       const struct hax_fid *confd_fids, const char *const *confd_eps,
			       uint32_t quorum, const struct hax_fid *rm_fid, const char *rm_ep);

/**
 * Sends one NVEC SET on a link (id_of_get 0 for a broadcast, the GET's id for an answer).
 * Returns 0 and the Motr tag in *tag, or -E2BIG when nr > HAX_NOTES_MAX, -EINVAL on bad args.
 */
int hax_shim_send_nvec_set(hax_link_t link, uint64_t id_of_get, int ignore_same_state,
			   uint32_t nr, const struct hax_note *notes, uint64_t *tag);
/**
 * Sends the same NVEC SET broadcast (id_of_get 0) on each of `nlinks` links, building the
 * message once; tags[i] receives link i's tag. Returns 0, or -E2BIG / -EINVAL as above (then
 * nothing was sent).
 */
int hax_shim_broadcast_nvec_set(const hax_link_t *links, uint32_t nlinks, uint32_t nr,
				const struct hax_note *notes, uint64_t *tags);
/** Sends a FAILURE_VEC_REP for `pool` echoing the request's cookie. Same returns. */
int hax_shim_send_failure_vec_rep(hax_link_t link, const struct hax_fid *pool,
				  uint64_t cookie_hi, uint64_t cookie_lo, uint32_t nr,
				  const struct hax_note *notes, uint64_t *tag);

/** Confirms a received message, once (inside msg_received or later, while the link lives). */
void hax_shim_delivered(hax_link_t link, const void *motr_msg);
/** Lets a disconnecting link go (call it inside link_is_disconnecting). */
void hax_shim_disconnect(hax_link_t link);

/** Copies the peer endpoint of a link into buf (NUL-terminated); 0 or -errno. */
int hax_shim_link_endpoint(hax_link_t link, char *buf, size_t len);

/** The library the shim was built against: "stand-in" or "motr". */
const char *hax_shim_backend(void);

#ifdef __cplusplus
}
#endif
#endif /* HAX_SHIM_H */
