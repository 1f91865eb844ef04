// The commands softflowd answers (sfctl's subcommands), in one table.
//
// Every handler goes through the Switch's locked API or sw.exclusive(): the
// PMD threads keep running while a command is served, and a command must see
// the tables, megaflows and counters at one consistent point.  Each answers
// with text shaped like ovs-ofctl's (output) and the same facts as JSON
// (result, for sfctl --json).
#include <fmt/format.h>

#include <algorithm>
#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <set>

#include "softflow/control.h"
#include "softflow/flow_syntax.h"
#include "softflow/openflow.h"
#include "softflow/profile.h"
#include "softflow/service.h"
#include "softflow/switch.h"
#include "softflow/trace.h"

namespace softflow {
namespace {

using Json = nlohmann::json;

Response fail(std::string message, int code = EINVAL) {
  return Response::failure(Status::error(std::move(message), code));
}

// A flow or match the shell split into several arguments; the flow syntax
// reads spaces like commas, so rejoining them restores it.
std::string joined(const std::vector<std::string>& args) {
  std::string out;
  for (const std::string& a : args) {
    if (!out.empty()) out += ' ';
    out += a;
  }
  return out;
}

// A del-flows / dump-flows / mod-flows selection.
struct Selection {
  std::optional<Match> match;  // nullopt: every rule
  std::optional<uint8_t> table;
  uint16_t priority = kDefaultPriority;  // for --strict, as ovs-ofctl
  ActionList actions;                    // mod-flows
};

Result<Selection> parse_selection(Controller& c, const Request& r, bool with_actions) {
  Selection sel;
  if (r.args.empty()) return sel;
  auto parsed = parse_flow_line(joined(r.args), c.parse_options(/*match_only=*/!with_actions));
  if (!parsed) return parsed.status();
  if (parsed->has_actions && !with_actions)
    return Status::error(r.command + " takes a match, not actions");
  sel.match = parsed->rule.match;
  if (parsed->has_table) sel.table = parsed->rule.table;
  if (parsed->has_priority) sel.priority = parsed->rule.priority;
  sel.actions = parsed->rule.actions;
  return sel;
}

bool selected(const Selection& sel, const OpenFlowTables::Rule& rule, bool strict) {
  if (!sel.match) return true;
  if (strict) return rule.flow.match == *sel.match && rule.flow.priority == sel.priority;
  return sel.match->covers(rule.flow.match);
}

// ---- flow mods --------------------------------------------------------------------

Response add_flow(Controller& c, const Request& r) {
  auto rule = parse_flow(joined(r.args), c.parse_options(/*match_only=*/false));
  if (!rule) return Response::failure(rule.status());
  if (Status s = c.sw().add_flow(*rule); !s) return Response::failure(s);
  return Response::success("", {{"added", 1}});
}

// All or nothing: every line is parsed and validated (with its line number
// in any error) before the switch sees a single rule.
Response add_flows(Controller& c, const Request& r) {
  const std::string source = r.args[0] == "-" ? "stdin" : r.args[0];
  const FlowParseOptions options = c.parse_options(/*match_only=*/false);
  std::vector<FlowRule> rules;
  std::string_view text = r.input;
  for (size_t line_number = 1; !text.empty(); ++line_number) {
    const size_t newline = text.find('\n');
    std::string_view line = text.substr(0, newline);
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
    line = line.substr(0, line.find('#'));  // '#' is in no field or action
    if (line.find_first_not_of(" \t\r\v\f,") == std::string_view::npos) continue;
    auto rule = parse_flow(line, options);
    Status s = rule ? validate_rule(*rule) : rule.status();
    if (!s)
      return fail(fmt::format("{}: line {}: {} (no flows added)", source, line_number, s.message()),
                  s.code());
    rules.push_back(std::move(*rule));
  }
  if (Status s = c.sw().add_flows(rules); !s) return Response::failure(s);
  return Response::success("", {{"added", rules.size()}});
}

Response del_flows(Controller& c, const Request& r) {
  auto sel = parse_selection(c, r, /*with_actions=*/false);
  if (!sel) return Response::failure(sel.status());
  // Switch::del_flows revalidates every datapath before it returns: once
  // this answer is sent, no packet follows a deleted rule.
  const size_t n =
      c.sw().del_flows(sel->match.value_or(Match{}), sel->table, r.options.strict, sel->priority);
  return Response::success("", {{"deleted", n}});
}

Response mod_flows(Controller& c, const Request& r) {
  auto sel = parse_selection(c, r, /*with_actions=*/true);
  if (!sel) return Response::failure(sel.status());
  Status error;
  const size_t n = c.sw().mod_flows(*sel->match, sel->table, sel->actions, r.options.strict,
                                    sel->priority, &error);
  if (!error) return Response::failure(error);
  return Response::success("", {{"modified", n}});
}

// ---- dumps ------------------------------------------------------------------------

std::vector<std::string_view> lines_of(std::string_view text) {
  std::vector<std::string_view> out;
  while (!text.empty()) {
    const size_t newline = text.find('\n');
    out.push_back(text.substr(0, newline));
    text.remove_prefix(newline == std::string_view::npos ? text.size() : newline + 1);
  }
  return out;
}

Response dump_flows(Controller& c, const Request& r) {
  auto sel = parse_selection(c, r, /*with_actions=*/false);
  if (!sel) return Response::failure(sel.status());
  Switch& sw = c.sw();
  return sw.exclusive([&] {
    // Switch::dump_flows owns the text format (and credits the megaflows'
    // traffic to the rules first); it prints tables().rules() in order, so
    // line i is rule i and the filter can pick lines by rule.
    const std::string text = sw.dump_flows(sel->table);
    const std::vector<std::string_view> lines = lines_of(text);
    const std::vector<const OpenFlowTables::Rule*> rules = sw.tables().rules(sel->table);
    if (lines.size() != rules.size())
      return fail("internal error: dump-flows lines do not match the rules", EIO);
    std::string out;
    Json result = Json::array();
    for (size_t i = 0; i < rules.size(); ++i) {
      const OpenFlowTables::Rule& rule = *rules[i];
      if (!selected(*sel, rule, r.options.strict)) continue;
      out += lines[i];
      out += '\n';
      result.push_back({{"id", rule.id},
                        {"table", rule.flow.table},
                        {"priority", rule.flow.priority},
                        {"match", print_match(rule.flow.match)},
                        {"actions", print_actions(rule.flow.actions)},
                        {"n_packets", rule.n_packets},
                        {"n_bytes", rule.n_bytes},
                        {"flow", print_flow(rule.flow)}});
    }
    return Response::success(std::move(out), std::move(result));
  });
}

Json megaflow_json(const Megaflow& mf, size_t datapath, uint64_t now_ns) {
  Match m;
  m.value = mf.key;
  m.mask = mf.mask;
  Json segments = Json::array();
  for (size_t i = 0; i < mf.segments.size(); ++i) {
    const MegaflowSegment& seg = mf.segments[i];
    Json js = {{"actions", print_actions(seg.actions)},
               {"n_packets", seg.n_packets},
               {"n_bytes", seg.n_bytes}};
    if (i > 0) js["guard_sf_metadata"] = seg.guard_metadata;
    segments.push_back(std::move(js));
  }
  const double used_s =
      mf.used_ns && now_ns >= mf.used_ns ? static_cast<double>(now_ns - mf.used_ns) / 1e9 : 0.0;
  return {{"datapath", datapath},           {"id", mf.id},           {"match", print_match(m)},
          {"n_packets", mf.n_packets},      {"n_bytes", mf.n_bytes}, {"used_s", used_s},
          {"segments", std::move(segments)}};
}

Response dump_megaflows(Controller& c, const Request&) {
  Switch& sw = c.sw();
  const uint64_t now = c.now_ns();
  return sw.exclusive([&] {
    std::string text = sw.dump_megaflows(now);
    Json result = Json::array();
    for (size_t i = 0; i < sw.datapath_count(); ++i)
      sw.datapath(i).megaflows().for_each(
          [&](const Megaflow& mf) { result.push_back(megaflow_json(mf, i, now)); });
    return Response::success(std::move(text), std::move(result));
  });
}

// ---- show -------------------------------------------------------------------------

struct StatField {
  const char* name;
  uint64_t DatapathStats::*member;
};
constexpr StatField kStatFields[] = {
    {"rx_packets", &DatapathStats::rx_packets},
    {"rx_bytes", &DatapathStats::rx_bytes},
    {"tx_packets", &DatapathStats::tx_packets},
    {"tx_bytes", &DatapathStats::tx_bytes},
    {"malformed", &DatapathStats::malformed},
    {"xdp_emc_resolved", &DatapathStats::xdp_emc_resolved},
    {"xdp_megaflow_resolved", &DatapathStats::xdp_megaflow_resolved},
    {"xdp_hint_resolved", &DatapathStats::xdp_hint_resolved},
    {"xdp_stale", &DatapathStats::xdp_stale},
    {"lookups", &DatapathStats::lookups},
    {"emc_hits", &DatapathStats::emc_hits},
    {"megaflow_hits", &DatapathStats::megaflow_hits},
    {"upcalls", &DatapathStats::upcalls},
    {"xlates", &DatapathStats::xlates},
    {"subtables_searched", &DatapathStats::subtables_searched},
    {"coalesced", &DatapathStats::coalesced},
    {"coalesce_guard_failed", &DatapathStats::coalesce_guard_failed},
    {"continuations_attached", &DatapathStats::continuations_attached},
    {"reinjected", &DatapathStats::reinjected},
    {"service_packets", &DatapathStats::service_packets},
    {"service_batches", &DatapathStats::service_batches},
    {"megaflows_installed", &DatapathStats::megaflows_installed},
    {"megaflow_limit_hits", &DatapathStats::megaflow_limit_hits},
    {"megaflows_expired", &DatapathStats::megaflows_expired},
    {"revalidated_updated", &DatapathStats::revalidated_updated},
    {"revalidated_removed", &DatapathStats::revalidated_removed},
};

std::string json_text(const Json& v) {
  if (v.is_string()) return v.get<std::string>();
  if (v.is_boolean()) return v.get<bool>() ? "yes" : "no";
  return v.dump(-1, ' ', false, Json::error_handler_t::replace);
}

using FieldOrder = std::initializer_list<std::pair<const char*, const char*>>;  // key, label

// "label=value, ..." for the keys of 'obj' listed in 'order' that are
// present, then any others it has (the daemon may know more than this list)
// except those in 'skip'.
std::string fields_text(const Json& obj, FieldOrder order,
                        std::initializer_list<std::string_view> skip = {}) {
  std::string out;
  auto add = [&](std::string_view label, const Json& v) {
    out += fmt::format("{}{}={}", out.empty() ? "" : ", ", label, json_text(v));
  };
  for (const auto& [key, label] : order)
    if (auto it = obj.find(key); it != obj.end()) add(label, *it);
  for (const auto& [key, v] : obj.items()) {
    bool listed = std::find(skip.begin(), skip.end(), key) != skip.end();
    for (const auto& [k, label] : order) listed |= key == k;
    if (!listed) add(key, v);
  }
  return out;
}

// " 1(veth0): ifindex=7, queues=1, xdp=native, prog_id=42, adopted=no, ..."
std::string port_text(const Json& port) {
  if (!port.is_object()) return json_text(port);
  std::string head;
  if (auto it = port.find("ofport"); it != port.end()) head += json_text(*it);
  if (auto it = port.find("name"); it != port.end()) head += "(" + json_text(*it) + ")";
  const std::string details = fields_text(port,
                                          {{"ifindex", "ifindex"},
                                           {"queues", "queues"},
                                           {"xdp_mode", "xdp"},
                                           {"xdp_prog_id", "prog_id"},
                                           {"adopted", "adopted"},
                                           {"rx_packets", "rx_packets"},
                                           {"tx_packets", "tx_packets"},
                                           {"tx_dropped", "tx_dropped"}},
                                          {"name", "ofport"});
  return head.empty() ? details : head + ": " + details;
}

std::string percent(uint64_t part, uint64_t whole) {
  return whole == 0 ? "0.0%" : fmt::format("{:.1f}%", 100.0 * static_cast<double>(part) / whole);
}

Response show(Controller& c, const Request&) {
  // Asked before taking the switch: the daemon's hook may take its own locks.
  const Json facts = c.daemon_facts();
  struct Snapshot {
    DatapathStats stats;
    size_t megaflows = 0;
    MegaflowCacheConfig cache;
    bool coalescing = false;
    size_t datapaths = 0;
    size_t rules = 0;
    std::vector<CycleProfile> profiles;  // per datapath (PMD thread); empty: not profiling
  };
  Switch& sw = c.sw();
  const Snapshot snap = sw.exclusive([&] {
    Snapshot s;
    s.stats = sw.total_stats();
    s.megaflows = sw.megaflow_count();
    s.cache = sw.datapath(0).megaflows().config();
    s.coalescing = sw.datapath(0).coalescing();
    s.datapaths = sw.datapath_count();
    s.rules = sw.tables().rule_count();
    if (sw.datapath(0).profiling())
      for (size_t i = 0; i < s.datapaths; ++i) s.profiles.push_back(sw.datapath(i).profile());
    return s;
  });
  const DatapathStats& st = snap.stats;

  std::string out;
  Json ports = Json::array();
  if (auto it = facts.find("ports"); it != facts.end() && it->is_array()) ports = *it;
  out += ports.empty() ? "ports: none\n" : "ports:\n";
  for (const Json& p : ports) out += " " + port_text(p) + "\n";
  if (auto it = facts.find("pmd_threads"); it != facts.end())
    out += fmt::format("pmd_threads: {}\n", json_text(*it));
  out += fmt::format("flows: {}\n", snap.rules);
  const double idle_s = static_cast<double>(snap.cache.idle_timeout_ns) / 1e9;
  out += fmt::format("megaflows: {} (limit {}{}, idle timeout {:g} s), coalescing {}\n",
                     snap.megaflows, snap.cache.max_megaflows,
                     snap.datapaths > 1 ? " per datapath" : "", idle_s,
                     snap.coalescing ? "on" : "off");
  if (auto it = facts.find("xdp_lookup"); it != facts.end() && it->is_boolean())
    out +=
        fmt::format("xdp_lookup: {}{}\n", it->get<bool>(),
                    it->get<bool>() ? "" : " (no megaflows mirrored to XDP: stage-0 lookups here)");

  const uint64_t xdp = st.xdp_emc_resolved + st.xdp_megaflow_resolved + st.xdp_hint_resolved;
  const uint64_t userspace = st.emc_hits + st.megaflow_hits;
  out += fmt::format("packets: rx_packets={}, rx_bytes={}, tx_packets={}, tx_bytes={}\n",
                     st.rx_packets, st.rx_bytes, st.tx_packets, st.tx_bytes);
  out += fmt::format(
      "  resolved in XDP: {} ({} of rx_packets; NIC hint {}, emc {}, megaflow {})\n", xdp,
      percent(xdp, st.rx_packets), st.xdp_hint_resolved, st.xdp_emc_resolved,
      st.xdp_megaflow_resolved);
  out += fmt::format("  classified by NIC hint: {} ({} of rx_packets); in software: {}\n",
                     st.xdp_hint_resolved, percent(st.xdp_hint_resolved, st.rx_packets),
                     st.xdp_emc_resolved + st.xdp_megaflow_resolved + userspace + st.upcalls);
  out += fmt::format("  resolved in userspace: {} (emc {}, megaflow {})\n", userspace, st.emc_hits,
                     st.megaflow_hits);
  out += fmt::format("  slow-path upcalls: {}\n", st.upcalls);
  out += fmt::format("  xdp_stale: {}\n", st.xdp_stale);
  out += fmt::format("  coalesced: {} (guard failed {})\n", st.coalesced, st.coalesce_guard_failed);
  out += fmt::format("  reinjected: {}\n", st.reinjected);
  out += fmt::format("  megaflow_limit_hits: {}\n", st.megaflow_limit_hits);
  out += fmt::format("  malformed: {}\n", st.malformed);
  Json drops = Json::object();
  std::string drops_line;
  for (size_t i = 1; i < static_cast<size_t>(DropReason::kCount); ++i) {
    const char* name = drop_reason_name(static_cast<DropReason>(i));
    drops[name] = st.drops[i];
    drops_line += fmt::format("{}{}={}", drops_line.empty() ? "" : ", ", name, st.drops[i]);
  }
  out += fmt::format("drops: {} ({})\n", st.total_drops(), drops_line);
  Json xdp_counters = Json::object();
  if (auto it = facts.find("xdp"); it != facts.end() && it->is_object()) {
    xdp_counters = *it;
    out += "xdp program: " +
           fields_text(*it, {{"rx", "rx"},
                             {"emc_hits", "emc_hits"},
                             {"megaflow_hits", "megaflow_hits"},
                             {"misses", "misses"},
                             {"unparsed", "unparsed"},
                             {"malformed", "malformed"},
                             {"not_port", "not_port"},
                             {"no_socket", "no_socket"}}) +
           "\n";
    if (it->contains("hint_marked") && (*it)["hint_marked"].get<uint64_t>() +
                                               (*it)["hint_malformed"].get<uint64_t>() >
                                           0)
      out += "nic hints: " +
             fields_text(*it, {{"marked", "hint_marked"},
                               {"classified", "hint_hits"},
                               {"rejected", "hint_rejected"},
                               {"stale", "hint_stale"},
                               {"unknown", "hint_unknown"},
                               {"mismatch", "hint_mismatch"},
                               {"malformed", "hint_malformed"}}) +
             "\n";
  }
  // Whatever else the daemon reports (e.g. its BPF mirror's counters),
  // except what is shown above already.
  for (const auto& [key, value] : facts.items()) {
    if (key == "ports" || key == "xdp" || key == "pmd_threads" || key == "coalescing" ||
        key == "xdp_lookup")
      continue;
    out +=
        fmt::format("{}: {}\n", key, value.is_object() ? fields_text(value, {}) : json_text(value));
  }

  // CPU breakdown (softflowd --profile): the sum, then each PMD thread.
  Json profile = nullptr;
  if (!snap.profiles.empty()) {
    const double hz = tsc_hz();
    CycleProfile total;
    for (const CycleProfile& p : snap.profiles) total += p;
    out += fmt::format(
        "profile: TSC {:.3f} GHz; cycles per packet by category (share of the charged cycles); "
        "sum of the categories of wall cycles\n",
        hz / 1e9);
    out += fmt::format("  total: packets={}: {}\n", total.packets, profile_text(total));
    profile = profile_json(total, hz);
    profile["threads"] = Json::array();
    for (size_t i = 0; i < snap.profiles.size(); ++i) {
      out += fmt::format("  pmd {}: packets={}: {}\n", i, snap.profiles[i].packets,
                         profile_text(snap.profiles[i]));
      Json t = profile_json(snap.profiles[i], hz);
      t["thread"] = i;
      profile["threads"].push_back(std::move(t));
    }
  }

  Json counters = Json::object();
  for (const StatField& f : kStatFields) counters[f.name] = st.*f.member;
  Json result = {{"ports", ports},
                 {"flows", snap.rules},
                 {"megaflows",
                  {{"count", snap.megaflows},
                   {"limit", snap.cache.max_megaflows},
                   {"limit_per", "datapath"},
                   {"idle_timeout_ns", snap.cache.idle_timeout_ns},
                   {"coalescing", snap.coalescing},
                   {"datapaths", snap.datapaths}}},
                 {"counters", counters},
                 {"resolved",
                  {{"xdp", xdp},
                   {"xdp_emc", st.xdp_emc_resolved},
                   {"xdp_megaflow", st.xdp_megaflow_resolved},
                   {"hint", st.xdp_hint_resolved},
                   {"software", st.xdp_emc_resolved + st.xdp_megaflow_resolved + userspace +
                                    st.upcalls},
                   {"xdp_percent_of_rx",
                    st.rx_packets ? 100.0 * static_cast<double>(xdp) / st.rx_packets : 0.0},
                   {"userspace", userspace},
                   {"userspace_emc", st.emc_hits},
                   {"userspace_megaflow", st.megaflow_hits},
                   {"upcalls", st.upcalls}}},
                 {"drops", drops},
                 {"total_drops", st.total_drops()},
                 {"xdp", xdp_counters},
                 {"daemon", facts}};
  if (auto it = facts.find("pmd_threads"); it != facts.end()) result["pmd_threads"] = *it;
  if (auto it = facts.find("xdp_lookup"); it != facts.end()) result["xdp_lookup"] = *it;
  if (!profile.is_null()) result["profile"] = std::move(profile);
  return Response::success(std::move(out), std::move(result));
}

// ---- trace ------------------------------------------------------------------------

Response trace(Controller& c, const Request& r) {
  auto parsed = parse_flow_line(joined(r.args), c.parse_options(/*match_only=*/true));
  if (!parsed) return Response::failure(parsed.status());
  if (parsed->has_actions || parsed->has_table || parsed->has_priority)
    return fail(
        "trace takes a packet (fields such as in_port=1,tcp,nw_dst=10.0.0.2), not table=, "
        "priority= or actions=");
  TraceOptions options;
  options.metadata = r.options.metadata;
  TraceResult t = trace_flow(c.sw(), parsed->rule.match.value, options);
  return Response::success(std::move(t.text), std::move(t.json));
}

// ---- services ---------------------------------------------------------------------

// Calls fn(id, name, service) for every service instance of the switch.
template <typename Fn>
void for_each_service(Switch& sw, Fn&& fn) {
  const ServiceRegistry& registry = ServiceRegistry::instance();
  const size_t n = registry.names().size();
  for (size_t i = 1; i <= n; ++i) {
    const auto id = static_cast<uint8_t>(i);
    fn(id, std::string(registry.name_of(id)), sw.services().get(id));
  }
}

Response list_services(Controller& c, const Request&) {
  Switch& sw = c.sw();
  return sw.exclusive([&] {
    std::string out;
    Json result = Json::array();
    for_each_service(sw, [&](uint8_t id, const std::string& name, Service* service) {
      const std::string description(ServiceRegistry::instance().description(id));
      const Json stats = service ? service->stats() : Json::object();
      out += fmt::format("{} {}: {}\n", id, name, description);
      if (!stats.empty()) out += "    stats: " + json_text(stats) + "\n";
      result.push_back(
          {{"id", id}, {"name", name}, {"description", description}, {"stats", stats}});
    });
    return Response::success(std::move(out), std::move(result));
  });
}

Status no_connection_tracking() {
  return Status::error("no service in this switch tracks connections", EOPNOTSUPP);
}

// One connection in the shape of `ovs-appctl dpctl/dump-conntrack`:
//   tcp,orig=(src=A,dst=B,sport=P,dport=Q),reply=(src=B,dst=A,sport=Q,dport=P),
//   state=ESTABLISHED,timeout=86399,packets=3/2,bytes=180/120
// for a service's JSON object with proto/src/dst/sport/dport (or id), state,
// timeout_s and orig/reply counters; anything else is printed as it is.
std::string connection_text(const Json& conn) {
  if (!conn.is_object() || !conn.contains("proto") || !conn.contains("src") || !conn.contains("dst"))
    return json_text(conn);
  auto tuple = [&](const char* src, const char* dst, const char* sport, const char* dport) {
    std::string t = fmt::format("src={},dst={}", json_text(conn[src]), json_text(conn[dst]));
    if (conn.contains("sport") && conn.contains("dport"))
      t += fmt::format(",sport={},dport={}", json_text(conn[sport]), json_text(conn[dport]));
    if (conn.contains("id")) t += fmt::format(",id={}", json_text(conn["id"]));
    return t;
  };
  std::string out = fmt::format("{},orig=({}),reply=({})", json_text(conn["proto"]),
                                tuple("src", "dst", "sport", "dport"), tuple("dst", "src", "dport", "sport"));
  if (conn.contains("state")) out += ",state=" + json_text(conn["state"]);
  if (conn.contains("timeout_s")) out += ",timeout=" + json_text(conn["timeout_s"]);
  auto counter = [&](const char* name) -> std::string {
    const Json o = conn.value("orig", Json::object()), r = conn.value("reply", Json::object());
    if (!o.contains(name) || !r.contains(name)) return "";
    return fmt::format(",{}={}/{}", name, json_text(o[name]), json_text(r[name]));
  };
  out += counter("packets") + counter("bytes");
  return out;
}

Response ct_dump(Controller& c, const Request&) {
  Switch& sw = c.sw();
  return sw.exclusive([&] {
    Json result = Json::object();
    for_each_service(sw, [&](uint8_t, const std::string& name, Service* service) {
      if (service == nullptr) return;
      if (std::optional<Json> table = service->dump_connections()) result[name] = *table;
    });
    if (result.empty()) return Response::failure(no_connection_tracking());
    // One connection per line; the service's name first when several track.
    std::string out;
    for (const auto& [name, table] : result.items()) {
      const std::string prefix = result.size() > 1 ? name + ": " : "";
      if (table.is_array()) {
        for (const Json& conn : table) out += prefix + connection_text(conn) + "\n";
      } else {
        out += prefix + json_text(table) + "\n";
      }
    }
    return Response::success(std::move(out), std::move(result));
  });
}

Response ct_flush(Controller& c, const Request&) {
  Switch& sw = c.sw();
  return sw.exclusive([&] {
    Json per_service = Json::object();
    size_t total = 0;
    for_each_service(sw, [&](uint8_t, const std::string& name, Service* service) {
      if (service == nullptr) return;
      if (std::optional<size_t> n = service->flush_connections()) {
        per_service[name] = *n;
        total += *n;
      }
    });
    if (per_service.empty()) return Response::failure(no_connection_tracking());
    return Response::success(fmt::format("flushed {} connection{}\n", total, total == 1 ? "" : "s"),
                             {{"flushed", total}, {"services", per_service}});
  });
}

// One TCAM entry per line, by index: the NIC's match (TCAM fields only),
// its mark and hits, and the megaflow it stands for.
Response offload_show(Controller& c, const Request&) {
  const Json facts = c.offload_facts();
  if (!facts.is_object())
    return Response::failure(
        Status::error("offload is off (start softflowd with --offload tcam[:ENTRIES])"));
  const Json& entries = facts["entries"];
  std::string out = fmt::format("tcam: {} of {} entries", entries.size(),
                                facts["capacity"].get<uint64_t>());
  if (facts.contains("stats") && facts["stats"].is_object())
    out += ", " + fields_text(facts["stats"], {{"installs", "installs"},
                                                {"evictions", "evictions"},
                                                {"removals", "removals"},
                                                {"refused", "refused"},
                                                {"conflicts", "conflicts"}});
  out += "\n";
  if (facts.contains("nic") && facts["nic"].is_object())
    out += "nic: " + fields_text(facts["nic"], {}) + "\n";
  for (const Json& e : entries)
    out += fmt::format(" index={} mark=0x{:08x} hits={} recent={} datapath={} megaflow={}{}: {}{}\n",
                       e["index"].get<uint64_t>(), e["mark"].get<uint64_t>(),
                       e["hits"].get<uint64_t>(), e["recent"].get<uint64_t>(),
                       e["datapath"].get<uint64_t>(), e["megaflow_id"].get<uint64_t>(),
                       e["partial"].get<bool>() ? " partial" : "", e["match"].get<std::string>(),
                       e["partial"].get<bool>()
                           ? " (megaflow: " + e["megaflow_match"].get<std::string>() + ")"
                           : "");
  return Response::success(std::move(out), facts);
}

// ---- the table --------------------------------------------------------------------

constexpr CommandSpec kCommands[] = {
    {"add-flow", "FLOW", "add a flow; one with the same table, priority and match is replaced", 1,
     kAnyArgs, false, add_flow},
    {"add-flows", "FILE",
     "add the flows in FILE ('-': stdin), one per line, '#' comments; all or none", 1, 1, true,
     add_flows},
    {"del-flows", "[MATCH]",
     "delete the flows MATCH covers (every flow without MATCH); with --strict, the flow whose "
     "match and priority equal MATCH's",
     0, kAnyArgs, false, del_flows},
    {"mod-flows", "MATCH,actions=ACTIONS",
     "replace the actions of the flows MATCH covers (--strict as for del-flows)", 1, kAnyArgs,
     false, mod_flows},
    {"dump-flows", "[table=N] [MATCH]",
     "print the flows (that MATCH covers) with their counters, in add-flows syntax", 0, kAnyArgs,
     false, dump_flows},
    {"dump-megaflows", "", "print the datapaths' megaflows with their counters and actions", 0, 0,
     false, dump_megaflows},
    {"show", "", "ports, megaflow cache, and packet counters by path and drop reason", 0, 0, false,
     show},
    {"trace", "FLOW",
     "walk a packet described as a match (in_port=1,tcp,nw_dst=10.0.0.2,tp_dst=80; other fields "
     "zero) through the pipeline stage by stage; --metadata STAGE=VALUE: the sf_metadata stage "
     "STAGE sees",
     1, kAnyArgs, false, trace},
    {"list-services", "", "the registered services and their counters", 0, 0, false, list_services},
    {"ct-dump", "", "print the connections that services track", 0, 0, false, ct_dump},
    {"ct-flush", "", "forget every tracked connection", 0, 0, false, ct_flush},
    {"offload-show", "",
     "the emulated NIC TCAM's entries (softflowd --offload) with their marks and hits", 0, 0,
     false, offload_show},
};

}  // namespace

std::span<const CommandSpec> control_commands() { return kCommands; }

const CommandSpec* find_command(std::string_view name) {
  for (const CommandSpec& spec : kCommands)
    if (spec.name == name) return &spec;
  return nullptr;
}

Status check_arguments(const CommandSpec& spec, size_t n_args) {
  if (n_args >= spec.min_args && n_args <= spec.max_args) return Status::ok();
  if (spec.max_args == 0)
    return Status::error(fmt::format("{} takes no arguments (got {})", spec.name, n_args));
  if (n_args < spec.min_args && spec.max_args == kAnyArgs)
    return Status::error(fmt::format("{}: missing {}", spec.name, spec.synopsis));
  return Status::error(fmt::format("{}: expected {} argument{} ({}), got {}", spec.name,
                                   spec.max_args, spec.max_args == 1 ? "" : "s", spec.synopsis,
                                   n_args));
}

// ---- Controller -------------------------------------------------------------------

Controller::Controller(Switch& sw, DaemonHooks hooks) : sw_(sw), hooks_(std::move(hooks)) {}

uint64_t Controller::now_ns() const {
  if (hooks_.now_ns) return hooks_.now_ns();
  return static_cast<uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count());
}

