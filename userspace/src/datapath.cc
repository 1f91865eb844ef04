#include "softflow/datapath.h"

#include <algorithm>

#include "softflow/packet_ops.h"

namespace softflow {
namespace {

// Key bits that are the same for every packet following a coalesced chain
// once a SoftFlow action has run: sf_action is the service's id, sf_metadata
// is checked by the run-time guard, and sf_stage is the entry stage plus the
// number of services run -- a constant only because a megaflow with a
// continuation always fixes its entry stage (kStageMask below).
FlowKey service_written_bits() {
  FlowKey m = field_mask(Field::kSfStage);
  key_or_into(m, field_mask(Field::kSfAction));
  key_or_into(m, field_mask(Field::kSfMetadata));
  return m;
}
const FlowKey kServiceWritten = service_written_bits();
const FlowKey kStageMask = field_mask(Field::kSfStage);

}  // namespace

uint64_t DatapathStats::total_drops() const {
  uint64_t n = 0;
  for (uint64_t d : drops) n += d;
  return n;
}

Datapath::Datapath(OpenFlowTables& tables, ServiceSet& services, DatapathConfig config,
                   PacketSink* sink)
    : tables_(tables),
      services_(services),
      config_(config),
      sink_(sink),
      cache_(config.cache),
      clock_(config.profile ? &profile_ : nullptr) {
  builders_.reserve(kMaxBatch);
  emissions_.reserve(kMaxBatch * 2);
  tx_arena_.reserve(kMaxBatch * 2048);
}

// ---- the pipeline ---------------------------------------------------------------

void Datapath::process_batch(std::span<Packet* const> batch, uint64_t now_ns) {
  while (batch.size() > kMaxBatch) {
    process_batch(batch.first(kMaxBatch), now_ns);
    batch = batch.subspan(kMaxBatch);
  }
  clock_.start(ProfileCategory::kLookup);
  const uint32_t n = static_cast<uint32_t>(batch.size());
  clock_.count_packets(n);
  for (uint32_t i = 0; i < n; ++i) {
    inflight_[i] = InFlight{};
    inflight_[i].pkt = batch[i];
    ++stats_.rx_packets;
    stats_.rx_bytes += batch[i]->len;
    if (batch[i]->parse_flags & kParseMalformed) ++stats_.malformed;
  }

  std::array<uint32_t, kMaxBatch> at_service;
  for (;;) {
    for (uint32_t i = 0; i < n; ++i)
      if (inflight_[i].next == Next::kLookup) classify(inflight_[i]);
    clock_.enter(ProfileCategory::kActions);
    for (uint32_t i = 0; i < n; ++i)
      if (inflight_[i].next == Next::kExecute) execute_actions(i, inflight_[i], now_ns);

    size_t n_service = 0;
    for (uint32_t i = 0; i < n; ++i)
      if (inflight_[i].next == Next::kService) at_service[n_service++] = i;
    if (n_service == 0) break;
    clock_.enter(ProfileCategory::kServices);
    run_services({at_service.data(), n_service});
    for (size_t k = 0; k < n_service; ++k) reinject(inflight_[at_service[k]], now_ns);
    clock_.enter(ProfileCategory::kLookup);
  }
  tx();
  clock_.enter(ProfileCategory::kSlowPath);  // the upcalls' builders go
  builders_.clear();
  clock_.stop();
}

// A stage-0 megaflow named by the XDP program, if it is still the megaflow
// XDP saw (same slot generation) and the packet really matches it; the match
// check makes the BPF mirror advisory, so a race with its updates can cost a
// lookup but never a wrong action.
Megaflow* Datapath::xdp_resolved(Packet& p) {
  const uint32_t generation = p.megaflow_generation;
  p.megaflow_generation = 0;  // a hint is good for the first lookup only
  if (generation == 0 || p.key.sf_stage != 0) return nullptr;
  Megaflow* mf = cache_.find(p.megaflow_id, generation);
  if (mf == nullptr || !key_matches(p.key, mf->key, mf->mask)) {
    ++stats_.xdp_stale;
    return nullptr;
  }
  if (p.xdp_result == SF_XDP_EMC_HIT)
    ++stats_.xdp_emc_resolved;
  else if (p.xdp_result == SF_XDP_HINT_HIT)
    ++stats_.xdp_hint_resolved;
  else
    ++stats_.xdp_megaflow_resolved;
  return mf;
}

void Datapath::classify(InFlight& f) {
  Packet& p = *f.pkt;
  if (Megaflow* mf = xdp_resolved(p)) {
    f.segment = 0;
    f.builder = -1;
    f.extend = nullptr;
    f.megaflow = mf;
    f.next = Next::kExecute;
    return;
  }
  ++stats_.lookups;
  if (synthetic_miss()) {
    ++stats_.synthetic_misses;
    f.segment = 0;
    f.builder = -1;
    f.extend = nullptr;
    f.megaflow = nullptr;
    upcall(f);
    return;
  }
  // The XDP hash covers the stage-0 key; later stages hash here.
  const uint32_t hash = (p.hash != 0 && p.key.sf_stage == 0) ? p.hash : key_hash(p.key);
  MegaflowLookupStats ls;
  Megaflow* mf = cache_.lookup(p.key, hash, ls);
  stats_.emc_hits += ls.emc_hits;
  stats_.megaflow_hits += ls.megaflow_hits;
  stats_.subtables_searched += ls.subtables_searched;
  f.segment = 0;
  f.builder = -1;
  if (mf != nullptr) {
    if (f.extend != nullptr) attach_continuation(f, *mf);
    f.extend = nullptr;
    f.megaflow = mf;
    f.next = Next::kExecute;
    return;
  }
  f.extend = nullptr;
  f.megaflow = nullptr;
  upcall(f);
}

// Error diffusion: every lookup adds the rate to a credit and misses when a
// whole miss has accumulated, so any run of lookups misses within one of
// rate x lookups, with no randomness to make benchmark runs differ.
bool Datapath::synthetic_miss() {
  if (config_.synthetic_miss_rate <= 0.0) return false;
  miss_credit_ += config_.synthetic_miss_rate;
  if (miss_credit_ < 1.0) return false;
  miss_credit_ -= 1.0;
  return true;
}

void Datapath::upcall(InFlight& f) {
  CycleClock::Scope slow_path(clock_, ProfileCategory::kSlowPath);
  ++stats_.upcalls;
  ++stats_.xlates;
  const FlowKey& key = f.pkt->key;
  XlateResult xr = tables_.xlate(key);
  Builder b;
  b.origin_key = key;
  b.mask = xr.wildcards;
  b.written = xr.written;
  key_or_into(b.written, kServiceWritten);
  b.segments.push_back(make_segment(xr, key, 0));
  builders_.push_back(std::move(b));
  f.builder = static_cast<int>(builders_.size() - 1);
  f.next = Next::kExecute;
}

MegaflowSegment Datapath::make_segment(const XlateResult& xr, const FlowKey& input_key,
                                       uint32_t guard) {
  MegaflowSegment seg;
  seg.actions = xr.actions;
  seg.guard_metadata = guard;
  seg.input_key = input_key;
  seg.rule_ids.reserve(xr.steps.size());
  for (const XlateStep& s : xr.steps)
    if (s.rule_id) seg.rule_ids.push_back(s.rule_id);
  seg.drop_reason = xr.drop_reason;
  return seg;
}

MegaflowSegment& Datapath::current_segment(InFlight& f) {
  if (f.builder >= 0) return builders_[f.builder].segments[f.segment];
  return f.megaflow->segments[f.segment];
}

void Datapath::execute_actions(uint32_t index, InFlight& f, uint64_t now_ns) {
  Packet& p = *f.pkt;
  MegaflowSegment& seg = current_segment(f);
  ++seg.n_packets;
  seg.n_bytes += p.len;
  if (f.megaflow != nullptr && f.segment == 0) {
    ++f.megaflow->n_packets;
    f.megaflow->n_bytes += p.len;
    f.megaflow->used_ns = now_ns;
  }
  for (const Action& a : seg.actions) {
    switch (a.type) {
      case ActionType::kOutput:
        emit(index, f, a.port);
        break;
      case ActionType::kOutputInPort:
        emit(index, f, p.key.in_port);
        break;
      case ActionType::kSetField:
        materialize(index, f);
        packet_set_field(p, a);
        break;
      case ActionType::kDecTtl:
        materialize(index, f);
        if (packet_dec_ttl(p) == TtlResult::kExpired) {
          drop(f, DropReason::kTtlExceeded);
          if (f.builder >= 0 && !builders_[f.builder].installed)
            install_builder(builders_[f.builder], now_ns);
          return;
        }
        break;
      case ActionType::kSoftflow:
        p.sf_argument = a.sf_argument;
        f.service = a.service;
        f.next = Next::kService;
        break;
      case ActionType::kGotoTable:
        break;  // never in a datapath action list
    }
  }
  if (f.builder >= 0) {
    Builder& b = builders_[f.builder];
    if (!b.installed && (!seg.ends_in_service() || !config_.coalesce)) install_builder(b, now_ns);
  }
  if (f.next != Next::kService) {
    f.next = Next::kDone;
    if (!f.emitted)
      drop(f, seg.drop_reason == DropReason::kNone ? DropReason::kActionDrop : seg.drop_reason);
  }
}

void Datapath::run_services(std::span<const uint32_t> indexes) {
  // Services keep state (connections, buckets), so each must see its packets
  // in input order: packets of one connection in one batch may carry
  // different arguments (a client's ACK allowed by the ACL, the server's
  // SYN-ACK not).  Services run one after another in order of first
  // appearance; each gets its packets in input order, split into runs of
  // equal argument because a call carries one argument.
  std::array<bool, kMaxBatch> taken{};
  std::array<Packet*, kMaxBatch> group;
  for (size_t a = 0; a < indexes.size(); ++a) {
    if (taken[a]) continue;
    const uint8_t service_id = inflight_[indexes[a]].service;
    Service* svc = services_.get(service_id);
    size_t n = 0;
    uint32_t arg = 0;
    auto flush = [&] {
      if (n == 0) return;
      if (svc != nullptr) svc->process({group.data(), n}, arg);
      ++stats_.service_batches;
      stats_.service_packets += n;
      n = 0;
    };
    for (size_t b = a; b < indexes.size(); ++b) {
      InFlight& f = inflight_[indexes[b]];
      if (taken[b] || f.service != service_id) continue;
      taken[b] = true;
      if (n > 0 && f.pkt->sf_argument != arg) flush();
      arg = f.pkt->sf_argument;
      materialize(indexes[b], f);  // services may rewrite packets
      f.pkt->sf_coalesce = false;
      group[n++] = f.pkt;
    }
    flush();
  }
}

void Datapath::reinject(InFlight& f, uint64_t now_ns) {
  Packet& p = *f.pkt;
  ++p.key.sf_stage;
  p.key.sf_action = f.service;

  Builder* b = f.builder >= 0 ? &builders_[f.builder] : nullptr;
  if (p.key.sf_stage >= SF_MAX_STAGES) {
    if (b != nullptr && !b->installed) install_builder(*b, now_ns);
    drop(f, DropReason::kLoopLimit);
    f.next = Next::kDone;
    return;
  }

  if (b != nullptr && !b->installed && p.sf_coalesce) {
    // Coalescing build: translate the next stage for this packet now and
    // append it to the megaflow under construction.
    CycleClock::Scope slow_path(clock_, ProfileCategory::kSlowPath);
    ++stats_.xlates;
    XlateResult xr = tables_.xlate(p.key);
    key_or_into(b->mask, key_and_not(xr.wildcards, b->written));
    key_or_into(b->mask, kStageMask);
    key_or_into(b->written, xr.written);
    b->segments.push_back(make_segment(xr, p.key, p.key.sf_metadata));
    ++f.segment;
    f.next = Next::kExecute;
    return;
  }
  if (b != nullptr) {
    if (!b->installed) install_builder(*b, now_ns);
    f.builder = -1;
  } else if (config_.coalesce && f.megaflow != nullptr &&
             f.segment + 1u < f.megaflow->segments.size()) {
    const MegaflowSegment& next = f.megaflow->segments[f.segment + 1];
    if (p.sf_coalesce && p.key.sf_metadata == next.guard_metadata) {
      ++f.segment;
      ++stats_.coalesced;
      f.next = Next::kExecute;
      return;
    }
    ++stats_.coalesce_guard_failed;
  } else if (f.megaflow != nullptr && p.sf_coalesce && config_.coalesce) {
    // No continuation yet (the packet that built the megaflow declined to
    // coalesce, or coalescing was switched on later): try to add one after
    // this packet's next-stage lookup.
    f.extend = f.megaflow;
    f.extend_generation = f.megaflow->generation;
    f.extend_segment = f.segment;
  }
  ++stats_.reinjected;
  f.megaflow = nullptr;
  f.next = Next::kLookup;
}

// Output does not copy: an emission refers to the packet's own frame until
// the packet changes (materialize() copies first), so the usual packet, sent
// once and untouched afterwards, can leave in its own buffer (zero-copy with
// AF_XDP, whose sockets share one UMEM).
void Datapath::emit(uint32_t index, InFlight& f, uint32_t port) {
  const Packet& p = *f.pkt;
  emissions_.push_back(Emission{index, port, kInFrame, p.len, p.timestamp_ns});
  ++f.in_frame_emissions;
  f.emitted = true;
}

// Copies the emissions that still refer to the packet's frame into the TX
// arena; called before anything rewrites the packet.
void Datapath::materialize(uint32_t index, InFlight& f) {
  if (f.in_frame_emissions == 0) return;
  const Packet& p = *f.pkt;
  for (Emission& e : emissions_) {
    if (e.packet_index != index || e.offset != kInFrame) continue;
    e.offset = static_cast<uint32_t>(tx_arena_.size());
    tx_arena_.insert(tx_arena_.end(), p.data, p.data + e.len);
  }
  f.in_frame_emissions = 0;
}

void Datapath::tx() {
  // Input order; a packet's own copies keep their action order.
  std::stable_sort(emissions_.begin(), emissions_.end(),
                   [](const Emission& a, const Emission& b) { return a.packet_index < b.packet_index; });
  for (size_t i = 0; i < emissions_.size(); ++i) {
    const Emission& e = emissions_[i];
    bool sent = false;
    if (sink_ == nullptr) {
    } else if (e.offset != kInFrame) {
      sent = sink_->transmit(e.port, {tx_arena_.data() + e.offset, e.len}, e.timestamp_ns);
    } else {
      InFlight& f = inflight_[e.packet_index];
      // The packet's last in-frame emission may hand the frame itself over.
      if (--f.in_frame_emissions == 0)
        sent = sink_->transmit_packet(e.port, *f.pkt, e.len);
      else
        sent = sink_->transmit(e.port, {f.pkt->data, e.len}, e.timestamp_ns);
    }
    if (sent) {
      ++stats_.tx_packets;
      stats_.tx_bytes += e.len;
    } else {
      ++stats_.drops[static_cast<size_t>(DropReason::kNoSuchPort)];
    }
  }
  emissions_.clear();
  tx_arena_.clear();
}

void Datapath::drop(InFlight& f, DropReason reason) {
  f.next = Next::kDone;
  ++stats_.drops[static_cast<size_t>(reason)];
}

void Datapath::install_builder(Builder& b, uint64_t now_ns) {
  CycleClock::Scope slow_path(clock_, ProfileCategory::kSlowPath);
  b.installed = true;
  const size_t before = cache_.size();
  Megaflow* mf = cache_.install(b.origin_key, b.mask, b.segments, now_ns);
  if (mf == nullptr) ++stats_.megaflow_limit_hits;
  if (mf == nullptr || cache_.size() == before) {
    credit_segments(b.segments);  // not installed: its traffic counts now
    return;
  }
  ++stats_.megaflows_installed;
}

// Appends the first segment of 'next' (the megaflow the packet found at stage
// k+1) to the megaflow it left at stage k, guarded by its sf_metadata.  Sound
// only if every packet of the old megaflow that passes the guard would also
// match 'next' at stage k+1: every bit of next's mask is either constant after
// the old segments (set-field, sf_stage/sf_action, the guarded sf_metadata)
// or already fixed by the old megaflow's mask.  Append-only, so packets in
// flight on the old megaflow are unaffected.
void Datapath::attach_continuation(InFlight& f, const Megaflow& next) {
  CycleClock::Scope slow_path(clock_, ProfileCategory::kSlowPath);
  Megaflow& mf = *f.extend;
  if (!mf.alive || mf.generation != f.extend_generation || &mf == &next) return;
  if (f.extend_segment + 1u != mf.segments.size()) return;  // someone extended it already
  if (!key_is_subset(kStageMask, mf.mask)) return;  // entry stage not fixed: see kServiceWritten
  FlowKey written = kServiceWritten;
  for (const MegaflowSegment& seg : mf.segments)
    for (const Action& a : seg.actions)
      if (a.type == ActionType::kSetField) key_or_into(written, set_field_written_mask(a));
  if (!key_is_subset(key_and_not(next.mask, written), mf.mask)) return;
  const MegaflowSegment& src = next.segments.front();
  MegaflowSegment seg;
  seg.actions = src.actions;
  seg.guard_metadata = f.pkt->key.sf_metadata;
  seg.input_key = f.pkt->key;
  seg.rule_ids = src.rule_ids;
  seg.drop_reason = src.drop_reason;
  mf.segments.push_back(std::move(seg));
  ++stats_.continuations_attached;
}

// ---- maintenance ----------------------------------------------------------------

void Datapath::credit_segments(std::vector<MegaflowSegment>& segments) {
  for (MegaflowSegment& seg : segments) {
    const uint64_t dp = seg.n_packets - seg.pushed_packets;
    const uint64_t db = seg.n_bytes - seg.pushed_bytes;
    if (dp == 0 && db == 0) continue;
    for (uint64_t rule : seg.rule_ids) tables_.credit(rule, dp, db);
    seg.pushed_packets = seg.n_packets;
    seg.pushed_bytes = seg.n_bytes;
  }
}

void Datapath::push_megaflow_stats(Megaflow& mf) { credit_segments(mf.segments); }

void Datapath::push_rule_stats() {
  cache_.for_each([this](Megaflow& mf) { push_megaflow_stats(mf); });
}

// Megaflow maintenance counts as slow path: the work OVS's revalidators do.
size_t Datapath::expire(uint64_t now_ns) {
  clock_.start(ProfileCategory::kSlowPath);
  const size_t n = cache_.expire(now_ns, [this](Megaflow& mf) { push_megaflow_stats(mf); });
  stats_.megaflows_expired += n;
  clock_.stop();
  return n;
}

void Datapath::revalidate() {
  std::vector<Megaflow*> doomed;
  cache_.for_each([&](Megaflow& mf) {
    std::vector<MegaflowSegment> fresh;
    FlowKey needed = zero_key();
    FlowKey written = zero_key();
    bool changed = false;
    for (size_t k = 0; k < mf.segments.size(); ++k) {
      const MegaflowSegment& old = mf.segments[k];
      XlateResult xr = tables_.xlate(old.input_key);
      key_or_into(needed, key_and_not(xr.wildcards, written));
      if (k > 0) key_or_into(needed, kStageMask);
      key_or_into(written, xr.written);
      key_or_into(written, kServiceWritten);
      fresh.push_back(make_segment(xr, old.input_key, old.guard_metadata));
      if (xr.actions != old.actions) {
        // Later segments were compiled for what the old actions (and the
        // service after them) did to the packet; drop them.
        changed = true;
        break;
      }
      if (fresh.back().rule_ids != old.rule_ids || fresh.back().drop_reason != old.drop_reason)
        changed = true;
    }
    if (!key_is_subset(needed, mf.mask)) {
      doomed.push_back(&mf);
      return;
    }
    if (changed || fresh.size() != mf.segments.size()) {
      push_megaflow_stats(mf);
      mf.segments = std::move(fresh);
      ++stats_.revalidated_updated;
    }
  });
  for (Megaflow* mf : doomed) {
    push_megaflow_stats(*mf);
    cache_.remove(mf);
    ++stats_.revalidated_removed;
  }
}

}  // namespace softflow
