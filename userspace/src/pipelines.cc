#include "softflow/pipelines.h"

#include <random>

#include "softflow/packet_builder.h"
#include "softflow/service.h"

namespace softflow {

std::vector<FlowRule> pipeline_d(int stages, uint64_t seed, int routes, uint32_t out_port) {
  std::mt19937_64 rng(seed);
  const uint8_t noop = ServiceRegistry::instance().id_of("noop").value_or(0);
  std::vector<FlowRule> rules;
  auto ip_rule = [](uint8_t table, uint16_t priority) {
    FlowRule r;
    r.table = table;
    r.priority = priority;
    r.match.set_uint(Field::kDlType, 0x0800, 0xffff);
    return r;
  };
  for (int s = 0; s <= stages; ++s) {
    FlowRule r = ip_rule(0, 100);
    r.match.set_uint(Field::kSfStage, static_cast<uint64_t>(s), 0xff);
    r.actions.push_back(s < stages ? Action::softflow(noop, static_cast<uint32_t>(s))
                                   : Action::goto_table(1));
    rules.push_back(r);
  }
  for (int i = 0; i < routes; ++i) {
    const int len = 8 + static_cast<int>(rng() % 17);  // /8 .. /24
    const uint32_t mask = len == 0 ? 0 : ~0u << (32 - len);
    FlowRule r = ip_rule(1, static_cast<uint16_t>(100 + len));  // longest prefix first
    r.match.set_uint(Field::kNwDst, static_cast<uint32_t>(rng()) & mask, mask);
    const uint64_t next_hop = 0x020000000000ULL | (rng() & 0xffffffffffULL);
    r.actions.push_back(Action::set_field(Field::kDlDst, next_hop));
    r.actions.back().mod_syntax = true;
    r.actions.push_back(Action::output(out_port));
    rules.push_back(r);
  }
  FlowRule def = ip_rule(1, 1);
  def.actions.push_back(Action::set_field(Field::kDlDst, 0x02000000fffeULL));
  def.actions.back().mod_syntax = true;
  def.actions.push_back(Action::output(out_port));
  rules.push_back(def);
  return rules;
}

std::vector<Frame> udp_traffic(const TrafficSpec& spec) {
  std::mt19937_64 rng(spec.seed);
  struct Tuple {
    uint32_t src, dst;
    uint16_t sport, dport;
  };
  std::vector<Tuple> tuples(std::max<size_t>(1, spec.flows));
  for (Tuple& t : tuples)
    t = {0x0a000000u | static_cast<uint32_t>(rng() & 0xffffff), static_cast<uint32_t>(rng()),
         static_cast<uint16_t>(1024 + rng() % 60000), static_cast<uint16_t>(1 + rng() % 1023)};
  std::vector<Frame> frames;
  frames.reserve(spec.packets);
  const size_t headers = 14 + 20 + 8;
  const size_t frame_size = std::max<size_t>(spec.frame_size, 60);
  const std::vector<uint8_t> payload(frame_size > headers ? frame_size - headers : 0, 0x5a);
  for (size_t i = 0; i < spec.packets; ++i) {
    const Tuple& t = tuples[rng() % tuples.size()];
    Frame f;
    f.port = spec.in_port;
    f.timestamp_ns = 1'000'000'000ULL + i * 1000;
    f.bytes = PacketBuilder()
                  .eth(mac("02:00:00:00:00:01"), mac("02:00:00:00:00:02"))
                  .ipv4(t.src, t.dst, 64)
                  .udp(t.sport, t.dport)
                  .payload(payload)
                  .build();
    frames.push_back(std::move(f));
  }
  return frames;
}

}  // namespace softflow
