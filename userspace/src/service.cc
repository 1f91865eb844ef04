#include "softflow/service.h"

#include <cerrno>
#include <cstring>
#include <fstream>
#include <stdexcept>

namespace softflow {

ServiceRegistry& ServiceRegistry::instance() {
  static ServiceRegistry registry;
  return registry;
}

void ServiceRegistry::add(std::string name, std::string description, ServiceFactory factory) {
  entries_[std::move(name)] = Entry{std::move(description), std::move(factory)};
}

std::optional<uint8_t> ServiceRegistry::id_of(std::string_view name) const {
  uint8_t id = 1;
  for (const auto& [n, e] : entries_) {
    if (n == name) return id;
    ++id;
  }
  return std::nullopt;
}

std::string_view ServiceRegistry::name_of(uint8_t id) const {
  if (id == 0 || id > entries_.size()) return {};
  auto it = entries_.begin();
  std::advance(it, id - 1);
  return it->first;
}

std::string_view ServiceRegistry::description(uint8_t id) const {
  if (id == 0 || id > entries_.size()) return {};
  auto it = entries_.begin();
  std::advance(it, id - 1);
  return it->second.description;
}

std::vector<std::string> ServiceRegistry::names() const {
  std::vector<std::string> out;
  for (const auto& [n, e] : entries_) out.push_back(n);
  return out;
}

std::unique_ptr<Service> ServiceRegistry::create(uint8_t id, const nlohmann::json& config) const {
  if (id == 0 || id > entries_.size()) return nullptr;
  auto it = entries_.begin();
  std::advance(it, id - 1);
  return it->second.factory(config);
}

Result<std::unique_ptr<ServiceSet>> ServiceSet::create(const nlohmann::json& config) {
  if (!config.is_null() && !config.is_object())
    return Status::error("service configuration must be a JSON object keyed by service name");
  const ServiceRegistry& reg = ServiceRegistry::instance();
  auto set = std::unique_ptr<ServiceSet>(new ServiceSet());
  auto names = reg.names();
  if (config.is_object()) {
    for (const auto& [key, value] : config.items()) {
      if (!reg.id_of(key)) return Status::error("service configuration: unknown service '" + key + "'");
      if (!value.is_object())
        return Status::error("service configuration: '" + key + "' must be an object");
    }
  }
  set->services_.resize(names.size() + 1);
  for (size_t i = 0; i < names.size(); ++i) {
    const nlohmann::json empty = nlohmann::json::object();
    const nlohmann::json& cfg =
        config.is_object() && config.contains(names[i]) ? config.at(names[i]) : empty;
    try {
      set->services_[i + 1] = reg.create(static_cast<uint8_t>(i + 1), cfg);
    } catch (const std::exception& e) {
      return Status::error("service '" + names[i] + "': " + e.what());
    }
  }
  return set;
}

nlohmann::json ServiceSet::stats() const {
  nlohmann::json out = nlohmann::json::object();
  const ServiceRegistry& reg = ServiceRegistry::instance();
  for (size_t i = 1; i < services_.size(); ++i)
    if (services_[i]) out[std::string(reg.name_of(static_cast<uint8_t>(i)))] = services_[i]->stats();
  return out;
}

Result<nlohmann::json> load_service_config(const std::string& path) {
  std::ifstream in(path);
  if (!in) return Status::error(path + ": cannot open: " + std::strerror(errno), EIO);
  nlohmann::json config = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  if (config.is_discarded()) return Status::error(path + ": invalid JSON", EINVAL);
  if (!config.is_object())
    return Status::error(path + ": the service configuration must be a JSON object keyed by service name",
                         EINVAL);
  return config;
}

}  // namespace softflow
