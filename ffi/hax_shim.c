/*
 * hax_shim.c: the only code of hax that touches Motr's types.
 *
 * It owns the (one) m0_halon_interface, converts Motr's callbacks into the plain structs of
 * hax_shim.h and forwards them to the callbacks hax registered, and builds Motr messages for
 * hax's sends. It compiles against the stand-in (ffi/standin/include) or against a real Motr
 * build tree (cargo feature `motr`), so it uses only names both provide.
 *
 * Callbacks have no user-data argument in Motr, so the interface and hax's callbacks are
 * globals, set once by hax_shim_init().
 *
 * Threads: the shim adopts no thread. The thread that calls hax_shim_init() is Motr's main
 * thread (adopting it again makes Motr's fini panic); any other thread that calls in is one
 * Motr does not know, and Motr gives it the main instance by itself (an "anon" thread).
 */
#include "hax_shim.h"

#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "conf/ha.h"
#include "fid/fid.h"
#include "ha/halon/interface.h"
#include "ha/link.h"
#include "ha/msg.h"
#include "ha/note.h"
#include "lib/types.h"

static struct m0_halon_interface *g_hi;
static struct hax_callbacks g_cb;
/* Notes of the message being handed to hax on this thread (valid during the callback). */
static __thread struct hax_note t_notes[HAX_NOTES_MAX];

static inline hax_link_t link_id(struct m0_ha_link *hl)
{
	return (hax_link_t)(uintptr_t)hl;
}

static inline struct m0_ha_link *link_ptr(hax_link_t link)
{
	return (struct m0_ha_link *)(uintptr_t)link;
}

static inline struct hax_fid fid_out(const struct m0_fid *f)
{
	struct hax_fid r = {0, 0};

	if (f != NULL) {
		r.container = f->f_container;
		r.key = f->f_key;
	}
	return r;
}

static inline struct m0_fid fid_in(const struct hax_fid *f)
{
	struct m0_fid r = {.f_container = f->container, .f_key = f->key};
	return r;
}

static uint32_t notes_out(const struct m0_ha_note *in, uint64_t nr)
{
	uint32_t i;

	if (nr > HAX_NOTES_MAX)
		nr = HAX_NOTES_MAX;
	for (i = 0; i < nr; i++) {
		t_notes[i].fid = fid_out(&in[i].no_id);
		t_notes[i].state = in[i].no_state;
	}
	return (uint32_t)nr;
}

/* ---- Motr → hax --------------------------------------------------------------------- */

static void cb_entrypoint_request(struct m0_halon_interface *hi, const struct m0_uint128 *req_id,
				  const char *remote_rpc_endpoint,
				  const struct m0_fid *process_fid, const char *git_rev_id,
				  uint64_t pid, bool first_request)
{
	struct hax_entrypoint_req req = {
		.req_hi = req_id->u_hi,
		.req_lo = req_id->u_lo,
		.remote_ep = remote_rpc_endpoint != NULL ? remote_rpc_endpoint : "",
		.process = fid_out(process_fid),
		.git_rev = git_rev_id != NULL ? git_rev_id : "",
		.pid = pid,
		.first_request = first_request ? 1 : 0,
	};
	(void)hi;
	g_cb.entrypoint_request(&req);
}

