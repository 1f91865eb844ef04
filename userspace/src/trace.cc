// sfctl trace: the slow path's view of one packet, stage by stage.
//
// Each stage is one xlate() from table 0, exactly what an upcall does.  The
// megaflow a stage would install, and how coalesced stages merge into one
// megaflow, follow Datapath::upcall() and Datapath::reinject()'s builder:
//   stage 0 of a megaflow:  mask  = wildcards
//                           written = set-field bits | sf_stage/sf_action/sf_metadata
//   each coalesced stage:   mask |= (wildcards & ~written) | sf_stage
//                           written |= its set-field bits
// Bits written earlier in the chain are constant for every packet of the
// megaflow (sf_metadata through the run-time guard), so later stages need
// not match them; sf_stage is matched in full so that the entry stage, and
// with it every later stage number, is fixed.
#include "softflow/trace.h"

#include <arpa/inet.h>
#include <fmt/format.h>

#include <vector>

#include "softflow/flow_syntax.h"
#include "softflow/openflow.h"
#include "softflow/protocols.h"
#include "softflow/service.h"
#include "softflow/switch.h"

namespace softflow {
namespace {

using Json = nlohmann::json;

FlowKey service_written_bits() {
  FlowKey m = field_mask(Field::kSfStage);
  key_or_into(m, field_mask(Field::kSfAction));
  key_or_into(m, field_mask(Field::kSfMetadata));
  return m;
}

std::string match_text(const FlowKey& value, const FlowKey& mask) {
  Match m;
  m.mask = mask;
  m.value = key_and(value, mask);
  const std::string text = print_match(m);
  return text.empty() ? "any" : text;
}

// The key's non-zero fields in flow syntax (what the user would write).
std::string key_text(const FlowKey& key) {
  const bool ipv6 = ntohs(key.dl_type) == kEthTypeIpv6;
  FlowKey mask = zero_key();
  for (size_t i = 0; i < kFieldCount; ++i) {
    const Field f = static_cast<Field>(i);
    // IPv4 and IPv6 addresses share their slots in the key.
    if ((f == Field::kNwSrc || f == Field::kNwDst) && ipv6) continue;
    if ((f == Field::kIpv6Src || f == Field::kIpv6Dst) && !ipv6) continue;
    const uint8_t* p = field_ptr(key, f);
    bool nonzero = false;
    for (size_t b = 0; b < field_info(f).size; ++b) nonzero |= p[b] != 0;
    if (nonzero) key_or_into(mask, field_mask(f));
  }
  // nw_tos is matched on its DSCP bits only.
  set_field_uint(mask, Field::kNwTos, get_field_uint(mask, Field::kNwTos) & 0xfc);
  if (key_is_zero(mask)) return "(all fields zero)";
  return match_text(key, mask);
}

std::string service_name(uint8_t id) {
  const std::string_view name = ServiceRegistry::instance().name_of(id);
  return name.empty() ? std::to_string(id) : std::string(name);
}

// One megaflow as the datapath's builder would put it together.
struct MegaflowBuild {
  FlowKey origin;
  FlowKey mask;
  FlowKey written;
  std::vector<unsigned> stages;
  std::vector<ActionList> segments;
  std::vector<uint32_t> guards;  // sf_metadata guard of each segment after the first
};

std::string megaflow_actions_text(const MegaflowBuild& mb) {
  std::string out;
  for (size_t i = 0; i < mb.segments.size(); ++i) {
    if (i > 0) out += fmt::format(" [coalesced if sf_metadata={}] ", mb.guards[i - 1]);
    out += print_actions(mb.segments[i]);
  }
  return out;
}

TraceResult trace_locked(Switch& sw, const FlowKey& start, const TraceOptions& options) {
  const OpenFlowTables& tables = sw.tables();
  const bool coalescing = sw.datapath(0).coalescing();
  const FlowKey stage_mask = field_mask(Field::kSfStage);
  const FlowKey service_written = service_written_bits();

  TraceResult out;
  std::string& text = out.text;
  Json stages = Json::array();
  std::vector<MegaflowBuild> megaflows;
  ActionList all_actions;
  std::string dropped;  // drop reason name, if the packet ends dropped
  bool join_previous = false;

  text += fmt::format("Flow: {}\n", key_text(start));
  text += fmt::format("Coalescing: {}\n", coalescing ? "on" : "off");

  FlowKey key = start;
  for (;;) {
    const unsigned stage = key.sf_stage;
    const XlateResult xr = tables.xlate(key);
    Json js = {{"stage", stage}, {"key", key_text(key)}};

    text += fmt::format("\nstage {}:\n  key: {}\n", stage, key_text(key));
    Json jtables = Json::array();
    for (const XlateStep& step : xr.steps) {
      const OpenFlowTables::Rule* rule = step.rule_id ? tables.find(step.rule_id) : nullptr;
      if (rule == nullptr) {
        text += fmt::format("  table {}: table miss: drop\n", step.table);
        jtables.push_back({{"table", step.table}, {"miss", true}});
      } else {
        const std::string flow = print_flow(rule->flow);
        text += fmt::format("  table {}: {}\n", step.table, flow);
        jtables.push_back({{"table", step.table}, {"rule_id", rule->id}, {"rule", flow}});
      }
    }
    js["tables"] = std::move(jtables);

    const std::string actions = print_actions(xr.actions);
    text += fmt::format("  datapath actions: {}", actions);
    if (xr.drop_reason != DropReason::kNone)
      text += fmt::format(" (dropped: {})", drop_reason_name(xr.drop_reason));
    text += "\n";
    js["actions"] = actions;
    js["drop_reason"] =
        xr.drop_reason == DropReason::kNone ? Json() : Json(drop_reason_name(xr.drop_reason));
    const std::string stage_mask_text = match_text(key, xr.wildcards);
    text += fmt::format("  megaflow mask of this stage: {}\n", stage_mask_text);
    js["mask"] = stage_mask_text;
    all_actions.insert(all_actions.end(), xr.actions.begin(), xr.actions.end());

    // Merge into the megaflow under construction, as the builder does.
    if (!join_previous) {
      MegaflowBuild mb;
      mb.origin = key;
      mb.mask = xr.wildcards;
      mb.written = xr.written;
      key_or_into(mb.written, service_written);
      megaflows.push_back(std::move(mb));
    } else {
      MegaflowBuild& mb = megaflows.back();
      key_or_into(mb.mask, key_and_not(xr.wildcards, mb.written));
      key_or_into(mb.mask, stage_mask);
      key_or_into(mb.written, xr.written);
      mb.guards.push_back(key.sf_metadata);
      const std::string merged = match_text(mb.origin, mb.mask);
      text +=
          fmt::format("  merged megaflow (stages {}-{}): {}\n", mb.stages.front(), stage, merged);
      js["merged_mask"] = merged;
    }
    megaflows.back().stages.push_back(stage);
    megaflows.back().segments.push_back(xr.actions);
    js["megaflow"] = megaflows.size() - 1;

    if (!xr.ends_in_service()) {
      if (xr.drop_reason != DropReason::kNone) dropped = drop_reason_name(xr.drop_reason);
      stages.push_back(std::move(js));
      break;
    }

    const Action& sf = xr.actions.back();
    const std::string name = service_name(sf.service);
    text += fmt::format("  service {} runs with argument {} (not run by the trace)\n", name,
                        sf.sf_argument);
    js["service"] = {{"name", name}, {"argument", sf.sf_argument}};

    const unsigned next_stage = stage + 1;
    if (next_stage >= SF_MAX_STAGES) {
      text += fmt::format(
          "  stage {} would exceed the loop bound (SF_MAX_STAGES={}): the packet is dropped "
          "(loop_limit)\n",
          next_stage, SF_MAX_STAGES);
      dropped = drop_reason_name(DropReason::kLoopLimit);
      js["next"] = {{"sf_stage", next_stage}, {"dropped", dropped}};
      stages.push_back(std::move(js));
      break;
    }

    // The next stage sees the key after this stage's set-fields, and the
    // metadata the service leaves (assumed unchanged unless the user said).
    FlowKey next = xr.final_key;
    next.sf_stage = static_cast<uint8_t>(next_stage);
    next.sf_action = sf.service;
    const auto given = options.metadata.find(static_cast<uint8_t>(next_stage));
    if (given != options.metadata.end()) next.sf_metadata = given->second;
    text += fmt::format("  next: sf_stage={}, sf_action={}, sf_metadata={} ({})\n", next_stage,
                        name, next.sf_metadata,
                        given != options.metadata.end() ? "given with --metadata"
                                                        : "assumed unchanged by the service");
    Json jnext = {{"sf_stage", next_stage},
                  {"sf_action", name},
                  {"sf_metadata", next.sf_metadata},
                  {"metadata_given", given != options.metadata.end()},
                  {"coalesced", coalescing}};
    if (coalescing)
      text += fmt::format(
          "  stage {} is coalesced into the same megaflow if {} sets sf_coalesce "
          "(guard: sf_metadata={})\n",
          next_stage, name, next.sf_metadata);
    else
      text += fmt::format("  stage {} is looked up separately (coalescing is off)\n", next_stage);
    js["next"] = std::move(jnext);
    stages.push_back(std::move(js));
    join_previous = coalescing;
    key = next;
  }

  // Summary: everything the packet gets, and the megaflow(s) it would create.
  Json jmegaflows = Json::array();
  text += fmt::format("\nFinal flow: {}\n", key_text(key));
  text += fmt::format("Datapath actions: {}", print_actions(all_actions));
  if (!dropped.empty()) text += (all_actions.empty() ? " (" : ", then dropped (") + dropped + ")";
  text += "\n";
  for (const MegaflowBuild& mb : megaflows) {
    const std::string match = match_text(mb.origin, mb.mask);
    const std::string actions = megaflow_actions_text(mb);
    text += fmt::format("Megaflow: {} actions={}\n", match, actions);
    jmegaflows.push_back({{"match", match}, {"actions", actions}, {"stages", mb.stages}});
  }

  out.json = {{"flow", key_text(start)},
              {"coalescing", coalescing},
              {"stages", std::move(stages)},
              {"final_flow", key_text(key)},
              {"datapath_actions", print_actions(all_actions)},
              {"dropped", dropped.empty() ? Json() : Json(dropped)},
              {"megaflows", std::move(jmegaflows)}};
  return out;
}

}  // namespace

TraceResult trace_flow(Switch& sw, const FlowKey& start, const TraceOptions& options) {
  return sw.exclusive([&] { return trace_locked(sw, start, options); });
}

}  // namespace softflow