nlohmann::json Controller::daemon_facts() const {
  if (!hooks_.show) return Json::object();
  Json facts = hooks_.show();
  return facts.is_object() ? facts : Json::object();
}

nlohmann::json Controller::offload_facts() const {
  if (!hooks_.offload) return nullptr;
  return hooks_.offload();
}

namespace {

// The switch's ports as the daemon reports them.
struct DaemonPorts {
  bool known = false;  // the daemon listed its ports
  std::map<std::string, uint32_t, std::less<>> by_name;
  std::set<uint32_t> ofports;
};

DaemonPorts daemon_ports(const Json& facts) {
  DaemonPorts out;
  auto ports = facts.find("ports");
  if (ports == facts.end() || !ports->is_array()) return out;
  out.known = true;
  for (const Json& p : *ports) {
    if (!p.is_object()) continue;
    auto ofport = p.find("ofport");
    if (ofport == p.end() || !ofport->is_number_integer()) continue;
    const int64_t number = ofport->get<int64_t>();
    if (number < 0 || number > UINT32_MAX) continue;
    out.ofports.insert(static_cast<uint32_t>(number));
    if (auto name = p.find("name"); name != p.end() && name->is_string())
      out.by_name[name->get<std::string>()] = static_cast<uint32_t>(number);
  }
  return out;
}

// As softflowd checks its flows file at start: a rule for a port the switch
// does not have is almost always a typo, better refused than counted as
// no_such_port drops.
Status check_rule_ports(const FlowRule& rule, const DaemonPorts& ports) {
  if (!ports.known) return Status::ok();
  if (rule.match.mask.in_port != 0 && !ports.ofports.count(rule.match.value.in_port))
    return Status::error(
        fmt::format("in_port={} is not a port of this switch", rule.match.value.in_port));
  for (const Action& a : rule.actions)
    if (a.type == ActionType::kOutput && !ports.ofports.count(a.port))
      return Status::error(fmt::format("output:{} is not a port of this switch", a.port));
  return Status::ok();
}

}  // namespace

