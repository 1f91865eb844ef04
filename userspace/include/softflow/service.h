// SoftFlow services (paper §5.1): stateful functions invoked by
// `softflow:NAME:ARG`.  A service is a small class with a constructor taking
// its configuration and a batch `process`.  It reads each packet's
// sf_metadata (in the key) and writes sf_metadata and sf_coalesce.
//
// Contract for implementers:
//  - process() is called by several PMD threads at once: be thread-safe.
//  - Packets arrive with parsed header offsets; never re-parse.
//  - Set sf_coalesce = true only when the packet's headers (the flow key) are
//    unchanged by the service and the result depends on nothing but what
//    sf_metadata carries; the datapath then may run the next stage's cached
//    actions without a lookup, guarded by sf_metadata.  A service that
//    decides per packet (a load balancer) or rewrites key fields must leave
//    sf_coalesce false.
//  - Register with SF_REGISTER_SERVICE(name, Class) next to the class.
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "softflow/packet.h"
#include "softflow/status.h"

namespace softflow {

class Service {
 public:
  virtual ~Service() = default;
  // Processes a batch; every packet has sf_argument set and sf_coalesce false.
  virtual void process(std::span<Packet* const> batch, uint32_t sf_argument) = 0;
  // Counters and state summary for `sfctl show` / `list-services`.
  virtual nlohmann::json stats() const { return nlohmann::json::object(); }
  // Connection tracking, for `sfctl ct-dump` / `ct-flush`.  A service that
  // tracks connections returns its table (a JSON array of connections) and
  // flushes it, returning how many went; the others keep these defaults
  // (nullopt: "not supported").  sfctl calls them with every datapath
  // stopped between batches (Switch::exclusive).
  virtual std::optional<nlohmann::json> dump_connections() const { return std::nullopt; }
  virtual std::optional<size_t> flush_connections() { return std::nullopt; }
};

using ServiceFactory = std::function<std::unique_ptr<Service>(const nlohmann::json& config)>;

// The process-wide list of service kinds.  Ids (used in sf_action and in
// datapath actions) are 1-based in name order, so they are the same in every
// binary regardless of static initialisation order.
class ServiceRegistry {
 public:
  static ServiceRegistry& instance();

  void add(std::string name, std::string description, ServiceFactory factory);
  std::optional<uint8_t> id_of(std::string_view name) const;
  std::string_view name_of(uint8_t id) const;  // "" if unknown
  std::vector<std::string> names() const;      // in id order
  std::string_view description(uint8_t id) const;
  std::unique_ptr<Service> create(uint8_t id, const nlohmann::json& config) const;

 private:
  struct Entry {
    std::string description;
    ServiceFactory factory;
  };
  std::map<std::string, Entry, std::less<>> entries_;
};

struct ServiceRegistrar {
  ServiceRegistrar(const char* name, const char* description, ServiceFactory factory) {
    ServiceRegistry::instance().add(name, description, std::move(factory));
  }
};

#define SF_REGISTER_SERVICE(NAME, CLASS, DESCRIPTION)                      \
  static ::softflow::ServiceRegistrar sf_service_registrar_##NAME(        \
      #NAME, DESCRIPTION, [](const nlohmann::json& config) {              \
        return std::unique_ptr<::softflow::Service>(new CLASS(config));   \
      })

// Reads a service configuration file (a JSON object keyed by service name);
// "PATH: cannot open: ..." or "PATH: invalid JSON: ..." on error.  What the
// services make of it is checked when they are created (ServiceSet::create).
Result<nlohmann::json> load_service_config(const std::string& path);

// The service instances of one switch, indexed by service id; created from
// the service configuration (a JSON object keyed by service name).
class ServiceSet {
 public:
  static Result<std::unique_ptr<ServiceSet>> create(const nlohmann::json& config);
  Service* get(uint8_t id) const { return id < services_.size() ? services_[id].get() : nullptr; }
  nlohmann::json stats() const;

 private:
  std::vector<std::unique_ptr<Service>> services_;
};

}  // namespace softflow
