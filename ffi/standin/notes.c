/*
 * notes.c: HA's own process and service events and the process notes on the self link. See
 * standin.h.
 */
#include "standin.h"

/* ------------------------------------------------------------------ own events (locked) */

static void self_event(struct m0_halon_interface *hi, bool process, uint64_t event,
		       uint64_t type, const struct m0_fid *svc)
{
	struct m0_ha_link *l = hi->self_link;
	struct rcv *r = rcv_new();
	struct m0_ha_msg *m = &r->r_msg;

	m->hm_time = real_ns();
	if (process) {
		m->hm_fid = hi->process;
		m->hm_data.hed_type = M0_HA_MSG_EVENT_PROCESS;
		m->hm_data.u.hed_event_process.chp_event = event;
		m->hm_data.u.hed_event_process.chp_type = type;
		m->hm_data.u.hed_event_process.chp_pid = (uint64_t)getpid();
	} else {
		m->hm_fid = *svc;
		m->hm_source_process = hi->process;
		m->hm_data.hed_type = M0_HA_MSG_EVENT_SERVICE;
		m->hm_data.u.hed_event_service.chs_event = event;
		m->hm_data.u.hed_event_service.chs_type = type;
		m->hm_data.u.hed_event_service.chs_pid = (uint64_t)getpid();
	}
	l->hl_rx_tag += 2;
	r->r_tag = l->hl_rx_tag;
	link_receive(hi, l, r);
}

enum { SVC_TYPE_RMS = 4, SVC_TYPE_HA = 6 };

void self_events_start(struct m0_halon_interface *hi)
{
	self_event(hi, true, M0_CONF_HA_PROCESS_STARTING, M0_CONF_HA_PROCESS_M0D, NULL);
	self_event(hi, false, M0_CONF_HA_SERVICE_STARTING, SVC_TYPE_HA, &hi->ha_svc);
	self_event(hi, false, M0_CONF_HA_SERVICE_STARTED, SVC_TYPE_HA, &hi->ha_svc);
	self_event(hi, false, M0_CONF_HA_SERVICE_STARTING, SVC_TYPE_RMS, &hi->rm_svc);
	self_event(hi, false, M0_CONF_HA_SERVICE_STARTED, SVC_TYPE_RMS, &hi->rm_svc);
	self_event(hi, true, M0_CONF_HA_PROCESS_STARTED, M0_CONF_HA_PROCESS_M0D, NULL);
}

void self_events_stop(struct m0_halon_interface *hi)
{
	self_event(hi, true, M0_CONF_HA_PROCESS_STOPPING, M0_CONF_HA_PROCESS_M0D, NULL);
	self_event(hi, false, M0_CONF_HA_SERVICE_STOPPING, SVC_TYPE_RMS, &hi->rm_svc);
	self_event(hi, false, M0_CONF_HA_SERVICE_STOPPED, SVC_TYPE_RMS, &hi->rm_svc);
	self_event(hi, false, M0_CONF_HA_SERVICE_STOPPING, SVC_TYPE_HA, &hi->ha_svc);
	self_event(hi, false, M0_CONF_HA_SERVICE_STOPPED, SVC_TYPE_HA, &hi->ha_svc);
	self_event(hi, true, M0_CONF_HA_PROCESS_STOPPED, M0_CONF_HA_PROCESS_M0D, NULL);
}

/* An HA message sent on the self link: NVEC SET notes about processes drop their links. */
void self_handle(struct m0_halon_interface *hi, const struct m0_ha_msg *msg)
{
	const struct m0_ha_msg_nvec *nv = &msg->hm_data.u.hed_nvec;

	if (msg->hm_data.hed_type != M0_HA_MSG_NVEC || nv->hmnv_type != M0_HA_NVEC_SET)
		return;
	for (uint64_t i = 0; i < nv->hmnv_nr; i++) {
		const struct m0_ha_note *n = &nv->hmnv_arr.hmna_arr[i];
		struct note_state *ns;

		if ((n->no_id.f_container >> 56) != PROCESS_FID_TYPE)
			continue;
		for (ns = hi->notes; ns != NULL; ns = ns->ns_next) {
			if (fid_eq(&ns->ns_fid, &n->no_id))
				break;
		}
		if (ns == NULL) {
			if (hi->notes_nr >= NOTES_MAX)
				assert_info("hii->hii_nvec_size < ARRAY_SIZE(hii->hii_nvec)",
					    "halon_interface_process_failure_check",
					    "Currently we don't support more than 4096 processes "
					    "connected to a single m0_halon_interface.");
			hi->notes_nr++;
			ns = xcalloc(1, sizeof *ns);
			ns->ns_fid = n->no_id;
			ns->ns_state = n->no_state;
			ns->ns_next = hi->notes;
			hi->notes = ns;
			if (hi->log_link)
				slog("first note for process " FID_F " (state %u): recorded only",
				     FID_P(&n->no_id), n->no_state);
			continue;
		}
		if (nv->hmnv_ignore_same_state && ns->ns_state == n->no_state)
			continue;
		ns->ns_state = n->no_state;
		if (n->no_state != M0_NC_FAILED)
			continue;
		/* m0_ha_process_failed(): every link of that process, the self link included */
		if (fid_eq(&n->no_id, &hi->process)) {
			slog("m0_ha_process_failed: disconnecting local link");
			hi->self_failed = true;
		}
		for (struct m0_ha_link *l = hi->links; l != NULL; l = l->hl_next) {
			if (l->hl_state == LS_ALIVE && fid_eq(&l->hl_process, &n->no_id))
				link_start_disconnect(hi, l);
		}
	}
}

/*
 * The local link's entrypoint re-request after HA noted its own process FAILED: Motr answers
 * it "disconnected previously" and the requester (HA's own side) panics.
 */
void self_rerequest_check(struct m0_halon_interface *hi)
{
	if (hi->self_failed)
		assert_info("!rep->hae_disconnected_previously", "ha_entrypoint_state_cb",
			    "HA has already decided that this process has failed (ha/ha.c:304; "
			    "HA noted its own process FAILED on the self link)");
}