FlowParseOptions Controller::parse_options(bool match_only) const {
  FlowParseOptions opts;
  opts.match_only = match_only;
  if (!hooks_.show) return opts;
  // The daemon is asked only when a port name or a rule is to be checked,
  // and then once for the request.
  auto cache = std::make_shared<std::optional<DaemonPorts>>();
  auto ports = [this, cache]() -> const DaemonPorts& {
    if (!*cache) *cache = daemon_ports(daemon_facts());
    return **cache;
  };
  opts.port_by_name = [ports](std::string_view name) -> std::optional<uint32_t> {
    const DaemonPorts& p = ports();
    auto it = p.by_name.find(name);
    if (it == p.by_name.end()) return std::nullopt;
    return it->second;
  };
  opts.check_rule = [ports](const FlowRule& rule) { return check_rule_ports(rule, ports()); };
  return opts;
}

Response Controller::handle(const Request& request) {
  const CommandSpec* spec = find_command(request.command);
  if (spec == nullptr)
    return fail(
        fmt::format("unknown command '{}' (sfctl --help lists the commands)", request.command));
  if (Status s = check_arguments(*spec, request.args.size()); !s) return Response::failure(s);
  Response response;
  try {
    response = spec->handler(*this, request);
  } catch (const std::exception& e) {
    // Control plane only (a hook's JSON of an unexpected type, bad_alloc):
    // report it rather than take the daemon down.
    return fail(fmt::format("{}: internal error: {}", request.command, e.what()), EIO);
  }
  // Send only what the client will print.
  if (response.ok()) {
    if (request.options.json)
      response.output.clear();
    else
      response.result = nullptr;
  }
  return response;
}

}  // namespace softflow
