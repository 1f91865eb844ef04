// OpenFlow tables and the slow path (xlate).
//
// xlate walks a flow key through the tables from table 0 and returns the
// datapath action list plus a wildcard mask: every key bit that any rule
// consulted on the way (the matched rule's whole mask, and for each
// higher-priority rule that was checked and rejected, enough bits to prove it
// does not match).  Every packet that agrees with the key on those bits takes
// the same path, which is what makes a megaflow correct.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <unordered_map>
#include <vector>

#include "softflow/flow.h"
#include "softflow/status.h"

namespace softflow {

enum class DropReason : uint8_t {
  kNone = 0,
  kTableMiss,     // a table had no matching rule
  kActionDrop,    // the action list produced no output (drop / empty)
  kLoopLimit,     // the packet would exceed SF_MAX_STAGES SoftFlow stages
  kTtlExceeded,   // dec_ttl on TTL/hop limit <= 1
  kNoSuchPort,    // output to a port that does not exist
  kCount
};
const char* drop_reason_name(DropReason r);

// One table visit during xlate (for `sfctl trace` and rule statistics).
struct XlateStep {
  uint8_t table = 0;
  uint64_t rule_id = 0;  // 0: table miss
};

struct XlateResult {
  ActionList actions;       // datapath actions; a kSoftflow action is last
  FlowKey wildcards;        // key bits consulted (the megaflow mask)
  FlowKey written;          // key bits set by set-field actions of this stage
  FlowKey final_key;        // the key after this stage's set-field actions
  std::vector<XlateStep> steps;
  DropReason drop_reason = DropReason::kNone;  // why, if no output and no service

  bool ends_in_service() const {
    return !actions.empty() && actions.back().type == ActionType::kSoftflow;
  }
};

class OpenFlowTables {
 public:
  struct Rule {
    uint64_t id = 0;  // unique, never reused
    FlowRule flow;
    uint64_t n_packets = 0;
    uint64_t n_bytes = 0;
    uint64_t created_ns = 0;
  };

  OpenFlowTables();

  // Adds a rule; a rule with the same table, priority and match is replaced
  // (its counters reset), as in OpenFlow.  Validates goto_table targets.
  Status add_flow(const FlowRule& rule, uint64_t now_ns = 0);
  // Deletes rules in 'table' (all tables if nullopt) whose match is at least
  // as specific as 'filter' (non-strict, like ovs-ofctl del-flows); with
  // 'strict', only rules whose match and priority equal the filter's.
  size_t del_flows(const Match& filter, std::optional<uint8_t> table, bool strict = false,
                   uint16_t priority = kDefaultPriority);
  // Replaces the actions of the rules del_flows would select.  All or
  // nothing: if the new actions are invalid for any selected rule (e.g. a
  // goto_table that is not forward from that rule's table), nothing changes,
  // 0 is returned and *error (if given) says why.
  size_t mod_flows(const Match& filter, std::optional<uint8_t> table, const ActionList& actions,
                   bool strict = false, uint16_t priority = kDefaultPriority,
                   Status* error = nullptr);

  // Rules in table order, then by decreasing priority (lookup order).
  std::vector<const Rule*> rules(std::optional<uint8_t> table = std::nullopt) const;
  size_t rule_count() const { return by_id_.size(); }
  const Rule* find(uint64_t id) const;
  // Adds statistics to a rule (from megaflows that went through it).
  void credit(uint64_t rule_id, uint64_t packets, uint64_t bytes);
  // Incremented by every change; megaflows built at an older version must be
  // revalidated.
  uint64_t version() const { return version_; }

  XlateResult xlate(const FlowKey& key) const;

 private:
  struct Table {
    std::vector<Rule*> rules;  // priority descending, insertion order within
  };
  const Rule* lookup(const Table& table, const FlowKey& flow, FlowKey& wildcards,
                     const FlowKey& written) const;
  void remove_rule(Rule* r);
  std::vector<Rule*> select(const Match& filter, std::optional<uint8_t> table, bool strict,
                            uint16_t priority);
  template <typename Fn>
  size_t for_selected(const Match& filter, std::optional<uint8_t> table, bool strict,
                      uint16_t priority, Fn&& fn);

  std::vector<Table> tables_;
  std::unordered_map<uint64_t, std::unique_ptr<Rule>> by_id_;
  uint64_t next_id_ = 1;
  uint64_t version_ = 0;
};

// Checks the semantic constraints a rule must satisfy beyond syntax
// (goto_table forward, softflow last, known service); used by add_flow.
Status validate_rule(const FlowRule& rule);

}  // namespace softflow