static void msg_convert(const struct m0_ha_msg *m, struct hax_msg *out)
{
	const struct m0_ha_msg_data *d = &m->hm_data;

	memset(out, 0, sizeof *out);
	out->raw_type = d->hed_type;
	out->fid = fid_out(&m->hm_fid);
	out->src_process = fid_out(&m->hm_source_process);
	out->src_service = fid_out(&m->hm_source_service);
	out->time = m->hm_time;
	out->epoch = m->hm_epoch;
	out->motr_msg = m;

	switch (d->hed_type) {
	case M0_HA_MSG_EVENT_PROCESS:
		out->kind = HAX_MSG_PROCESS_EVENT;
		out->event = d->u.hed_event_process.chp_event;
		out->obj_type = d->u.hed_event_process.chp_type;
		out->pid = d->u.hed_event_process.chp_pid;
		break;
	case M0_HA_MSG_EVENT_SERVICE:
		out->kind = HAX_MSG_SERVICE_EVENT;
		out->event = d->u.hed_event_service.chs_event;
		out->obj_type = d->u.hed_event_service.chs_type;
		out->pid = d->u.hed_event_service.chs_pid;
		break;
	case M0_HA_MSG_NVEC:
		out->kind = d->u.hed_nvec.hmnv_type == M0_HA_NVEC_GET ? HAX_MSG_NVEC_GET
								      : HAX_MSG_NVEC_SET;
		out->id_of_get = d->u.hed_nvec.hmnv_id_of_get;
		out->ignore_same_state = d->u.hed_nvec.hmnv_ignore_same_state != 0;
		out->nr = notes_out(d->u.hed_nvec.hmnv_arr.hmna_arr, d->u.hed_nvec.hmnv_nr);
		out->notes = t_notes;
		break;
	case M0_HA_MSG_FAILURE_VEC_REQ:
		out->kind = HAX_MSG_FAILURE_VEC_REQ;
		out->pool = fid_out(&d->u.hed_fvec_req.mfq_pool);
		out->cookie_hi = d->u.hed_fvec_req.mfq_cookie.co_addr;
		out->cookie_lo = d->u.hed_fvec_req.mfq_cookie.co_generation;
		break;
	case M0_HA_MSG_STOB_IOQ:
		out->kind = HAX_MSG_STOB_IOQ;
		out->sdev = fid_out(&d->u.hed_stob_ioq.sie_conf_sdev);
		out->stob_domain = fid_out(&d->u.hed_stob_ioq.sie_stob_id.si_domain_fid);
		out->stob_fid = fid_out(&d->u.hed_stob_ioq.sie_stob_id.si_fid);
		out->fd = d->u.hed_stob_ioq.sie_fd;
		out->opcode = (uint32_t)d->u.hed_stob_ioq.sie_opcode;
		out->rc = (int32_t)d->u.hed_stob_ioq.sie_rc;
		out->offset = d->u.hed_stob_ioq.sie_offset;
		out->size = d->u.hed_stob_ioq.sie_size;
		out->bshift = d->u.hed_stob_ioq.sie_bshift;
		break;
	case M0_HA_MSG_EVENT_RPC:
		out->kind = HAX_MSG_RPC_EVENT;
		out->rpc_attempts = d->u.hed_event_rpc.hmr_attempts;
		out->rpc_state = d->u.hed_event_rpc.hmr_state;
		break;
	case M0_HA_MSG_BE_IO_ERR:
		out->kind = HAX_MSG_BE_IO_ERR;
		break;
	case M0_HA_MSG_SNS_ERR:
		out->kind = HAX_MSG_SNS_ERR;
		break;
	case M0_HA_MSG_KEEPALIVE_REQ:
	case M0_HA_MSG_KEEPALIVE_REP:
		out->kind = HAX_MSG_KEEPALIVE;
		break;
	default:
		out->kind = HAX_MSG_OTHER;
		break;
	}
}

static void cb_msg_received(struct m0_halon_interface *hi, struct m0_ha_link *hl,
			    const struct m0_ha_msg *msg, uint64_t tag)
{
	struct hax_msg m;

	(void)hi;
	msg_convert(msg, &m);
	g_cb.msg_received(link_id(hl), &m, tag);
}

static void cb_msg_is_delivered(struct m0_halon_interface *hi, struct m0_ha_link *hl,
				uint64_t tag)
{
	(void)hi;
	g_cb.msg_delivered(link_id(hl), tag);
}

static void cb_msg_is_not_delivered(struct m0_halon_interface *hi, struct m0_ha_link *hl,
				    uint64_t tag)
{
	(void)hi;
	g_cb.msg_not_delivered(link_id(hl), tag);
}

static void cb_link_connected(struct m0_halon_interface *hi, const struct m0_uint128 *req_id,
			      struct m0_ha_link *hl)
{
	char ep[HAX_ENDPOINT_MAX + 1];

	(void)hi;
	/* Motr's m0_ha_link_rpc_endpoint() returns nothing; it terminates the string. */
	ep[0] = '\0';
	m0_ha_link_rpc_endpoint(hl, ep, sizeof ep);
	ep[sizeof ep - 1] = '\0';
	g_cb.link_connected(req_id->u_hi, req_id->u_lo, link_id(hl), ep);
}

static void cb_link_reused(struct m0_halon_interface *hi, const struct m0_uint128 *req_id,
			   struct m0_ha_link *hl)
{
	(void)hi;
	g_cb.link_reused(req_id->u_hi, req_id->u_lo, link_id(hl));
}

static void cb_link_absent(struct m0_halon_interface *hi, const struct m0_uint128 *req_id)
{
	(void)hi;
	g_cb.link_absent(req_id->u_hi, req_id->u_lo);
}

static void cb_link_is_disconnecting(struct m0_halon_interface *hi, struct m0_ha_link *hl)
{
	(void)hi;
	g_cb.link_is_disconnecting(link_id(hl));
}

