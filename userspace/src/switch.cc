#include "softflow/switch.h"

#include <fmt/format.h>

namespace softflow {

Result<std::unique_ptr<Switch>> Switch::create(const SwitchConfig& config) {
  auto services = ServiceSet::create(config.service_config);
  if (!services) return services.status();
  std::unique_ptr<Switch> sw(new Switch(std::move(services.value())));
  for (size_t i = 0; i < std::max<size_t>(1, config.n_datapaths); ++i) {
    sw->datapaths_.push_back(
        std::make_unique<Datapath>(sw->tables_, *sw->services_, config.datapath, nullptr));
    sw->datapath_mutexes_.push_back(std::make_unique<std::mutex>());
  }
  return sw;
}

thread_local int Switch::control_depth_ = 0;

// The control mutex is recursive; the datapath mutexes are taken only by the
// outermost control operation of a thread.
Switch::ControlLock::ControlLock(Switch& sw) : sw_(sw) {
  sw_.control_mutex_.lock();
  if (control_depth_++ == 0) {
    sw_.control_waiting_.fetch_add(1, std::memory_order_acq_rel);
    for (auto& m : sw_.datapath_mutexes_) m->lock();
    sw_.control_waiting_.fetch_sub(1, std::memory_order_acq_rel);
  }
}

Switch::ControlLock::~ControlLock() {
  if (--control_depth_ == 0)
    for (auto it = sw_.datapath_mutexes_.rbegin(); it != sw_.datapath_mutexes_.rend(); ++it)
      (*it)->unlock();
  sw_.control_mutex_.unlock();
}

void Switch::process(size_t datapath, std::span<Packet* const> batch, uint64_t now_ns) {
  wait_for_control();
  std::lock_guard<std::mutex> lock(*datapath_mutexes_[datapath]);
  datapaths_[datapath]->process_batch(batch, now_ns);
}

size_t Switch::expire(size_t datapath, uint64_t now_ns) {
  std::lock_guard<std::mutex> lock(*datapath_mutexes_[datapath]);
  return datapaths_[datapath]->expire(now_ns);
}

void Switch::revalidate_all() {
  for (auto& dp : datapaths_) dp->revalidate();
}

Status Switch::add_flow(const FlowRule& rule) {
  ControlLock lock(*this);
  Status s = tables_.add_flow(rule);
  if (s) revalidate_all();
  return s;
}

Status Switch::add_flows(const std::vector<FlowRule>& rules) {
  ControlLock lock(*this);
  for (size_t i = 0; i < rules.size(); ++i)
    if (Status s = validate_rule(rules[i]); !s)
      return Status::error(fmt::format("flow {}: {}", i + 1, s.message()));
  for (const FlowRule& r : rules)
    if (Status s = tables_.add_flow(r); !s) return s;  // cannot fail after validation
  revalidate_all();
  return Status::ok();
}

size_t Switch::del_flows(const Match& filter, std::optional<uint8_t> table, bool strict,
                         uint16_t priority) {
  ControlLock lock(*this);
  // Credit the rules about to go with what their megaflows carried.
  for (auto& dp : datapaths_) dp->push_rule_stats();
  const size_t n = tables_.del_flows(filter, table, strict, priority);
  if (n) revalidate_all();
  return n;
}

size_t Switch::mod_flows(const Match& filter, std::optional<uint8_t> table,
                         const ActionList& actions, bool strict, uint16_t priority,
                         Status* error) {
  ControlLock lock(*this);
  const size_t n = tables_.mod_flows(filter, table, actions, strict, priority, error);
  if (n) revalidate_all();
  return n;
}

std::string Switch::dump_flows(std::optional<uint8_t> table) {
  ControlLock lock(*this);
  for (auto& dp : datapaths_) dp->push_rule_stats();
  std::string out;
  for (const OpenFlowTables::Rule* r : tables_.rules(table)) {
    std::string rule = print_flow(r->flow);
    // print_flow gives "table=N, <rest>": put the counters after the table.
    const size_t comma = rule.find(", ");
    out += fmt::format(" {}, n_packets={}, n_bytes={}, {}\n", rule.substr(0, comma), r->n_packets,
                       r->n_bytes, comma == std::string::npos ? "" : rule.substr(comma + 2));
  }
  return out;
}

std::string print_megaflow(const Megaflow& mf, uint64_t now_ns) {
  Match m;
  m.value = mf.key;
  m.mask = mf.mask;
  const std::string match = print_match(m);
  const double used = mf.used_ns && now_ns >= mf.used_ns ? (now_ns - mf.used_ns) / 1e9 : 0.0;
  std::string out = fmt::format("id={}, packets={}, bytes={}, used={:.3f}s, {} actions=", mf.id,
                                mf.n_packets, mf.n_bytes, used, match.empty() ? "any" : match);
  for (size_t i = 0; i < mf.segments.size(); ++i) {
    const MegaflowSegment& seg = mf.segments[i];
    if (i > 0) out += fmt::format(" [coalesced if sf_metadata={}] ", seg.guard_metadata);
    out += print_actions(seg.actions);
  }
  return out;
}

std::string Switch::dump_megaflows(uint64_t now_ns) {
  ControlLock lock(*this);
  std::string out;
  for (auto& dp : datapaths_)
    dp->megaflows().for_each([&](const Megaflow& mf) { out += print_megaflow(mf, now_ns) + "\n"; });
  return out;
}

size_t Switch::megaflow_count() {
  ControlLock lock(*this);
  size_t n = 0;
  for (auto& dp : datapaths_) n += dp->megaflows().size();
  return n;
}

DatapathStats Switch::total_stats() {
  ControlLock lock(*this);
  return total_stats_locked();
}

DatapathStats Switch::total_stats_locked() const {
  DatapathStats t;
  for (const auto& dp : datapaths_) {
    const DatapathStats& s = dp->stats();
#define SF_ADD(f) t.f += s.f
    SF_ADD(rx_packets); SF_ADD(rx_bytes); SF_ADD(tx_packets); SF_ADD(tx_bytes);
    SF_ADD(malformed); SF_ADD(xdp_emc_resolved); SF_ADD(xdp_megaflow_resolved); SF_ADD(xdp_hint_resolved);
    SF_ADD(xdp_stale); SF_ADD(lookups); SF_ADD(emc_hits); SF_ADD(megaflow_hits);
    SF_ADD(upcalls); SF_ADD(xlates); SF_ADD(subtables_searched); SF_ADD(coalesced);
    SF_ADD(coalesce_guard_failed); SF_ADD(continuations_attached); SF_ADD(reinjected); SF_ADD(service_packets);
    SF_ADD(service_batches); SF_ADD(megaflows_installed); SF_ADD(megaflow_limit_hits);
    SF_ADD(megaflows_expired); SF_ADD(revalidated_updated); SF_ADD(revalidated_removed);
#undef SF_ADD
    for (size_t i = 0; i < t.drops.size(); ++i) t.drops[i] += s.drops[i];
  }
  return t;
}

}  // namespace softflow
