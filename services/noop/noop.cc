// noop (paper §7.2, Pipeline D): does nothing and lets the datapath coalesce,
// isolating the cost of invoking a SoftFlow action.
#include "softflow/service.h"

namespace softflow {
namespace {

class NoopService final : public Service {
 public:
  explicit NoopService(const nlohmann::json& /*config*/) {}
  void process(std::span<Packet* const> batch, uint32_t /*sf_argument*/) override {
    for (Packet* p : batch) p->sf_coalesce = true;
  }
};

}  // namespace
SF_REGISTER_SERVICE(noop, NoopService, "does nothing; always coalescable");
}  // namespace softflow
