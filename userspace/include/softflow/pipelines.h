// Generated pipelines and traffic for the in-process benchmark and the demo
// (EVALUATION.md).  Seeded: the same seed gives the same rules and frames.
#pragma once

#include <cstdint>
#include <vector>

#include "softflow/flow.h"
#include "softflow/ports.h"

namespace softflow {

// Pipeline D (paper §7.2): 'stages' softflow:noop stages, then an L3 table of
// 'routes' random IPv4 prefixes (plus a default route) that rewrites the
// destination MAC and outputs to port 'out_port'.
//   table=0 sf_stage=s,ip            -> softflow:noop:s     (s < stages)
//   table=0 sf_stage=stages,ip       -> goto_table:1
//   table=1 ip,nw_dst=P/len          -> mod_dl_dst:M,output:out_port
std::vector<FlowRule> pipeline_d(int stages, uint64_t seed, int routes = 64,
                                 uint32_t out_port = 2);

struct TrafficSpec {
  uint64_t seed = 1;
  size_t flows = 10000;     // distinct UDP 5-tuples
  size_t packets = 100000;  // frames generated (flows drawn uniformly)
  size_t frame_size = 64;   // bytes, incl. Ethernet header, no FCS (min 60)
  uint32_t in_port = 1;
};
// IPv4/UDP frames from 10.0.0.0/8 to addresses inside 0.0.0.0/0, spread so
// that Pipeline D's routes are hit; timestamps 1 us apart.
std::vector<Frame> udp_traffic(const TrafficSpec& spec);

}  // namespace softflow