static void cb_link_disconnected(struct m0_halon_interface *hi, struct m0_ha_link *hl)
{
	(void)hi;
	g_cb.link_disconnected(link_id(hl));
}

/* ---- hax → Motr --------------------------------------------------------------------- */

static bool callbacks_complete(const struct hax_callbacks *cb)
{
	return cb->entrypoint_request && cb->msg_received && cb->msg_delivered &&
	       cb->msg_not_delivered && cb->link_connected && cb->link_reused &&
	       cb->link_absent && cb->link_is_disconnecting && cb->link_disconnected;
}

int hax_shim_init(const struct hax_callbacks *cb, const char *node_uuid)
{
	int rc;

	if (cb == NULL || !callbacks_complete(cb))
		return -EINVAL;
	if (g_hi != NULL)
		return -EEXIST;
	g_cb = *cb;
	/* hax and Motr may come from different builds: skip the build-string comparison. */
	rc = m0_halon_interface_init(&g_hi, "hax", "", "disable-compatibility-check", node_uuid);
	if (rc != 0)
		g_hi = NULL;
	return rc;
}

int hax_shim_start(const char *local_endpoint, const struct hax_fid *process,
		   const struct hax_fid *ha_service, const struct hax_fid *rm_service)
{
	struct m0_fid p, ha, rm;

	if (g_hi == NULL)
		return -ENOTCONN;
	if (local_endpoint == NULL || process == NULL || ha_service == NULL || rm_service == NULL)
		return -EINVAL;
	p = fid_in(process);
	ha = fid_in(ha_service);
	rm = fid_in(rm_service);
	return m0_halon_interface_start(g_hi, local_endpoint, &p, &ha, &rm, cb_entrypoint_request,
					cb_msg_received, cb_msg_is_delivered,
					cb_msg_is_not_delivered, cb_link_connected, cb_link_reused,
					cb_link_absent, cb_link_is_disconnecting,
					cb_link_disconnected);
}

void hax_shim_stop(void)
{
	if (g_hi != NULL)
		m0_halon_interface_stop(g_hi);
}

void hax_shim_fini(void)
{
	if (g_hi != NULL) {
		m0_halon_interface_fini(g_hi);
		g_hi = NULL;
	}
}

void hax_shim_entrypoint_reply(uint64_t req_hi, uint64_t req_lo, int rc, uint32_t confd_nr,
			       const struct hax_fid *confd_fids, const char *const *confd_eps,
			       uint32_t quorum, const struct hax_fid *rm_fid, const char *rm_ep)
{
	struct m0_uint128 req_id = {.u_hi = req_hi, .u_lo = req_lo};
	struct m0_fid *fids = NULL;
	struct m0_fid rm = {0, 0};
	uint32_t i;

	if (g_hi == NULL)
		return;
	if (confd_nr > 0 && (confd_fids == NULL || confd_eps == NULL))
		confd_nr = 0;
	if (confd_nr > 0) {
		fids = calloc(confd_nr, sizeof *fids);
		if (fids == NULL) {
			/* Out of memory: ask the process to come back rather than lie to it. */
			rc = rc != 0 ? rc : -ENOMEM;
			confd_nr = 0;
		}
	}
	for (i = 0; i < confd_nr; i++)
		fids[i] = fid_in(&confd_fids[i]);
	if (rm_fid != NULL)
		rm = fid_in(rm_fid);
	m0_halon_interface_entrypoint_reply(g_hi, &req_id, rc, confd_nr, fids,
					    (const char **)confd_eps, quorum, &rm,
					    rm_ep != NULL ? rm_ep : "");
	free(fids);
}

static struct m0_ha_msg *msg_new(uint64_t type)
{
	struct m0_ha_msg *m = calloc(1, sizeof *m); /* hm_tag stays 0, as Motr requires */
	struct timespec ts;

	if (m == NULL)
		return NULL;
	clock_gettime(CLOCK_REALTIME, &ts);
	m->hm_time = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
	m->hm_data.hed_type = type;
	return m;
}

static void notes_in(struct m0_ha_note *out, const struct hax_note *in, uint32_t nr)
{
	uint32_t i;

	for (i = 0; i < nr; i++) {
		out[i].no_id = fid_in(&in[i].fid);
		out[i].no_state = in[i].state;
	}
}

