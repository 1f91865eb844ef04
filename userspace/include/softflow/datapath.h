// The SoftFlow datapath: one instance per PMD thread, run-to-completion.
//
// process_batch() follows a batch of parsed packets through
//   classify -> execute_actions -> run_services -> reinject -> ... -> tx
// in rounds: round r handles every packet at sf_stage r.  In each round,
// packets that need a lookup are classified (EMC, megaflows, else an upcall
// into the OpenFlow slow path); each packet's action segment runs; packets
// that reach a SoftFlow action are handed to their service in batches grouped
// by (service, argument); then every such packet either continues with its
// megaflow's coalesced next segment (no lookup) or is re-injected at table 0
// for a lookup at the next stage.
//
// Why rounds: the order in which services see packets and the order in which
// each port emits them then depend only on the batch and the stage, never on
// whether coalescing saved a lookup, so coalescing on/off cannot change what
// leaves which port (DESIGN.md's invariant).  Output is emitted per batch in
// input order (a packet's copies in the order its actions produced them).
//
// With DatapathConfig::profile, each batch's phases are timed in TSC cycles
// (profile.h): classify -> lookup, execute_actions and tx -> actions,
// run_services and reinject -> services, and upcalls, coalescing builds,
// megaflow installs and expiry -> slow_path.  The PMD loop (or sf-bench)
// adds parse, I/O and idle time to the same counters.
#pragma once

#include <array>
#include <cstdint>
#include <span>
#include <vector>

#include "softflow/megaflow.h"
#include "softflow/openflow.h"
#include "softflow/packet.h"
#include "softflow/profile.h"
#include "softflow/service.h"

namespace softflow {

struct DatapathConfig {
  bool coalesce = true;
  MegaflowCacheConfig cache;
  // Benchmarks only (sf-bench --miss-rate, the paper's Figure 11): this
  // fraction of megaflow lookups is treated as a miss without looking, so
  // the packet takes the slow path (xlate, build, install attempt, which
  // finds the megaflow already there).  Spread evenly and deterministically.
  double synthetic_miss_rate = 0.0;
  // CPU breakdown in TSC cycles per phase (profile.h); off costs a
  // predictable branch per phase boundary.
  bool profile = false;
};

struct DatapathStats {
  uint64_t rx_packets = 0;
  uint64_t rx_bytes = 0;
  uint64_t tx_packets = 0;
  uint64_t tx_bytes = 0;
  uint64_t malformed = 0;  // packets with parse flags (forwarded by what parsed)
  // Stage-0 packets the XDP program resolved (megaflow id + generation in
  // its metadata), verified here and executed without a lookup.
  uint64_t xdp_emc_resolved = 0;
  uint64_t xdp_megaflow_resolved = 0;
  uint64_t xdp_hint_resolved = 0;  // by the NIC's mark, which XDP verified (offload/)
  uint64_t xdp_stale = 0;  // XDP's megaflow id was gone or did not match: looked up here
  uint64_t lookups = 0;    // megaflow cache lookups (EMC or classifier)
  uint64_t emc_hits = 0;
  uint64_t megaflow_hits = 0;
  uint64_t upcalls = 0;        // lookups that missed: slow path
  uint64_t synthetic_misses = 0;  // upcalls forced by synthetic_miss_rate
  uint64_t xlates = 0;         // slow-path translations (upcalls + coalescing builds)
  uint64_t subtables_searched = 0;
  uint64_t coalesced = 0;      // stage transitions taken without a lookup
  uint64_t coalesce_guard_failed = 0;  // continuation present but guard said no
  uint64_t continuations_attached = 0;  // coalesced segments added to existing megaflows
  uint64_t reinjected = 0;     // packets re-entering table 0 for a lookup
  uint64_t service_packets = 0;
  uint64_t service_batches = 0;
  uint64_t megaflows_installed = 0;
  uint64_t megaflow_limit_hits = 0;  // upcall could not install: cache full
  uint64_t megaflows_expired = 0;
  uint64_t revalidated_updated = 0;
  uint64_t revalidated_removed = 0;
  std::array<uint64_t, static_cast<size_t>(DropReason::kCount)> drops{};

  uint64_t drop_count(DropReason r) const { return drops[static_cast<size_t>(r)]; }
  uint64_t total_drops() const;
};

// Where the datapath sends packets.  Called at the end of each batch in
// emission order; the frame is only valid during the call.
class PacketSink {
 public:
  virtual ~PacketSink() = default;
  // Returns false if the port does not exist (the copy is counted as a drop).
  virtual bool transmit(uint32_t port, std::span<const uint8_t> frame, uint64_t timestamp_ns) = 0;
  // The packet's last copy: the first 'len' bytes of its frame.  A sink that
  // can send the buffer itself (AF_XDP with a shared UMEM) may take it and
  // set pkt.buffer_taken; the default copies.
  virtual bool transmit_packet(uint32_t port, Packet& pkt, uint32_t len) {
    return transmit(port, {pkt.data, len}, pkt.timestamp_ns);
  }
};

class Datapath {
 public:
  Datapath(OpenFlowTables& tables, ServiceSet& services, DatapathConfig config, PacketSink* sink);

