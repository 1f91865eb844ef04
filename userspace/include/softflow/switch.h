// A SoftFlow switch: the OpenFlow tables, the service instances and the
// datapath(s), with the control-plane operations sfctl exposes.  Every
// flow-table change revalidates every datapath's megaflows before it returns,
// so once del_flows() returns no packet follows a deleted rule.
#pragma once

#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "softflow/datapath.h"
#include "softflow/flow_syntax.h"
#include "softflow/openflow.h"
#include "softflow/service.h"
#include "softflow/status.h"

namespace softflow {

struct SwitchConfig {
  DatapathConfig datapath;
  nlohmann::json service_config = nlohmann::json::object();
  size_t n_datapaths = 1;  // one per PMD thread
};

class Switch {
 public:
  static Result<std::unique_ptr<Switch>> create(const SwitchConfig& config);

  // Flow mods.  add_flows is all-or-nothing: every rule is validated first.
  Status add_flow(const FlowRule& rule);
  Status add_flows(const std::vector<FlowRule>& rules);
  size_t del_flows(const Match& filter, std::optional<uint8_t> table, bool strict = false,
                   uint16_t priority = kDefaultPriority);
  size_t mod_flows(const Match& filter, std::optional<uint8_t> table, const ActionList& actions,
                   bool strict = false, uint16_t priority = kDefaultPriority,
                   Status* error = nullptr);

  // ovs-ofctl dump-flows style, one rule per line, re-parseable:
  //  " table=0, n_packets=3, n_bytes=180, priority=100,ip actions=output:2"
  std::string dump_flows(std::optional<uint8_t> table = std::nullopt);
  // One megaflow per line with its counters and action program.
  std::string dump_megaflows(uint64_t now_ns);

  OpenFlowTables& tables() { return tables_; }
  ServiceSet& services() { return *services_; }
  Datapath& datapath(size_t i = 0) { return *datapaths_.at(i); }
  size_t datapath_count() const { return datapaths_.size(); }
  DatapathStats total_stats() const;
  size_t megaflow_count();

 private:
  explicit Switch(std::unique_ptr<ServiceSet> services) : services_(std::move(services)) {}
  void revalidate_all();

  OpenFlowTables tables_;
  std::unique_ptr<ServiceSet> services_;
  std::vector<std::unique_ptr<Datapath>> datapaths_;
};

// Megaflow printing shared by dump-megaflows and sfctl.
std::string print_megaflow(const Megaflow& mf, uint64_t now_ns);

}  // namespace softflow