int hax_shim_send_nvec_set(hax_link_t link, uint64_t id_of_get, int ignore_same_state,
			   uint32_t nr, const struct hax_note *notes, uint64_t *tag)
{
	struct m0_ha_msg *m;

	if (g_hi == NULL || link == 0 || tag == NULL || (nr > 0 && notes == NULL))
		return -EINVAL;
	if (nr > HAX_NOTES_MAX)
		return -E2BIG;
	m = msg_new(M0_HA_MSG_NVEC);
	if (m == NULL)
		return -ENOMEM;
	m->hm_data.u.hed_nvec.hmnv_type = M0_HA_NVEC_SET;
	m->hm_data.u.hed_nvec.hmnv_id_of_get = id_of_get;
	m->hm_data.u.hed_nvec.hmnv_ignore_same_state = ignore_same_state ? 1 : 0;
	m->hm_data.u.hed_nvec.hmnv_nr = nr;
	notes_in(m->hm_data.u.hed_nvec.hmnv_arr.hmna_arr, notes, nr);
	m0_halon_interface_send(g_hi, link_ptr(link), m, tag);
	free(m);
	return 0;
}

int hax_shim_broadcast_nvec_set(const hax_link_t *links, uint32_t nlinks, uint32_t nr,
				const struct hax_note *notes, uint64_t *tags)
{
	struct m0_ha_msg *m;
	uint32_t i;

	if (g_hi == NULL || (nlinks > 0 && (links == NULL || tags == NULL)) ||
	    (nr > 0 && notes == NULL))
		return -EINVAL;
	if (nr > HAX_NOTES_MAX)
		return -E2BIG;
	for (i = 0; i < nlinks; i++) {
		if (links[i] == 0)
			return -EINVAL;
	}
	/* The message is large (1024 notes inline) and Motr only reads it: build it once. */
	m = msg_new(M0_HA_MSG_NVEC);
	if (m == NULL)
		return -ENOMEM;
	m->hm_data.u.hed_nvec.hmnv_type = M0_HA_NVEC_SET;
	m->hm_data.u.hed_nvec.hmnv_id_of_get = 0;
	m->hm_data.u.hed_nvec.hmnv_ignore_same_state = 1;
	m->hm_data.u.hed_nvec.hmnv_nr = nr;
	notes_in(m->hm_data.u.hed_nvec.hmnv_arr.hmna_arr, notes, nr);
	for (i = 0; i < nlinks; i++)
		m0_halon_interface_send(g_hi, link_ptr(links[i]), m, &tags[i]);
	free(m);
	return 0;
}

int hax_shim_send_failure_vec_rep(hax_link_t link, const struct hax_fid *pool,
				  uint64_t cookie_hi, uint64_t cookie_lo, uint32_t nr,
				  const struct hax_note *notes, uint64_t *tag)
{
	struct m0_ha_msg *m;

	if (g_hi == NULL || link == 0 || pool == NULL || tag == NULL || (nr > 0 && notes == NULL))
		return -EINVAL;
	if (nr > HAX_NOTES_MAX)
		return -E2BIG;
	m = msg_new(M0_HA_MSG_FAILURE_VEC_REP);
	if (m == NULL)
		return -ENOMEM;
	m->hm_data.u.hed_fvec_rep.mfp_pool = fid_in(pool);
	m->hm_data.u.hed_fvec_rep.mfp_cookie.co_addr = cookie_hi;
	m->hm_data.u.hed_fvec_rep.mfp_cookie.co_generation = cookie_lo;
	m->hm_data.u.hed_fvec_rep.mfp_nr = nr;
	notes_in(m->hm_data.u.hed_fvec_rep.mfp_vec.hmna_arr, notes, nr);
	m0_halon_interface_send(g_hi, link_ptr(link), m, tag);
	free(m);
	return 0;
}

void hax_shim_delivered(hax_link_t link, const void *motr_msg)
{
	if (g_hi != NULL && link != 0 && motr_msg != NULL)
		m0_halon_interface_delivered(g_hi, link_ptr(link), motr_msg);
}

void hax_shim_disconnect(hax_link_t link)
{
	if (g_hi != NULL && link != 0)
		m0_halon_interface_disconnect(g_hi, link_ptr(link));
}

int hax_shim_link_endpoint(hax_link_t link, char *buf, size_t len)
{
	if (link == 0 || buf == NULL || len == 0)
		return -EINVAL;
	buf[0] = '\0';
	m0_ha_link_rpc_endpoint(link_ptr(link), buf, len);
	buf[len - 1] = '\0';
	return 0;
}

const char *hax_shim_backend(void)
{
#ifdef HAX_BACKEND_MOTR
	return "motr";
#else
	return "stand-in";
#endif
}