  // Processes parsed packets in batches of kMaxBatch (key, offsets, in_port set;
  // sf_stage/sf_action/sf_metadata zero).  Packets are not freed here.
  void process_batch(std::span<Packet* const> batch, uint64_t now_ns);

  // Re-translates every megaflow against the current tables and updates or
  // removes each one that changed.  Call after every flow-table change.
  void revalidate();
  // Removes idle megaflows; returns how many.
  size_t expire(uint64_t now_ns);
  // Credits rules with the traffic their megaflows carried since last time.
  void push_rule_stats();

  MegaflowCache& megaflows() { return cache_; }
  const DatapathStats& stats() const { return stats_; }
  bool coalescing() const { return config_.coalesce; }
  void set_coalescing(bool on) { config_.coalesce = on; }
  void set_sink(PacketSink* sink) { sink_ = sink; }

  bool profiling() const { return config_.profile; }
  // The counters, zero unless profiling.  Snapshots may be taken from any
  // thread.
  CycleProfile profile() const { return profile_.snapshot(); }
  // For the thread that feeds this datapath to charge parse, I/O and idle
  // time (CycleClock); null when not profiling.
  ProfileCounters* profile_counters() { return config_.profile ? &profile_ : nullptr; }

 private:
  // A megaflow under construction by an upcall: the stages translated so far
  // for one packet, installed when its chain of coalescable stages ends.
  struct Builder {
    FlowKey origin_key;
    FlowKey mask;
    FlowKey written;  // bits constant for every packet of the megaflow after stage 0
    std::vector<MegaflowSegment> segments;
    bool installed = false;
  };
  enum class Next : uint8_t { kLookup, kExecute, kService, kDone };
  struct InFlight {
    Packet* pkt = nullptr;
    Megaflow* megaflow = nullptr;  // megaflow being executed (null while a builder runs)
    int builder = -1;              // index into builders_
    uint16_t segment = 0;
    Next next = Next::kLookup;
    bool emitted = false;
    uint8_t service = 0;
    uint16_t in_frame_emissions = 0;  // emissions still referring to the frame
    // After a coalescable service on a megaflow without a continuation: the
    // megaflow (and its generation) to extend with the next stage's segment.
    Megaflow* extend = nullptr;
    uint32_t extend_generation = 0;
    uint16_t extend_segment = 0;  // its last segment, which the packet ran
  };
  static constexpr uint32_t kInFrame = UINT32_MAX;  // Emission::offset: not copied
  struct Emission {
    uint32_t packet_index;
    uint32_t port;
    uint32_t offset;  // into tx_arena_, or kInFrame
    uint32_t len;
    uint64_t timestamp_ns;
  };

  Megaflow* xdp_resolved(Packet& p);
  void classify(InFlight& f);
  void upcall(InFlight& f);
  bool synthetic_miss();
  void execute_actions(uint32_t index, InFlight& f, uint64_t now_ns);
  void run_services(std::span<const uint32_t> indexes);
  void reinject(InFlight& f, uint64_t now_ns);
  void tx();

  MegaflowSegment& current_segment(InFlight& f);
  MegaflowSegment make_segment(const XlateResult& xr, const FlowKey& input_key, uint32_t guard);
  void install_builder(Builder& b, uint64_t now_ns);
  void attach_continuation(InFlight& f, const Megaflow& next);
  void emit(uint32_t index, InFlight& f, uint32_t port);
  void materialize(uint32_t index, InFlight& f);
  void drop(InFlight& f, DropReason reason);
  void push_megaflow_stats(Megaflow& mf);
  void credit_segments(std::vector<MegaflowSegment>& segments);

  OpenFlowTables& tables_;
  ServiceSet& services_;
  DatapathConfig config_;
  double miss_credit_ = 0.0;  // synthetic_miss()
  PacketSink* sink_;
  MegaflowCache cache_;
  DatapathStats stats_;
  ProfileCounters profile_;
  CycleClock clock_;  // charges profile_, or nothing

  std::array<InFlight, kMaxBatch> inflight_;
  std::vector<Builder> builders_;
  std::vector<Emission> emissions_;
  std::vector<uint8_t> tx_arena_;
};

}  // namespace softflow
