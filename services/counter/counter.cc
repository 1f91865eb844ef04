// counter (paper §5.3): counts packets and bytes per sf_argument.  Leaves the
// packet and sf_metadata alone, so it is always coalescable.
#include <array>
#include <atomic>
#include <mutex>
#include <unordered_map>

#include "softflow/service.h"

namespace softflow {
namespace {

class CounterService final : public Service {
 public:
  explicit CounterService(const nlohmann::json& config) {
    if (config.contains("slots") && !config.at("slots").is_number_unsigned())
      throw std::runtime_error("counter: 'slots' must be an unsigned number");
  }

  void process(std::span<Packet* const> batch, uint32_t sf_argument) override {
    uint64_t bytes = 0;
    for (Packet* p : batch) {
      bytes += p->len;
      p->sf_coalesce = true;
    }
    // All packets of a batch share one sf_argument: one update per batch.
    std::lock_guard lock(mutex_);
    Counts& c = counts_[sf_argument];
    c.packets += batch.size();
    c.bytes += bytes;
  }

  nlohmann::json stats() const override {
    std::lock_guard lock(mutex_);
    nlohmann::json out = nlohmann::json::object();
    for (const auto& [arg, c] : counts_)
      out[std::to_string(arg)] = {{"packets", c.packets}, {"bytes", c.bytes}};
    return out;
  }

 private:
  struct Counts {
    uint64_t packets = 0;
    uint64_t bytes = 0;
  };
  mutable std::mutex mutex_;
  std::unordered_map<uint32_t, Counts> counts_;
};

}  // namespace
SF_REGISTER_SERVICE(counter, CounterService, "counts packets and bytes per argument");
}  // namespace softflow
