// OpenFlow rules as SoftFlow understands them: a masked match over the flow
// key, a priority, a table, and an action list.  The same Action type is used
// for the datapath action lists that xlate compiles into megaflows.
#pragma once

#include <array>
#include <cstdint>
#include <string>
#include <vector>

#include "softflow/flow_key.h"

namespace softflow {

inline constexpr uint16_t kDefaultPriority = 32768;  // as ovs-ofctl
inline constexpr size_t kMaxTables = 255;

enum class ActionType : uint8_t {
  kOutput,        // output:N
  kOutputInPort,  // in_port (send back out the ingress port)
  kGotoTable,     // goto_table:N (OpenFlow only; never in a datapath list)
  kSetField,      // set_field:V[/M]->F, mod_dl_src:..., mod_nw_dst:..., ...
  kDecTtl,        // dec_ttl
  kSoftflow,      // softflow:NAME:ARG (last action; consumes the packet)
};

struct Action {
  ActionType type = ActionType::kOutput;
  Field field = Field::kCount;  // kSetField
  uint8_t table = 0;            // kGotoTable
  uint8_t service = 0;          // kSoftflow: service id (see ServiceRegistry)
  bool mod_syntax = false;      // kSetField printed as mod_xx_yy:V (else set_field)
  uint32_t port = 0;            // kOutput
  uint32_t sf_argument = 0;     // kSoftflow
  // kSetField: value and mask in the byte layout the field has in FlowKey
  // (first field_info(field).size bytes used; value already masked).
  std::array<uint8_t, 16> value{};
  std::array<uint8_t, 16> mask{};

  bool operator==(const Action&) const = default;

  static Action output(uint32_t port) {
    Action a;
    a.type = ActionType::kOutput;
    a.port = port;
    return a;
  }
  static Action output_in_port() {
    Action a;
    a.type = ActionType::kOutputInPort;
    return a;
  }
  static Action goto_table(uint8_t table) {
    Action a;
    a.type = ActionType::kGotoTable;
    a.table = table;
    return a;
  }
  static Action dec_ttl() {
    Action a;
    a.type = ActionType::kDecTtl;
    return a;
  }
  static Action softflow(uint8_t service, uint32_t arg) {
    Action a;
    a.type = ActionType::kSoftflow;
    a.service = service;
    a.sf_argument = arg;
    return a;
  }
  // Full-width set of an integer field (<= 8 bytes), host-order value.
  static Action set_field(Field f, uint64_t v);
};

using ActionList = std::vector<Action>;

// Applies a set-field action to a key (as xlate and the datapath both do).
void apply_set_field(FlowKey& key, const Action& a);
// The key bits a set-field action writes.
FlowKey set_field_written_mask(const Action& a);

struct Match {
  FlowKey value = zero_key();  // already masked
  FlowKey mask = zero_key();

  bool operator==(const Match& o) const {
    return key_equal(value, o.value) && key_equal(mask, o.mask);
  }
  bool matches(const FlowKey& k) const { return key_matches(k, value, mask); }
  // Sets field f to v under mask m (both in key byte layout).
  void set(Field f, const uint8_t* v, const uint8_t* m);
  void set_uint(Field f, uint64_t v, uint64_t m);
  // The match covers every packet 'other' covers (other is at least as specific).
  bool covers(const Match& other) const;
};

struct FlowRule {
  uint8_t table = 0;
  uint16_t priority = kDefaultPriority;
  Match match;
  ActionList actions;  // empty = drop

  bool operator==(const FlowRule&) const = default;
};

}  // namespace softflow
