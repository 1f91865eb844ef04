// A SoftFlow switch: the OpenFlow tables, the service instances and the
// datapath(s), with the control-plane operations sfctl exposes.  Every
// flow-table change revalidates every datapath's megaflows before it returns,
// so once del_flows() returns no packet follows a deleted rule.
//
// Threads: each datapath belongs to one PMD thread, which calls process() and
// expire() for it; those take that datapath's mutex for one batch.  Control
// operations (flow mods, dumps, stats) take the control mutex and then every
// datapath mutex, so they see and leave the tables and megaflows consistent
// and a flow mod is complete on every datapath when it returns.  The mutexes
// are uncontended except while a control operation runs.
#pragma once

#include <memory>
#include <atomic>
#include <mutex>
#include <thread>
#include <optional>
#include <span>
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

  // Packet path (one PMD thread per datapath index).
  void process(size_t datapath, std::span<Packet* const> batch, uint64_t now_ns);
  // The same, then after() still under the datapath's mutex: a PMD thread
  // hands the batch's output to its TX rings there, so that once a flow mod
  // returns, no packet it affects is still on its way out.
  template <typename Fn>
  void process(size_t datapath, std::span<Packet* const> batch, uint64_t now_ns, Fn&& after) {
    wait_for_control();
    std::lock_guard<std::mutex> lock(*datapath_mutexes_[datapath]);
    datapaths_[datapath]->process_batch(batch, now_ns);
    after();
  }
  size_t expire(size_t datapath, uint64_t now_ns);

  // Runs fn() with every datapath stopped between batches (control thread).
  template <typename Fn>
  auto exclusive(Fn&& fn) {
    ControlLock lock(*this);
    return fn();
  }

  // Unlocked accessors: for single-threaded users (tests, offline tools) or
  // inside exclusive().
  OpenFlowTables& tables() { return tables_; }
  ServiceSet& services() { return *services_; }
  Datapath& datapath(size_t i = 0) { return *datapaths_.at(i); }
  size_t datapath_count() const { return datapaths_.size(); }
  DatapathStats total_stats();
  size_t megaflow_count();

 private:
  explicit Switch(std::unique_ptr<ServiceSet> services) : services_(std::move(services)) {}
  void revalidate_all();
  DatapathStats total_stats_locked() const;
  // A PMD thread re-takes its mutex microseconds after releasing it and
  // std::mutex is not fair: it steps aside while a control operation is
  // waiting for the datapath mutexes, so flow mods cannot be starved.
  void wait_for_control() const {
    while (control_waiting_.load(std::memory_order_acquire) != 0) std::this_thread::yield();
  }
  std::atomic<int> control_waiting_{0};

  class ControlLock {
   public:
    explicit ControlLock(Switch& sw);
    ~ControlLock();
    ControlLock(const ControlLock&) = delete;
    ControlLock& operator=(const ControlLock&) = delete;

   private:
    Switch& sw_;
  };
  // Recursive so that an operation under exclusive() may call another one.
  std::recursive_mutex control_mutex_;
  std::vector<std::unique_ptr<std::mutex>> datapath_mutexes_;
  thread_local static int control_depth_;

  OpenFlowTables tables_;
  std::unique_ptr<ServiceSet> services_;
  std::vector<std::unique_ptr<Datapath>> datapaths_;
};

// Megaflow printing shared by dump-megaflows and sfctl.
std::string print_megaflow(const Megaflow& mf, uint64_t now_ns);

}  // namespace softflow
