#include "softflow/openflow.h"
#include "softflow/protocols.h"

#include <arpa/inet.h>

#include <algorithm>
#include <atomic>
#include <bit>

#include "softflow/service.h"

namespace softflow {
namespace {

void unwildcard(FlowKey& wildcards, const FlowKey& bits, const FlowKey& written) {
  for (size_t i = 0; i < kKeyWords; ++i)
    key_words(wildcards)[i] |= key_words(bits)[i] & ~key_words(written)[i];
}

void unwildcard_field(FlowKey& wildcards, Field f, const FlowKey& written) {
  unwildcard(wildcards, field_mask(f), written);
}

// Addresses, ports and sf_metadata are wildcarded prefix by prefix; small
// enumerations (dl_type, nw_proto, sf_stage, ...) as whole fields.
bool prefix_style(Field f) {
  switch (f) {
    case Field::kDlSrc:
    case Field::kDlDst:
    case Field::kNwSrc:
    case Field::kNwDst:
    case Field::kIpv6Src:
    case Field::kIpv6Dst:
    case Field::kTpSrc:
    case Field::kTpDst:
    case Field::kSfMetadata:
      return true;
    default:
      return false;
  }
}

// A rejected rule: add to 'wildcards' enough bits to prove that every packet
// agreeing with 'flow' on them is rejected too.  One differing bit suffices;
// we take the rule's mask bits from the top of the first differing field
// down to the first differing bit, so masks stay prefix-shaped and few (the
// idea behind Open vSwitch's prefix tracking).
void unwildcard_rejection(FlowKey& wildcards, const FlowKey& flow, const OpenFlowTables::Rule& r,
                          const FlowKey& written) {
  const FlowKey& value = r.flow.match.value;
  const FlowKey& mask = r.flow.match.mask;
  FlowKey diff;
  uint64_t already = 0;
  for (size_t i = 0; i < kKeyWords; ++i) {
    key_words(diff)[i] = (key_words(flow)[i] & key_words(mask)[i]) ^ key_words(value)[i];
    already |= key_words(diff)[i] & (key_words(wildcards)[i] | key_words(written)[i]);
  }
  if (already) return;  // bits consulted already (or constant) tell it apart

  const auto* d = reinterpret_cast<const uint8_t*>(&diff);
  const auto* m = reinterpret_cast<const uint8_t*>(&mask);
  const auto* w = reinterpret_cast<const uint8_t*>(&written);
  auto* wc = reinterpret_cast<uint8_t*>(&wildcards);
  for (Field f : fields_by_wildcard_preference()) {
    const FieldInfo& fi = field_info(f);
    bool differs = false;
    for (size_t i = 0; i < fi.size; ++i) differs |= d[fi.offset + i] != 0;
    if (!differs) continue;
    if (!prefix_style(f)) {
      for (size_t i = 0; i < fi.size; ++i)
        wc[fi.offset + i] |= static_cast<uint8_t>(m[fi.offset + i] & ~w[fi.offset + i]);
      return;
    }
    for (size_t i = 0; i < fi.size; ++i) {
      const size_t b = field_significant_byte(f, i);
      if (d[b] == 0) {
        wc[b] |= static_cast<uint8_t>(m[b] & ~w[b]);
        continue;
      }
      const int top = 7 - std::countl_zero(d[b]);  // highest differing bit
      const uint8_t upper = static_cast<uint8_t>(0xff << top);
      wc[b] |= static_cast<uint8_t>(m[b] & upper & ~w[b]);
      return;
    }
  }
}

bool is_ip(uint16_t dl_type) { return dl_type == kEthTypeIpv4 || dl_type == kEthTypeIpv6; }

// Whether a set-field applies to this packet; un-wildcards what it looked at.
bool set_field_applies(const FlowKey& flow, Field f, FlowKey& wildcards, const FlowKey& written) {
  const uint16_t dl_type = ntohs(flow.dl_type);
  switch (f) {
    case Field::kNwSrc:
    case Field::kNwDst:
      unwildcard_field(wildcards, Field::kDlType, written);
      return dl_type == kEthTypeIpv4 || dl_type == kEthTypeArp;
    case Field::kIpv6Src:
    case Field::kIpv6Dst:
      unwildcard_field(wildcards, Field::kDlType, written);
      return dl_type == kEthTypeIpv6;
    case Field::kNwTos:
      unwildcard_field(wildcards, Field::kDlType, written);
      return is_ip(dl_type);
    case Field::kTpSrc:
    case Field::kTpDst:
      unwildcard_field(wildcards, Field::kDlType, written);
      if (!is_ip(dl_type)) return false;
      unwildcard_field(wildcards, Field::kNwProto, written);
      unwildcard_field(wildcards, Field::kNwFrag, written);
      return (flow.nw_proto == 6 || flow.nw_proto == 17) && !(flow.nw_frag & SF_FRAG_LATER);
    default:
      return true;
  }
}

}  // namespace

const char* drop_reason_name(DropReason r) {
  switch (r) {
    case DropReason::kNone: return "none";
    case DropReason::kTableMiss: return "table_miss";
    case DropReason::kActionDrop: return "action_drop";
    case DropReason::kLoopLimit: return "loop_limit";
    case DropReason::kTtlExceeded: return "ttl_exceeded";
    case DropReason::kNoSuchPort: return "no_such_port";
    case DropReason::kCount: break;
  }
  return "?";
}

Status validate_rule(const FlowRule& rule) {
  if (rule.table >= kMaxTables) return Status::error("table " + std::to_string(rule.table) + " out of range");
  for (size_t i = 0; i < rule.actions.size(); ++i) {
    const Action& a = rule.actions[i];
    const bool last = i + 1 == rule.actions.size();
    if (a.type == ActionType::kGotoTable) {
      if (!last) return Status::error("goto_table must be the last action");
      if (a.table <= rule.table || a.table >= kMaxTables)
        return Status::error("goto_table:" + std::to_string(a.table) +
                             " must name a later table than table " + std::to_string(rule.table));
    }
    if (a.type == ActionType::kSoftflow) {
      if (!last) return Status::error("softflow action must be the last action");
      if (ServiceRegistry::instance().name_of(a.service).empty())
        return Status::error("softflow action names unknown service id " + std::to_string(a.service));
    }
    if (a.type == ActionType::kSetField) {
      // Only fields the datapath can rewrite consistently in key and bytes;
      // in particular never sf_stage (it would defeat the loop bound).
      switch (a.field) {
        case Field::kDlSrc: case Field::kDlDst: case Field::kNwSrc: case Field::kNwDst:
        case Field::kIpv6Src: case Field::kIpv6Dst: case Field::kTpSrc: case Field::kTpDst:
        case Field::kSfMetadata:
          break;
        case Field::kNwTos:
          if (a.mask[0] & 0x03) return Status::error("set_field on nw_tos may only change the DSCP bits (mask 0xfc)");
          break;
        default:
          return Status::error(a.field < Field::kCount
                                   ? "set_field cannot set " + std::string(field_info(a.field).name)
                                   : std::string("set_field without a field"));
      }
    }
  }
  return Status::ok();
}

OpenFlowTables::OpenFlowTables() : tables_(kMaxTables) {}

Status OpenFlowTables::add_flow(const FlowRule& rule, uint64_t now_ns) {
  if (Status s = validate_rule(rule); !s) return s;
  Table& t = tables_[rule.table];
  for (Rule* r : t.rules) {
    if (r->flow.priority == rule.priority && r->flow.match == rule.match) {
      remove_rule(r);
      break;
    }
  }
  auto owned = std::make_unique<Rule>();
  owned->id = next_id_++;
  owned->flow = rule;
  owned->created_ns = now_ns;
  Rule* r = owned.get();
  by_id_.emplace(r->id, std::move(owned));
  // Insert after every rule of higher or equal priority (stable order).
  auto pos = std::upper_bound(t.rules.begin(), t.rules.end(), r, [](const Rule* a, const Rule* b) {
    return a->flow.priority > b->flow.priority;
  });
  t.rules.insert(pos, r);
  ++version_;
  return Status::ok();
}

void OpenFlowTables::remove_rule(Rule* r) {
  auto& v = tables_[r->flow.table].rules;
  v.erase(std::find(v.begin(), v.end(), r));
  by_id_.erase(r->id);
}

std::vector<OpenFlowTables::Rule*> OpenFlowTables::select(const Match& filter,
                                                         std::optional<uint8_t> table,
                                                         bool strict, uint16_t priority) {
  std::vector<Rule*> selected;
  for (size_t t = 0; t < tables_.size(); ++t) {
    if (table && *table != t) continue;
    for (Rule* r : tables_[t].rules) {
      const bool hit = strict ? (r->flow.priority == priority && r->flow.match == filter)
                              : filter.covers(r->flow.match);
      if (hit) selected.push_back(r);
    }
  }
  return selected;
}

template <typename Fn>
size_t OpenFlowTables::for_selected(const Match& filter, std::optional<uint8_t> table, bool strict,
                                    uint16_t priority, Fn&& fn) {
  std::vector<Rule*> selected = select(filter, table, strict, priority);
  for (Rule* r : selected) fn(r);
  if (!selected.empty()) ++version_;
  return selected.size();
}

size_t OpenFlowTables::del_flows(const Match& filter, std::optional<uint8_t> table, bool strict,
                                 uint16_t priority) {
  return for_selected(filter, table, strict, priority, [this](Rule* r) { remove_rule(r); });
}

size_t OpenFlowTables::mod_flows(const Match& filter, std::optional<uint8_t> table,
                                 const ActionList& actions, bool strict, uint16_t priority,
                                 Status* error) {
  for (const Rule* r : select(filter, table, strict, priority)) {
    FlowRule candidate = r->flow;
    candidate.actions = actions;
    if (Status s = validate_rule(candidate); !s) {
      if (error) *error = s;
      return 0;
    }
  }
  return for_selected(filter, table, strict, priority,
                      [&actions](Rule* r) { r->flow.actions = actions; });
}

std::vector<const OpenFlowTables::Rule*> OpenFlowTables::rules(std::optional<uint8_t> table) const {
  std::vector<const Rule*> out;
  for (size_t t = 0; t < tables_.size(); ++t) {
    if (table && *table != t) continue;
    out.insert(out.end(), tables_[t].rules.begin(), tables_[t].rules.end());
  }
  return out;
}

const OpenFlowTables::Rule* OpenFlowTables::find(uint64_t id) const {
  auto it = by_id_.find(id);
  return it == by_id_.end() ? nullptr : it->second.get();
}

void OpenFlowTables::credit(uint64_t rule_id, uint64_t packets, uint64_t bytes) {
  auto it = by_id_.find(rule_id);
  if (it == by_id_.end()) return;
  // PMD threads credit the shared rules concurrently, each under its own
  // datapath's lock only (expiry, megaflows that could not be installed);
  // readers hold every datapath lock.
  std::atomic_ref<uint64_t>(it->second->n_packets).fetch_add(packets, std::memory_order_relaxed);
  std::atomic_ref<uint64_t>(it->second->n_bytes).fetch_add(bytes, std::memory_order_relaxed);
}

const OpenFlowTables::Rule* OpenFlowTables::lookup(const Table& table, const FlowKey& flow,
                                                   FlowKey& wildcards,
                                                   const FlowKey& written) const {
  for (const Rule* r : table.rules) {
    if (r->flow.match.matches(flow)) {
      unwildcard(wildcards, r->flow.match.mask, written);
      return r;
    }
    unwildcard_rejection(wildcards, flow, *r, written);
  }
  return nullptr;
}

XlateResult OpenFlowTables::xlate(const FlowKey& key) const {
  XlateResult res;
  res.wildcards = zero_key();
  res.written = zero_key();
  FlowKey flow = key;
  bool produced_output = false;
  uint8_t table = 0;
  for (;;) {
    const Rule* rule = lookup(tables_[table], flow, res.wildcards, res.written);
    if (rule == nullptr) {
      res.steps.push_back({table, 0});
      if (!produced_output) res.drop_reason = DropReason::kTableMiss;
      break;
    }
    res.steps.push_back({table, rule->id});
    std::optional<uint8_t> next_table;
    for (const Action& a : rule->flow.actions) {
      switch (a.type) {
        case ActionType::kOutput:
          // OpenFlow never sends a packet back out its ingress port through
          // output:N (use the in_port action for that).
          unwildcard_field(res.wildcards, Field::kInPort, res.written);
          if (a.port != flow.in_port) {
            res.actions.push_back(a);
            produced_output = true;
          }
          break;
        case ActionType::kOutputInPort:
          res.actions.push_back(a);
          produced_output = true;
          break;
        case ActionType::kSetField:
          if (set_field_applies(flow, a.field, res.wildcards, res.written)) {
            apply_set_field(flow, a);
            key_or_into(res.written, set_field_written_mask(a));
            res.actions.push_back(a);
          }
          break;
        case ActionType::kDecTtl:
          unwildcard_field(res.wildcards, Field::kDlType, res.written);
          if (is_ip(ntohs(flow.dl_type))) res.actions.push_back(a);
          break;
        case ActionType::kGotoTable:
          next_table = a.table;
          break;
        case ActionType::kSoftflow:
          res.actions.push_back(a);
          break;
      }
    }
    if (!next_table) break;
    table = *next_table;
  }
  res.final_key = flow;
  if (!produced_output && !res.ends_in_service() && res.drop_reason == DropReason::kNone)
    res.drop_reason = DropReason::kActionDrop;
  return res;
}

}  // namespace softflow
