// `sfctl trace`: walks a described packet through the pipeline stage by stage,
// like ovs-appctl ofproto/trace.  For each stage it shows the key, every
// table visited with the rule that matched, the stage's datapath actions and
// megaflow mask, and, when the stage ends in softflow:NAME:ARG, what the next
// stage would see and whether it would be coalesced into the same megaflow
// (with the merged mask as the datapath builds it).
//
// The trace never runs a service: it assumes each service leaves the headers
// and sf_metadata unchanged (unless told otherwise) and, when coalescing is
// on, that it sets sf_coalesce.  Nothing in the switch changes.
#pragma once

#include <cstdint>
#include <map>
#include <nlohmann/json.hpp>
#include <string>

#include "softflow/flow_key.h"

namespace softflow {

class Switch;

struct TraceOptions {
  // sf_metadata assumed on entry to stage N (N >= 1): what the service of
  // stage N-1 is supposed to leave.  Without an entry it stays unchanged.
  std::map<uint8_t, uint32_t> metadata;
};

struct TraceResult {
  std::string text;     // for humans, one section per stage
  nlohmann::json json;  // {"stages": [...], "datapath_actions", "megaflows", "dropped"}
};

// Runs under sw.exclusive(): the tables cannot change halfway through.
TraceResult trace_flow(Switch& sw, const FlowKey& start, const TraceOptions& options = {});

}  // namespace softflow
